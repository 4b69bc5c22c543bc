"""The CNN's training :class:`Config` (the paper's section 3.1) and presets."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from examples.cifar10.model import CNNConfig
from examples.common import config as config_lib


@dataclasses.dataclass(frozen=True)
class Config(config_lib.RunConfig):
  """Settings of a CIFAR-10 training run."""

  model: CNNConfig = dataclasses.field(default_factory=CNNConfig)
  """The network: widths, dense layer, dropout, variant."""
  batch_size: int = 128
  """Global batch size of training and evaluation.
  A multiple of the number of devices."""
  epochs: int = 100
  """Training epochs."""
  val_size: int = 10_000
  """Training images held out for validation, from the end."""
  max_train_images: int | None = None
  """Train on at most the first N of the other training images.
  None: all, the paper's 40,000."""
  augment: bool = True
  """Randomly flip and warp the training images."""
  plateau_factor: float = 0.1
  """ReduceLROnPlateau: factor of each reduction."""
  plateau_patience: int = 5
  """ReduceLROnPlateau: epochs without improvement before a reduction."""
  checkpoint_every: int = 1
  """Epochs between checkpoints (one is also written at the end)."""

  RESUMABLE: ClassVar[frozenset[str]] = config_lib.RunConfig.RESUMABLE | {
    "epochs",
    "checkpoint_every",
  }

  def __post_init__(self) -> None:
    super().__post_init__()
    for name in ("batch_size", "epochs", "val_size", "checkpoint_every"):
      config_lib.check_positive(name, getattr(self, name))
    if self.max_train_images is not None:
      config_lib.check_positive("max_train_images", self.max_train_images)
    if not 0.0 < self.plateau_factor < 1.0:
      raise ValueError(
        f"plateau_factor must lie in (0, 1), got {self.plateau_factor!r}."
      )
    if self.plateau_patience < 0:
      raise ValueError(
        f"plateau_patience must be >= 0, got {self.plateau_patience!r}."
      )


PRESETS: dict[str, Config] = {
  "paper": Config(),
  "tiny": Config(
    preset="tiny",
    model=CNNConfig(widths=(8, 16, 32), dense_features=32),
    lr=1e-4,
    batch_size=32,  # with augment=False: 4 epochs at 128 are too unstable
    epochs=4,
    max_train_images=4096,
    augment=False,
  ),
}
"""``paper``: the paper's protocol; ``tiny``: a small network on a tenth of the
images, quick on a CPU. The benchmarks add theirs in
:mod:`benchmarks.reproduce.presets`."""
