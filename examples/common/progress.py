"""A run's progress: per-step metrics, the non-finite guard, throughput and bar.

:class:`Progress` fetches the per-step metrics from the device in batches
(so that the host never waits for a step it does not need), stops the run at
the first NaN or infinite loss (:class:`NonFiniteLossError`), keeps running
sums for the means of an epoch, measures throughput without compilation and
evaluations, and draws the progress bar.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import jax
import tqdm


class NonFiniteLossError(FloatingPointError):
  """Raised when training produces a NaN or infinite loss or parameter.

  Attributes:
    step: The 1-based number of the step at fault.
  """

  def __init__(self, step: int, what: str):
    self.step = step
    super().__init__(
      f"{what} at step {step}: the run diverged. The last checkpoint, written "
      "before this step, is kept. Lower the learning rate (--lr) and start "
      "again, or resume from that checkpoint with other settings in a new run."
    )


class Progress:
  """The per-step metrics of a run and its progress bar.

  Args:
    total_steps: Steps of the whole run, for the progress bar.
    unit: What the throughput counts, e.g. ``"images"`` or ``"tokens"``.
    examples_per_step: Images or tokens per training step.
    bar: Whether to draw the progress bar.
    log_every: Steps between fetches of the per-step metrics.
    on_fetch: Called after every fetch (where the processes of a
      multi-process run meet).

  Attributes:
    step: The steps fetched so far, those before a resume included.
    sums: Sums of each metric since the last :meth:`running_means`.
    count: The steps in ``sums``.
  """

  def __init__(
    self,
    total_steps: int,
    unit: str,
    examples_per_step: int,
    *,
    bar: bool,
    log_every: int,
    on_fetch: Callable[[], None],
  ):
    self._bar = tqdm.tqdm(
      total=total_steps, unit="step", disable=not bar, dynamic_ncols=True
    )
    self._unit = unit
    self._examples_per_step = examples_per_step
    self._log_every = log_every
    self._on_fetch = on_fetch
    self._pending: list[dict[str, jax.Array]] = []
    self.step = 0
    self.sums: dict[str, float] = {}
    self.count = 0
    self._clock = time.perf_counter()
    self._first_step_seconds: float | None = None
    self._first_step_recorded = False
    self._timed = [0, 0.0]  # steps and seconds of clean intervals

  def write(self, message: str) -> None:
    """Prints a line without breaking the progress bar."""
    self._bar.write(message)

  def close(self) -> None:
    """Draws the bar a last time and leaves it."""
    self._bar.close()

  def resume(self, step: int, sums: dict[str, float], count: int) -> None:
    """Continues from a checkpoint at ``step`` with its running sums."""
    self.step, self.sums, self.count = step, dict(sums), count
    self._bar.update(step)
    self.restart_clock()

  def restart_clock(self) -> None:
    """Leaves the time since the last fetch out of the throughput."""
    self._clock = time.perf_counter()

  def log_step(self, metrics: dict[str, jax.Array]) -> None:
    """Notes one training step's metrics (device scalars, ``"loss"`` among them).

    The values are fetched every ``log_every`` steps, all at once; the first
    step of the process is waited for, to time it (it includes compilation).

    Raises:
      NonFiniteLossError: At a fetch, for the first NaN or infinite loss.
    """
    self._pending.append(metrics)
    if self._first_step_seconds is None:
      jax.block_until_ready(metrics)
      self._first_step_seconds = time.perf_counter() - self._clock
      self.fetch(timed=False)
    elif len(self._pending) >= self._log_every:
      self.fetch(timed=True)

  def fetch(self, *, timed: bool) -> None:
    """Fetches the pending steps' metrics, adds them up and moves the bar.

    Args:
      timed: Whether the time since the last fetch counts for throughput
        (not if an evaluation or a checkpoint took part of it).

    Raises:
      NonFiniteLossError: For the first NaN or infinite loss.
    """
    pending, self._pending = self._pending, []
    if pending:
      values = jax.device_get(pending)
      first = self.step + 1
      self.step += len(values)
      for offset, step_values in enumerate(values):
        if not math.isfinite(float(step_values["loss"])):
          raise NonFiniteLossError(
            first + offset, f"Training loss is {float(step_values['loss'])}"
          )
        for name, value in step_values.items():
          self.sums[name] = self.sums.get(name, 0.0) + float(value)
      self.count += len(values)
      now = time.perf_counter()
      if timed:
        self._timed[0] += len(values)
        self._timed[1] += now - self._clock
      self._clock = now
      self._bar.update(len(values))
      self._bar.set_postfix(
        loss=f"{float(values[-1]['loss']):.4f}",
        **{f"{self._unit}/s": f"{self._throughput():,.0f}"},
        refresh=False,
      )
    self._on_fetch()

  def _throughput(self) -> float:
    steps, seconds = self._timed
    return steps * self._examples_per_step / seconds if seconds else math.nan

  def running_means(self) -> dict[str, float]:
    """Means of each step metric since the last call (or the run's start).

    Fetches the pending steps first; the sums survive a resume.
    """
    self.fetch(timed=True)
    means = {name: total / self.count for name, total in self.sums.items()}
    self.sums, self.count = {}, 0
    return means

  def timing(self) -> dict[str, Any]:
    """The timing fields of a record, counted from the previous record.

    ``<unit>_per_second``: the training throughput since the previous
    record, compilation and evaluations excluded (steps fetched together
    with an evaluation are left out of it); and, in the first record after
    the process's first step, ``first_step_seconds``. Fetches the pending
    steps first.
    """
    self.fetch(timed=False)
    fields: dict[str, Any] = {}
    if self._timed[0]:
      fields[f"{self._unit}_per_second"] = self._throughput()
    if self._first_step_seconds is not None and not self._first_step_recorded:
      fields["first_step_seconds"] = self._first_step_seconds
      self._first_step_recorded = True
    self._timed = [0, 0.0]
    return fields
