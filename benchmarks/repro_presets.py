"""Protocols, optimizer line-ups and the paper's numbers for the reproduction.

A *preset* fixes the two experiments' protocols: ``paper`` is the EXAdam
paper's (for an accelerator), ``cpu`` a reduced version of the same protocol
that runs every optimizer of both experiments on two CPU cores in about
twenty minutes, and ``smoke`` a seconds-long version for tests and dry runs.

The paper's numbers are transcribed from its Tables 1 to 3 (see
``/work/shared/paper/EXPERIMENTS.md``); the paper ran one seed per optimizer.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from examples.cifar10 import model as cnn_model_lib
from examples.common import optimizers

CNN = "cnn"
"""Name of experiment 1, the CIFAR-10 CNN."""
GPT = "gpt"
"""Name of experiment 2, MinGPT on tiny Shakespeare."""
EXPERIMENTS = (CNN, GPT)

CNN_OPTIMIZERS = ("exadam", "adam", "adamw", "adadelta", "rmsprop", "sgd")
"""Experiment 1's optimizers (paper section 3.1)."""
GPT_OPTIMIZERS = (
  "exadam",
  "adam",
  "adamw",
  "adafactor",
  "sgd",
  "ademamix",
  "signum",
)
"""Experiment 2's optimizers (paper section 3.2)."""
OPTIMIZERS_BY_EXPERIMENT = {CNN: CNN_OPTIMIZERS, GPT: GPT_OPTIMIZERS}

REFERENCE_OPTIMIZER = "adam"
"""The optimizer whose final validation metric sets the convergence target."""

DISPLAY_NAMES = {
  "exadam": "EXAdam",
  "adam": "Adam",
  "adamw": "AdamW",
  "adadelta": "AdaDelta",
  "rmsprop": "RMSProp",
  "sgd": "SGD with momentum",
  "adafactor": "AdaFactor",
  "ademamix": "AdEMAMix",
  "signum": "Signum",
}
"""Names as the paper's tables print them."""


@dataclasses.dataclass(frozen=True)
class CNNProtocol:
  """How experiment 1 trains and evaluates each run.

  Attributes:
    widths: Filters of each convolutional block.
    dense_features: Width of the dense hidden layer.
    variant: ``"paper"`` or ``"notebook"`` architecture.
    train_size: Training images used, from the start of the 40,000; None
      takes all.
    val_size: Validation images used, from the start of the 10,000; None
      takes all.
    test_size: Test images used, from the start of the 10,000; None takes
      all.
    batch_size: Batch size of training and evaluation.
    epochs: Training epochs.
    learning_rate: Initial learning rate of every optimizer.
    plateau_factor: ``ReduceLROnPlateau`` factor on the validation loss.
    plateau_patience: ``ReduceLROnPlateau`` patience, in epochs.
    augment: Whether training images are flipped and warped.
  """

  widths: tuple[int, ...] = (64, 128, 256)
  dense_features: int = 128
  variant: str = "paper"
  train_size: int | None = None
  val_size: int | None = None
  test_size: int | None = None
  batch_size: int = 128
  epochs: int = 100
  learning_rate: float = 1e-4
  plateau_factor: float = 0.1
  plateau_patience: int = 5
  augment: bool = True

  def model_config(self) -> cnn_model_lib.CNNConfig:
    """The network's configuration."""
    return cnn_model_lib.CNNConfig(
      widths=self.widths,
      dense_features=self.dense_features,
      variant=self.variant,
    )


