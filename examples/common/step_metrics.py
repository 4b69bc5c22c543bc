"""Per-step training metrics, fetched from the device in batches.

Reading a step's loss on the host waits for that step to finish. To keep the
device busy, a :class:`StepMetrics` only keeps references to the device
scalars each step returns and fetches them all at once when flushed (every few
steps, before an evaluation and before a checkpoint). A flush also checks the
losses: a NaN or infinite loss stops the run with :class:`NonFiniteLossError`,
before any later checkpoint could save the broken state.
"""

from __future__ import annotations

import math

import jax
import numpy as np


class NonFiniteLossError(FloatingPointError):
  """Raised when training produces a NaN or infinite loss or parameter.

  Attributes:
    step: The 1-based number of the step at fault.
    loss: The step's loss, or NaN when the parameters were found broken.
  """

  def __init__(self, step: int, loss: float, *, what: str | None = None):
    self.step = step
    self.loss = loss
    what = what or f"Training loss is {loss}"
    super().__init__(
      f"{what} at step {step}: the run diverged. The last checkpoint, written "
      "before this step, is kept. Lower the learning rate (--lr) and start "
      "again, or resume from that checkpoint with other settings in a new run."
    )


class StepMetrics:
  """Accumulates the device-side metric dicts of consecutive training steps.

  Args:
    first_step: The 1-based number of the next step to be added.
  """

  def __init__(self, first_step: int = 1):
    self._next_step = first_step
    self._pending: list[dict[str, jax.Array]] = []
    self._sums: dict[str, float] = {}
    self._count = 0

  @property
  def num_pending(self) -> int:
    """Steps added since the last flush."""
    return len(self._pending)

  def add(self, metrics: dict[str, jax.Array]) -> None:
    """Records one step's metrics (device scalars, not fetched yet).

    Args:
      metrics: Scalars of the step; must include ``"loss"``.
    """
    self._pending.append(metrics)

  def flush(self) -> dict[str, np.ndarray]:
    """Fetches the pending steps' metrics and checks their losses.

    Returns:
      Per metric, a numpy array with one value per flushed step (empty if
      nothing was pending).

    Raises:
      NonFiniteLossError: At the first step whose loss is NaN or infinite.
    """
    pending, self._pending = self._pending, []
    if not pending:
      return {}
    values = jax.device_get(pending)
    stacked = {
      name: np.asarray([step_values[name] for step_values in values])
      for name in values[0]
    }
    for offset, loss in enumerate(stacked["loss"]):
      if not math.isfinite(float(loss)):
        raise NonFiniteLossError(self._next_step + offset, float(loss))
    self._next_step += len(pending)
    for name, array in stacked.items():
      self._sums[name] = self._sums.get(name, 0.0) + float(
        np.sum(array, dtype=np.float64)
      )
    self._count += len(pending)
    return stacked

  def totals(self) -> tuple[dict[str, float], int]:
    """Sums of every flushed metric since the last :meth:`reset`, and the count.

    Returns:
      ``(sums, number_of_steps)``; call :meth:`flush` first to include
      pending steps.
    """
    return dict(self._sums), self._count

  def reset(self) -> None:
    """Forgets the sums (e.g. at the start of an epoch); keeps the step count."""
    self._sums = {}
    self._count = 0
