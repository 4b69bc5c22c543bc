"""Both trainers' :class:`TrainingRun`; --resume continues after any crash."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from examples.common import run_folder
from examples.common import train_state as train_state_lib
from examples.common.checkpoints import DamagedCheckpointsError, RunCheckpoints
from examples.common.checkpoints import (  # for the benchmarks
  restore_newest_intact as restore_newest_intact,
)
from examples.common.metrics_log import MetricsLog, format_record
from examples.common.progress import NonFiniteLossError, Progress
from examples.common.run_folder import CHECKPOINT_DIR, DAMAGED_DIR, METRICS_FILE
from examples.common.run_folder import WriteError as WriteError
from examples.common.stopping import RunStopped, StopSignals


def _check_progress(progress: dict[str, Any]) -> None:
  # Raises if a checkpoint's progress lacks what resuming reads.
  int(progress["metrics_records"])
  int(progress["count"])
  dict(progress["sums"])


class TrainingRun:
  """The folder, checkpoints, metrics log and progress of one training run.

  A context manager around the training loop::

    with TrainingRun(config, "mingpt", ...) as run:
      state, progress = run.restore(state)
      while step < total_steps:
        state, metrics = train_step(state, ...)
        run.log_step(metrics)
        if time_to_evaluate:
          run.record({"step": step, "val_loss": ...})
        if run.stop_requested:  # SIGTERM or Ctrl-C
          run.save(step, state, {"step": step})
          break
        if time_to_save:
          run.save(step, state, {"step": step})
      if run.stop_requested:
        raise run.stopped()  # tells the caller the run did not finish
  """

  def __init__(
    self,
    config: Any,  # a RunConfig (maybe nested), written to config.json
    trainer: str,  # names the default run folder, e.g. "mingpt"
    *,
    total_steps: int,
    unit: str,  # what throughput counts: "images" or "tokens"
    examples_per_step: int,
    log_every: int = 10,  # steps between fetches of the step metrics
  ):
    out = self.out_dir = config.run_dir(trainer).expanduser().absolute()
    self.is_writer = jax.process_index() == 0  # others write checkpoints only
    self._resume = config.resume
    self._restart_if_damaged = config.restart_if_damaged
    run_folder.prepare(
      out,
      run_folder.flatten(dataclasses.asdict(config)),
      resume=config.resume,
      resumable=config.resumable(),
      is_writer=self.is_writer,
    )
    self._metrics = MetricsLog(out / METRICS_FILE, is_writer=self.is_writer)
    self._checkpoints = RunCheckpoints(
      out / CHECKPOINT_DIR, out / DAMAGED_DIR, keep=config.keep_checkpoints
    )
    self._signals = StopSignals(announce=self.print)
    self._progress = Progress(
      total_steps,
      unit,
      examples_per_step,
      bar=config.progress and self.is_writer,
      log_every=log_every,
      on_fetch=self._signals.exchange,
    )
    self._saved_step: int | None = None

  def __enter__(self) -> TrainingRun:
    self._signals.__enter__()
    return self

  def __exit__(self, *exc_info) -> None:
    self._signals.__exit__(*exc_info)
    self._progress.close()
    self._checkpoints.close()

  @property
  def stop_requested(self) -> bool:
    """Whether a stop signal arrived (on any process, as of the last fetch)."""
    return self._signals.requested

  def stopped(self) -> RunStopped:
    """What to raise once the loop has saved its checkpoint after a stop."""
    return RunStopped(self._signals.signal, self._saved_step, self.out_dir)

  @property
  def records(self) -> list[dict[str, Any]]:
    """Copies of all records of ``metrics.jsonl``, oldest first."""
    return [dict(record) for record in self._metrics.records]

  def print(self, message: str) -> None:
    """Prints a line without breaking the progress bar (process 0 only)."""
    if self.is_writer:
      self._progress.write(message)

  def restore(self, state: Any) -> tuple[Any, dict[str, Any]]:
    """Returns the newest intact checkpoint's (state, progress) or (state, {}).

    Only when resuming. Drops a torn last record and those after the checkpoint
    (to be redone), moves damaged checkpoints aside, saying so; raises
    DamagedCheckpointsError if none restores (without --restart-if-damaged).
    """
    if (torn := self._metrics.torn_line) is not None:
      preview = torn[:40] + ("..." if len(torn) > 40 else "")
      self.print(
        f"{self._metrics.path}: dropped its last line, cut short by an "
        f"interrupted write ({preview})."
      )
    progress: dict[str, Any] = {}
    outcome = None
    if self._resume:
      outcome = self._checkpoints.restore_newest(
        state, _check_progress, move_if_none_intact=self._restart_if_damaged
      )
    if outcome is None:
      self._metrics.truncate(0)
    elif outcome.step is not None:
      state, progress = outcome.restored
      self._saved_step = outcome.step
      self._metrics.truncate(int(progress["metrics_records"]))
      self._progress.resume(
        outcome.step, progress["sums"], int(progress["count"])
      )
      self.print(
        outcome.describe()
        or f"Resumed from the checkpoint at step {outcome.step} in "
        f"{self.out_dir}."
      )
    elif outcome.damaged and not self._restart_if_damaged:
      raise DamagedCheckpointsError(
        f"{outcome.describe()} Pass --restart-if-damaged with --resume to "
        f"move {'it' if len(outcome.damaged) == 1 else 'them'} aside and "
        "start again from scratch."
      ) from outcome.damaged[0].error
    elif outcome.damaged:
      kept = self._metrics.keep_aside(self.out_dir / DAMAGED_DIR)
      self.print(
        f"{outcome.describe()} Starting again from scratch "
        "(--restart-if-damaged)"
        + (f"; the earlier records are in {kept}." if kept else ".")
      )
      self._metrics.truncate(0)
    else:
      self.print(f"No checkpoint in {self.out_dir}; starting from scratch.")
      self._metrics.truncate(0)
    self._progress.restart_clock()
    return state, progress

  def log_step(self, metrics: dict[str, jax.Array]) -> None:
    """Notes one training step's metrics (see :meth:`Progress.log_step`)."""
    self._progress.log_step(metrics)

  def running_means(self) -> dict[str, float]:
    """Means of each step metric since the last call (or the run's start)."""
    return self._progress.running_means()

  def record(self, record: dict[str, Any]) -> None:
    """Appends an evaluation record (with the timing fields) and prints it."""
    record = {**record, **self._progress.timing()}
    self._metrics.append(record)
    self.print(format_record(record))
    self._progress.restart_clock()

  def save(self, step: int, state: Any, progress: dict[str, Any]) -> None:
    """Writes a checkpoint if the pending losses and parameters are finite."""
    self._progress.fetch(timed=False)
    if not train_state_lib.all_finite(state.params):
      raise NonFiniteLossError(
        step, "The parameters hold NaN or infinite values"
      )
    progress = {
      **progress,
      "metrics_records": len(self._metrics.records),
      "sums": self._progress.sums,
      "count": self._progress.count,
    }
    self._checkpoints.save(step, state, progress)
    self._saved_step = step
    self._progress.restart_clock()