@dataclasses.dataclass(frozen=True)
class GPTProtocol:
  """How experiment 2 trains and evaluates each run.

  Attributes:
    block_size: Context length (and window length of the batches).
    n_embd: Embedding width.
    n_head: Attention heads.
    n_layer: Transformer blocks.
    dropout_rate: Dropout probability.
    batch_size: Windows per batch.
    iters: Training iterations.
    eval_interval: Iterations between evaluations (one also precedes
      training).
    eval_iters: Random batches per split in each evaluation.
    learning_rate: Learning rate of every optimizer (Adafactor: multiplier of
      its relative step, see :mod:`examples.common.optimizers`).
  """

  block_size: int = 256
  n_embd: int = 384
  n_head: int = 8
  n_layer: int = 8
  dropout_rate: float = 0.2
  batch_size: int = 64
  iters: int = 5000
  eval_interval: int = 500
  eval_iters: int = 200
  learning_rate: float = 1e-4

  def model_kwargs(self) -> dict[str, Any]:
    """Keyword arguments of :class:`examples.mingpt.model.GPTConfig`."""
    return dict(
      block_size=self.block_size,
      n_embd=self.n_embd,
      n_head=self.n_head,
      n_layer=self.n_layer,
      dropout_rate=self.dropout_rate,
    )


def log_grid(low_exponent: float, high_exponent: float) -> tuple[float, ...]:
  """Learning rates ``10**e`` for ``e`` from low to high in half-decades.

  Args:
    low_exponent: Exponent of the smallest rate.
    high_exponent: Exponent of the largest rate.

  Returns:
    The rates, ascending, rounded to 3 significant digits.

  Raises:
    ValueError: If the exponents are not ascending multiples of 0.5.
  """
  if (
    high_exponent < low_exponent
    or (2 * low_exponent) % 1
    or (2 * high_exponent) % 1
  ):
    raise ValueError(
      "log_grid needs ascending exponents that are multiples of 0.5, got "
      f"{low_exponent} and {high_exponent}."
    )
  count = round(2 * (high_exponent - low_exponent)) + 1
  return tuple(
    float(f"{10.0**exponent:.3g}")
    for exponent in np.linspace(low_exponent, high_exponent, count)
  )


@dataclasses.dataclass(frozen=True)
class SweepGrid:
  """Learning rates tried per optimizer in ``--mode sweep``.

  Attributes:
    default: The grid of every optimizer not in ``overrides``.
    overrides: Per-optimizer grids: AdaDelta's PyTorch default rate is 1.0,
      so its grid reaches higher; Adafactor's "rate" is a multiplier of its
      relative step (1 is torch_optimizer's behaviour), so its grid is
      centred on 1.
  """

  default: tuple[float, ...]
  overrides: tuple[tuple[str, tuple[float, ...]], ...] = ()

  def for_optimizer(self, name: str) -> tuple[float, ...]:
    """The grid of optimizer ``name``."""
    return dict(self.overrides).get(name, self.default)


@dataclasses.dataclass(frozen=True)
class Preset:
  """A complete setting of both experiments.

  Attributes:
    name: Key in :data:`PRESETS`.
    description: One line on what it is for.
    cnn: Experiment 1's protocol.
    gpt: Experiment 2's protocol.
    sweep: Learning-rate grids of ``--mode sweep``.
  """

  name: str
  description: str
  cnn: CNNProtocol
  gpt: GPTProtocol
  sweep: SweepGrid

  def protocol(self, experiment: str) -> CNNProtocol | GPTProtocol:
    """The protocol of ``experiment`` (``"cnn"`` or ``"gpt"``)."""
    return {CNN: self.cnn, GPT: self.gpt}[experiment]


PRESETS: dict[str, Preset] = {
  "paper": Preset(
    name="paper",
    description="The paper's protocol at full size (for an accelerator).",
    cnn=CNNProtocol(),
    gpt=GPTProtocol(),
    sweep=SweepGrid(
      default=log_grid(-5, -1),
      overrides=(("adadelta", log_grid(-3, 1)), ("adafactor", log_grid(-1, 1))),
    ),
  ),
  "cpu": Preset(
    name="cpu",
    description=(
      "The paper's protocol scaled down for two CPU cores: tiny models, "
      "data subsets, short training, smaller evaluations."
    ),
    cnn=CNNProtocol(
      widths=(8, 16, 32),
      dense_features=32,
      train_size=2048,
      val_size=1000,
      test_size=2000,
      batch_size=32,
      epochs=8,
      plateau_patience=2,
    ),
    gpt=GPTProtocol(
      block_size=64,
      n_embd=64,
      n_head=4,
      n_layer=2,
      batch_size=32,
      iters=400,
      eval_interval=50,
      eval_iters=10,
    ),
    sweep=SweepGrid(
      default=log_grid(-5, -1)[::2],
      overrides=(
        ("adadelta", log_grid(-3, 1)[::2]),
        ("adafactor", log_grid(-1, 1)[::2]),
      ),
    ),
  ),
  "smoke": Preset(
    name="smoke",
    description="Seconds-long runs that exercise every code path (tests).",
    cnn=CNNProtocol(
      widths=(4,),
      dense_features=8,
      train_size=64,
      val_size=32,
      test_size=32,
      batch_size=16,
      epochs=2,
      plateau_patience=0,
    ),
    gpt=GPTProtocol(
      block_size=16,
      n_embd=16,
      n_head=2,
      n_layer=1,
      batch_size=8,
      iters=4,
      eval_interval=2,
      eval_iters=2,
    ),
    sweep=SweepGrid(default=(1e-3, 1e-2)),
  ),
}
"""The presets, by ``--preset`` name."""


