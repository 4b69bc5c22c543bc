"""A run's per-step metrics: the NaN guard, throughput and progress bar."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import jax
import tqdm


class NonFiniteLossError(FloatingPointError):
  """Raised for a NaN or infinite loss or parameter at (1-based) ``step``."""

  def __init__(self, step: int, what: str):
    self.step = step
    super().__init__(
      f"{what} at step {step}: the run diverged. The last checkpoint, written "
      "before this step, is kept. Lower the learning rate (--lr) and start "
      "again, or resume from that checkpoint with other settings in a new run."
    )


class Progress:
  """A run's per-step metrics and progress bar; arguments as TrainingRun's."""

  def __init__(
    self,
    total_steps: int,
    unit: str,
    examples_per_step: int,
    *,
    bar: bool,
    log_every: int,
    on_fetch: Callable[[], None],  # after each fetch, where processes meet
  ):
    self._bar = tqdm.tqdm(
      total=total_steps, unit="step", disable=not bar, dynamic_ncols=True
    )
    self._unit = unit
    self._examples_per_step = examples_per_step
    self._log_every = log_every  # fetch in batches: the host waits on no step
    self._on_fetch = on_fetch
    self._pending: list[dict[str, jax.Array]] = []
    self.step = 0  # steps fetched, those before a resume included
    self.sums: dict[str, float] = {}  # since the last running_means()
    self.count = 0  # steps in sums
    self._clock = time.perf_counter()
    self._first_step_seconds: float | None = None
    self._first_step_recorded = False
    self._timed = [0, 0.0]  # steps, seconds without compilation or evaluations

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
    """Notes a step's metrics (device scalars, ``"loss"`` among them)."""
    self._pending.append(metrics)
    if self._first_step_seconds is None:  # time it, with compilation
      jax.block_until_ready(metrics)
      self._first_step_seconds = time.perf_counter() - self._clock
      self.fetch(timed=False)
    elif len(self._pending) >= self._log_every:
      self.fetch(timed=True)

  def fetch(self, *, timed: bool) -> None:
    """Fetches pending metrics; ``timed`` if only steps ran since the last."""
    pending, self._pending = self._pending, []
    if pending:
      values = jax.device_get(pending)
      first = self.step + 1
      self.step += len(values)
      for offset, step_values in enumerate(values):
        loss = float(step_values["loss"])
        if not math.isfinite(loss):
          raise NonFiniteLossError(first + offset, f"Training loss is {loss}")
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
    """Means of each step metric since the last call (or the run's start)."""
    self.fetch(timed=True)
    means = {name: total / self.count for name, total in self.sums.items()}
    self.sums, self.count = {}, 0
    return means

  def timing(self) -> dict[str, Any]:
    """A record's ``<unit>_per_second`` and (once) ``first_step_seconds``."""
    self.fetch(timed=False)
    fields: dict[str, Any] = {}
    if self._timed[0]:
      fields[f"{self._unit}_per_second"] = self._throughput()
    if self._first_step_seconds is not None and not self._first_step_recorded:
      fields["first_step_seconds"] = self._first_step_seconds
      self._first_step_recorded = True
    self._timed = [0, 0.0]
    return fields
