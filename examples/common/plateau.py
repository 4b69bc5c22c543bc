"""PyTorch's ``ReduceLROnPlateau``, step for step, with a JSON-able state."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal


@dataclasses.dataclass
class ReduceLROnPlateau:
  """Lowers a learning rate when a metric stops improving.

  An epoch is *bad* unless its metric beats the best by the threshold
  (:meth:`is_better`, relative or absolute). After more than ``patience`` bad
  epochs in a row the rate becomes ``max(lr * factor, min_lr)``, unless that
  changes it by at most ``eps``; then ``cooldown`` epochs pass before bad
  epochs count again. ``mode="min"``: lower is better. Defaults are PyTorch's,
  but ``patience`` is 5, as in the paper's CIFAR-10 runs (PyTorch: 10).
  ``last_epoch`` counts :meth:`step` calls; bad settings raise ``ValueError``.
  """

  learning_rate: float
  mode: Literal["min", "max"] = "min"
  factor: float = 0.1
  patience: int = 5
  threshold: float = 1e-4
  threshold_mode: Literal["rel", "abs"] = "rel"
  cooldown: int = 0
  min_lr: float = 0.0
  eps: float = 1e-8
  best: float = dataclasses.field(default=math.nan)
  num_bad_epochs: int = 0
  cooldown_counter: int = 0
  last_epoch: int = 0

  def __post_init__(self) -> None:
    if self.mode not in ("min", "max"):
      raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}.")
    if self.threshold_mode not in ("rel", "abs"):
      raise ValueError(
        f"threshold_mode must be 'rel' or 'abs', got {self.threshold_mode!r}."
      )
    if not 0.0 < self.factor < 1.0:
      raise ValueError(
        f"factor must lie in (0, 1) (it multiplies the learning rate), got "
        f"{self.factor!r}."
      )
    if self.patience < 0 or self.cooldown < 0:
      raise ValueError(
        f"patience and cooldown must be >= 0, got {self.patience!r} and "
        f"{self.cooldown!r}."
      )
    if self.min_lr < 0.0 or self.learning_rate < 0.0:
      raise ValueError(
        f"learning_rate and min_lr must be >= 0, got {self.learning_rate!r} "
        f"and {self.min_lr!r}."
      )
    if math.isnan(self.best):
      self.best = math.inf if self.mode == "min" else -math.inf

  def is_better(self, metric: float) -> bool:
    """Whether ``metric`` improves on the best value by the threshold."""
    if self.mode == "min" and self.threshold_mode == "rel":
      return metric < self.best * (1.0 - self.threshold)
    if self.mode == "min":
      return metric < self.best - self.threshold
    if self.threshold_mode == "rel":
      return metric > self.best * (1.0 + self.threshold)
    return metric > self.best + self.threshold

  def step(self, metric: float) -> float:
    """Records one epoch's metric; returns (and stores) the next rate."""
    metric = float(metric)
    self.last_epoch += 1
    if self.is_better(metric):
      self.best = metric
      self.num_bad_epochs = 0
    else:
      self.num_bad_epochs += 1
    if self.cooldown_counter > 0:
      self.cooldown_counter -= 1
      self.num_bad_epochs = 0
    if self.num_bad_epochs > self.patience:
      reduced = max(self.learning_rate * self.factor, self.min_lr)
      if self.learning_rate - reduced > self.eps:
        self.learning_rate = reduced
      self.cooldown_counter = self.cooldown
      self.num_bad_epochs = 0
    return self.learning_rate

  def state_dict(self) -> dict[str, Any]:
    """All settings and state, JSON-able (an infinite ``best`` as a string)."""
    state = dataclasses.asdict(self)
    if math.isinf(self.best):
      state["best"] = "inf" if self.best > 0 else "-inf"
    return state

  @classmethod
  def from_state_dict(cls, state: dict[str, Any]) -> ReduceLROnPlateau:
    """Inverse of :meth:`state_dict`; ValueError on missing/unknown fields."""
    names = {field.name for field in dataclasses.fields(cls)}
    if set(state) != names:
      raise ValueError(
        "Not a ReduceLROnPlateau state: missing "
        f"{sorted(names - set(state))}, unknown {sorted(set(state) - names)}."
      )
    return cls(**{**state, "best": float(state["best"])})