@dataclasses.dataclass(frozen=True)
class Arm:
  """One optimizer configuration compared in an experiment.

  Runs of the same arm (other seeds or learning rates) share one compiled
  program.

  Attributes:
    label: Name in tables, plots and records (e.g. ``"exadam"`` or
      ``"exadam-no-gradient-acceleration"``).
    optimizer: A name of :data:`examples.common.optimizers.OPTIMIZER_NAMES`.
    switches: EXAdam's components (all on for other optimizers).
  """

  label: str
  optimizer: str
  switches: optimizers.ExAdamSwitches = dataclasses.field(
    default_factory=optimizers.ExAdamSwitches
  )

  def __post_init__(self) -> None:
    if self.optimizer not in optimizers.OPTIMIZERS:
      raise ValueError(
        f"Unknown optimizer {self.optimizer!r}; choose one of "
        f"{', '.join(optimizers.OPTIMIZER_NAMES)}."
      )


def comparison_arms(names: tuple[str, ...]) -> tuple[Arm, ...]:
  """One arm per optimizer, with its PyTorch defaults."""
  return tuple(Arm(name, name) for name in names)


ABLATION_ARMS: tuple[Arm, ...] = (
  Arm("exadam", "exadam"),
  Arm(
    "exadam-no-cross-moment-debiasing",
    "exadam",
    optimizers.ExAdamSwitches(cross_moment_debiasing=False),
  ),
  Arm(
    "exadam-no-gradient-acceleration",
    "exadam",
    optimizers.ExAdamSwitches(gradient_acceleration=False),
  ),
  Arm(
    "exadam-no-dynamic-step-size",
    "exadam",
    optimizers.ExAdamSwitches(dynamic_step_size=False),
  ),
  Arm(
    "exadam-all-off",
    "exadam",
    optimizers.ExAdamSwitches(False, False, False),
  ),
)
"""EXAdam with all components, each one switched off in turn, and none
(which is Adam with PyTorch's epsilon placement)."""

ABLATION_REFERENCE = "exadam-all-off"
"""The ablation arm whose final validation metric sets the target."""


def display_name(label: str) -> str:
  """The paper's name of an optimizer, or the arm label itself."""
  return DISPLAY_NAMES.get(label, label)


PAPER_CNN_FINAL: dict[str, dict[str, float]] = {
  "adam": {"train_acc": 93.12, "val_acc": 86.85, "test_acc": 89.66},
  "adamw": {"train_acc": 93.83, "val_acc": 87.47, "test_acc": 89.71},
  "adadelta": {"train_acc": 40.17, "val_acc": 35.01, "test_acc": 37.45},
  "rmsprop": {"train_acc": 95.58, "val_acc": 88.33, "test_acc": 90.14},
  "sgd": {"train_acc": 54.67, "val_acc": 37.45, "test_acc": 43.13},
  "exadam": {"train_acc": 97.72, "val_acc": 90.98, "test_acc": 92.10},
}
"""Tables 1 and 2 at epoch 100: accuracies in percent."""

