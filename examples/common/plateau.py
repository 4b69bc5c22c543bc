"""PyTorch's ``ReduceLROnPlateau`` scheduler, as a small serialisable object.

The CIFAR-10 protocol of the EXAdam paper lowers the learning rate tenfold when
the validation loss has not improved for five epochs. This module reproduces
``torch.optim.lr_scheduler.ReduceLROnPlateau`` step for step (its ``mode``,
``threshold_mode``, ``cooldown`` and ``eps`` rules included), with its state in
a JSON-friendly dict so that it can be checkpointed and restored exactly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal


@dataclasses.dataclass
class ReduceLROnPlateau:
  """Lowers a learning rate when a metric stops improving.

  After each :meth:`step` with the epoch's metric, an epoch counts as *bad*
  unless the metric beats the best so far by the threshold: for ``mode="min"``
  and ``threshold_mode="rel"``, unless
  :math:`\\text{metric} < \\text{best}\\,(1 - \\text{threshold})`. After more
  than ``patience`` bad epochs in a row the learning rate becomes
  :math:`\\max(\\text{lr} \\cdot \\text{factor}, \\text{min\\_lr})`, unless
  that changes it by no more than ``eps``; then ``cooldown`` epochs pass
  before bad epochs count again.

  The defaults are PyTorch's except ``patience`` (PyTorch: 10), which is the
  paper's 5.

  Attributes:
    learning_rate: The current learning rate.
    mode: ``"min"`` if lower metrics are better, ``"max"`` otherwise.
    factor: Multiplier of the learning rate on a plateau, in (0, 1).
    patience: Number of bad epochs tolerated before lowering the rate.
    threshold: Smallest improvement that counts.
    threshold_mode: ``"rel"`` (relative to the best) or ``"abs"``.
    cooldown: Epochs to wait after a reduction before counting bad epochs.
    min_lr: Lower bound of the learning rate.
    eps: Reductions smaller than this are skipped.
    best: Best metric seen so far.
    num_bad_epochs: Bad epochs in a row.
    cooldown_counter: Cooldown epochs left.
    last_epoch: Number of :meth:`step` calls so far.

  Raises:
    ValueError: On construction, if a setting is out of range.
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
    """Records one epoch's metric and returns the learning rate to use next.

    Args:
      metric: The epoch's value of the monitored metric (e.g. the validation
        loss).

    Returns:
      The (possibly lowered) learning rate, also stored in
      :attr:`learning_rate`.
    """
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
    """Returns all settings and state as a JSON-serialisable dict.

    Infinite ``best`` values are stored as the strings ``"inf"``/``"-inf"``,
    which strict JSON cannot hold as numbers.
    """
    state = dataclasses.asdict(self)
    if math.isinf(self.best):
      state["best"] = "inf" if self.best > 0 else "-inf"
    return state

  @classmethod
  def from_state_dict(cls, state: dict[str, Any]) -> ReduceLROnPlateau:
    """Rebuilds a scheduler from :meth:`state_dict`'s output.

    Args:
      state: A dict returned by :meth:`state_dict`.

    Returns:
      An equal scheduler.

    Raises:
      ValueError: If the dict lacks a field or has an unknown one.
    """
    names = {field.name for field in dataclasses.fields(cls)}
    if set(state) != names:
      raise ValueError(
        "Not a ReduceLROnPlateau state: missing "
        f"{sorted(names - set(state))}, unknown {sorted(set(state) - names)}."
      )
    return cls(**{**state, "best": float(state["best"])})
