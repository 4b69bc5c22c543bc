"""Convergence speed: when a validation curve first reaches a fixed target.

The same rule is applied to every optimizer. The target is the reference
optimizer's final validation metric, averaged over seeds (Adam's final
validation accuracy for the CNN, its final validation loss for MinGPT). For
each optimizer, on its seed-averaged validation curve:

* ``first_eval`` is the first evaluation point (epoch or iteration) at which
  the curve is at least as good as the target;
* ``crossing`` refines it by linear interpolation between that evaluation and
  the one before it (the point where the straight line between them meets
  the target); if the first evaluation already reaches it, ``crossing`` is
  that evaluation's x and only an upper bound (``censored``): the CNN is
  first evaluated after one epoch.

EXAdam's speed-up over another optimizer ``o`` is
:math:`1 - t_\\text{EXAdam} / t_o`, with ``t`` the crossing points: 0.48
means EXAdam needs 48% fewer epochs (or iterations) to reach the target.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Reach:
  """When a curve first reaches a target.

  Attributes:
    first_eval: The first evaluation point at or beyond the target, or None
      if the curve never reaches it.
    crossing: The interpolated crossing point, or None.
    censored: Whether the first evaluation already reached the target, so
      that ``crossing`` is only an upper bound.
  """

  first_eval: float | None
  crossing: float | None
  censored: bool = False


def first_reach(
  x: np.ndarray, y: np.ndarray, target: float, *, higher_is_better: bool
) -> Reach:
  """Finds where the curve ``y(x)`` first reaches ``target``.

  Args:
    x: Evaluation points, ascending.
    y: The metric at each point (NaN never reaches the target).
    target: The level to reach.
    higher_is_better: True for accuracies (reach means ``y >= target``),
      False for losses (``y <= target``).

  Returns:
    The first evaluation point reaching the target and the interpolated
    crossing; both None if no point reaches it.

  Raises:
    ValueError: If ``x`` and ``y`` differ in length or ``x`` is not
      strictly ascending.
  """
  x = np.asarray(x, dtype=np.float64)
  y = np.asarray(y, dtype=np.float64)
  if x.shape != y.shape or x.ndim != 1:
    raise ValueError(
      f"x and y must be 1-D of equal length, got {x.shape} and {y.shape}."
    )
  if np.any(np.diff(x) <= 0):
    raise ValueError("x must be strictly ascending.")
  signed = y if higher_is_better else -y
  level = target if higher_is_better else -target
  reached = np.flatnonzero(signed >= level)
  if reached.size == 0 or math.isnan(target):
    return Reach(None, None)
  index = int(reached[0])
  if index == 0:
    return Reach(float(x[0]), float(x[0]), censored=True)
  before, after = signed[index - 1], signed[index]
  fraction = (level - before) / (after - before) if after != before else 1.0
  crossing = x[index - 1] + fraction * (x[index] - x[index - 1])
  return Reach(float(x[index]), float(crossing))


def speedup_bound(focus: Reach, other: Reach) -> str:
  """How the focus arm's speed-up over ``other`` relates to its estimate.

  Returns:
    ``"="`` if both crossings are interpolated; ``">="`` if only the focus
    arm's is an upper bound (it was faster than estimated); ``"<="`` if only
    the other's is; ``"?"`` if both are (the estimate says nothing).
  """
  return {
    (False, False): "=",
    (True, False): ">=",
    (False, True): "<=",
    (True, True): "?",
  }[(focus.censored, other.censored)]


def speedup(fast: float | None, slow: float | None) -> float | None:
  """``1 - fast / slow``: the fraction of ``slow``'s time that ``fast`` saves.

  Returns:
    None if either time is missing or ``slow`` is not positive.
  """
  if fast is None or slow is None or slow <= 0:
    return None
  return 1.0 - fast / slow