PAPER_CNN_CURVES: dict[str, dict[int, tuple[float, float]]] = {
  "adam": {
    1: (39.85, 40.84),
    5: (69.58, 64.50),
    10: (77.89, 75.62),
    25: (86.07, 83.53),
    50: (92.91, 86.90),
    75: (92.77, 86.96),
    100: (93.12, 86.85),
  },
  "adamw": {
    1: (38.96, 44.93),
    5: (69.39, 67.28),
    10: (78.07, 77.41),
    25: (86.59, 82.19),
    50: (93.51, 87.43),
    75: (93.66, 87.55),
    100: (93.83, 87.47),
  },
  "adadelta": {
    1: (10.64, 12.26),
    5: (15.42, 15.23),
    10: (18.74, 16.86),
    25: (25.73, 22.46),
    50: (33.15, 28.30),
    75: (36.82, 33.26),
    100: (40.17, 35.01),
  },
  "rmsprop": {
    1: (41.55, 46.77),
    5: (70.04, 65.11),
    10: (77.73, 74.68),
    25: (86.43, 81.30),
    50: (91.83, 85.94),
    75: (95.74, 88.38),
    100: (95.58, 88.33),
  },
  "sgd": {
    1: (18.61, 20.52),
    5: (40.93, 35.40),
    10: (47.98, 40.80),
    25: (54.66, 37.42),
    50: (54.58, 38.12),
    75: (54.69, 37.71),
    100: (54.67, 37.45),
  },
  "exadam": {
    1: (39.87, 45.33),
    5: (75.53, 64.54),
    10: (82.73, 79.08),
    25: (90.45, 86.80),
    50: (97.18, 90.86),
    75: (97.73, 91.00),
    100: (97.72, 90.98),
  },
}
"""Table 1: (train accuracy, validation accuracy) in percent by epoch."""

PAPER_GPT_CURVES: dict[str, dict[int, tuple[float, float]]] = {
  "adam": {
    1: (4.405, math.nan),
    500: (2.396, 2.421),
    1000: (2.058, 2.115),
    2000: (1.675, 1.833),
    3000: (1.497, 1.693),
    4000: (1.395, 1.619),
    5000: (1.322, 1.567),
  },
  "adamw": {
    1: (4.404, math.nan),
    500: (2.397, 2.417),
    1000: (2.058, 2.115),
    2000: (1.670, 1.837),
    3000: (1.497, 1.693),
    4000: (1.392, 1.612),
    5000: (1.324, 1.560),
  },
  "adafactor": {
    1: (4.380, math.nan),
    500: (2.046, 2.138),
    1000: (1.570, 1.764),
    2000: (1.263, 1.541),
    3000: (1.102, 1.521),
    4000: (0.960, 1.587),
    5000: (0.813, 1.682),
  },
  "signum": {
    1: (4.300, math.nan),
    500: (1.887, 2.000),
    1000: (1.516, 1.714),
    2000: (1.278, 1.546),
    3000: (1.158, 1.496),
    4000: (1.064, 1.501),
    5000: (0.972, 1.530),
  },
  "sgd": {
    1: (4.423, math.nan),
    500: (3.229, 3.271),
    1000: (3.070, 3.109),
    2000: (2.923, 2.958),
    3000: (2.839, 2.867),
    4000: (2.783, 2.806),
    5000: (2.744, 2.766),
  },
  "ademamix": {
    1: (4.318, math.nan),
    500: (2.388, 2.413),
    1000: (2.036, 2.103),
    2000: (1.647, 1.826),
    3000: (1.469, 1.666),
    4000: (1.362, 1.589),
    5000: (1.287, 1.545),
  },
  "exadam": {
    1: (4.335, math.nan),
    500: (1.912, 2.010),
    1000: (1.443, 1.658),
    2000: (1.150, 1.497),
    3000: (0.973, 1.526),
    4000: (0.785, 1.632),
    5000: (0.611, 1.794),
  },
}
"""Table 3: (train loss, validation loss) by iteration (no validation loss
is reported at iteration 1)."""

PAPER_SPEEDUP_PERCENT = {"adam": 48.07, "adamw": 46.28}
"""The paper's "faster convergence" of EXAdam over Adam and AdamW (CIFAR-10)."""
