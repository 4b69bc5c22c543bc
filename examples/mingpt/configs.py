"""MinGPT's run settings; the defaults are the paper's (section 3.2)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from examples.common import config as config_lib
from examples.mingpt.model import GPT_PRESETS, GPTConfig


@dataclasses.dataclass(frozen=True)
class Config(config_lib.RunConfig):
  """Settings of a MinGPT training run."""

  model: GPTConfig = dataclasses.field(default_factory=GPTConfig)
  """The model: size, context length and dropout."""
  batch_size: int = 64
  """Global batch size (a multiple of the number of devices)."""
  iters: int = 5000
  """Training iterations."""
  eval_interval: int = 500
  """Iterations between evaluations (one also precedes training)."""
  eval_iters: int = 200
  """Random batches per split in an evaluation."""
  checkpoint_every: int = 500
  """Iterations between checkpoints (one is also written at the end)."""
  sample_tokens: int = 500
  """Characters generated at the end (0: none)."""
  temperature: float = 1.0
  """Sampling temperature."""
  prompt: str | None = None
  """Text the sample continues (None: a newline)."""
  text: str | None = None
  """A UTF-8 text file to train on instead of tiny Shakespeare."""

  RESUMABLE: ClassVar[frozenset[str]] = config_lib.RunConfig.RESUMABLE | {
    "iters",
    "checkpoint_every",
    "sample_tokens",
    "temperature",
    "prompt",
  }

  def __post_init__(self) -> None:
    super().__post_init__()
    positive = "batch_size iters eval_interval eval_iters checkpoint_every"
    for name in positive.split():
      config_lib.check_positive(name, getattr(self, name))
    if self.sample_tokens < 0:
      raise ValueError(f"sample_tokens must be >= 0, got {self.sample_tokens}.")
    if not self.temperature > 0:
      raise ValueError(f"temperature must be > 0, got {self.temperature}.")
    if self.prompt == "":
      raise ValueError("prompt must not be empty; leave it out for a newline.")


PRESETS: dict[str, Config] = {
  "paper": Config(),
  "tiny": Config(
    preset="tiny",
    model=GPT_PRESETS["tiny"],
    lr=5e-4,
    batch_size=32,
    iters=600,
    eval_interval=200,
    eval_iters=20,
    checkpoint_every=200,
    sample_tokens=300,
  ),
}
"""``paper``: the paper's protocol; ``tiny``: a small model for CPU runs."""
