"""What both trainers share around their loop: :class:`TrainingRun`.

A :class:`TrainingRun` composes the parts of a run, one module each:

* :mod:`~examples.common.run_folder`: the folder's layout and
  ``config.json`` (a new run refuses a folder that holds a run; ``resume``
  checks that the settings which shape the computation are unchanged);
* :mod:`~examples.common.checkpoints`: Orbax checkpoints, and on resume the
  newest one that restores (damaged ones are moved aside);
* :mod:`~examples.common.metrics_log`: ``metrics.jsonl``;
* :mod:`~examples.common.progress`: the per-step metrics, fetched in
  batches, the guard against NaN losses, throughput and the progress bar;
* :mod:`~examples.common.stopping`: SIGTERM and Ctrl-C.

In a multi-process run only process 0 writes ``config.json``,
``metrics.jsonl`` and the progress output; every process writes its part of
the checkpoints. A crash at any moment leaves a consistent run behind, which
``--resume`` continues exactly; a write that fails (no space, no permission)
stops the run with :class:`~examples.common.run_folder.WriteError`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from examples.common import run_folder
from examples.common import train_state as train_state_lib
from examples.common.checkpoints import (
  DamagedCheckpointsError,
  RunCheckpoints,
  restore_newest_intact,
)
from examples.common.metrics_log import MetricsLog, format_record
from examples.common.progress import NonFiniteLossError, Progress
from examples.common.run_folder import (
  CHECKPOINT_DIR,
  DAMAGED_DIR,
  METRICS_FILE,
  WriteError,
)
from examples.common.stopping import RunStopped, StopSignals

__all__ = [
  "CHECKPOINT_DIR",
  "DAMAGED_DIR",
  "DamagedCheckpointsError",
  "NonFiniteLossError",
  "RunStopped",
  "TrainingRun",
  "WriteError",
  "restore_newest_intact",
]
"""What the trainers and their callers use, in one place."""


def _check_progress(progress: dict[str, Any]) -> None:
  """Raises if a checkpoint's progress lacks what resuming reads.

  Such a checkpoint is as damaged as one with an array cut short.
  """
  int(progress["metrics_records"])
  int(progress["count"])
  dict(progress["sums"])


class TrainingRun:
  """The folder, checkpoints, metrics log and progress of one training run.

  Use it as a context manager around the training loop::

    with TrainingRun(config, "mingpt", ...) as run:
      state, progress = run.restore(state)
      while ...:
        state, metrics = train_step(state, ...)
        run.log_step(metrics)
        if time_to_evaluate:
          run.record({"step": step, "val_loss": ...})
        if run.stop_requested:
          run.save(step, state, {"step": step})
          break
        if time_to_save:
          run.save(step, state, {"step": step})
      if run.stop_requested:
        raise run.stopped()

  Args:
    config: The run's settings, a (possibly nested)
      :class:`~examples.common.config.RunConfig`; written to
      ``config.json``. Its ``run_dir``, ``resumable()`` (the settings that
      may change when resuming), ``resume``, ``restart_if_damaged``,
      ``keep_checkpoints`` and ``progress`` are read here.
    trainer: The trainer's name in the default run folder, e.g. ``"mingpt"``.
    total_steps: Steps of the whole run, for the progress bar.
    unit: What the throughput counts, e.g. ``"images"`` or ``"tokens"``.
    examples_per_step: Images or tokens per training step.
    log_every: Steps between fetches of the per-step metrics.

  Raises:
    FileExistsError: If not resuming and ``out_dir`` already holds a run.
    ValueError: If resuming with settings that differ from the saved ones,
      or if ``metrics.jsonl`` is damaged other than in its last line.
    WriteError: If ``config.json`` cannot be written.
  """

  def __init__(
    self,
    config: Any,
    trainer: str,
    *,
    total_steps: int,
    unit: str,
    examples_per_step: int,
    log_every: int = 10,
  ):
    self.out_dir = config.run_dir(trainer).expanduser().absolute()
    self.is_writer = jax.process_index() == 0
    self._resume = config.resume
    self._restart_if_damaged = config.restart_if_damaged
    run_folder.prepare(
      self.out_dir,
      run_folder.flatten(dataclasses.asdict(config)),
      resume=config.resume,
      resumable=config.resumable(),
      is_writer=self.is_writer,
    )
    self._metrics = MetricsLog(
      self.out_dir / METRICS_FILE, is_writer=self.is_writer
    )
    self._checkpoints = RunCheckpoints(
      self.out_dir / CHECKPOINT_DIR,
      self.out_dir / DAMAGED_DIR,
      keep=config.keep_checkpoints,
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
    """Whether a stop signal arrived (on any process, as of the last fetch).

    The loop should then save a checkpoint at the current step, end, and
    raise :meth:`stopped`. In a multi-process run every process sees it at
    the same step: the flag is exchanged at the fixed steps where metrics are
    fetched (every ``log_every`` steps, and in every record and save).
    """
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
    """Continues from the newest checkpoint that restores, when resuming.

    Damaged checkpoints (see
    :func:`~examples.common.checkpoints.restore_newest_intact`) are moved to
    ``checkpoints-damaged/`` and the one before is restored, with one line
    saying so. A last line of ``metrics.jsonl`` cut short by an interrupted
    write is dropped, with one line saying so.

    Args:
      state: A freshly initialised state, which gives the restored arrays
        their structure, dtypes and shardings.

    Returns:
      ``(state, progress)``: the checkpoint's, or ``state`` and ``{}`` for a
      run that starts from scratch. Records written after the checkpoint are
      dropped from ``metrics.jsonl`` (they will be computed again).

    Raises:
      DamagedCheckpointsError: If checkpoints exist but none restores, unless
        the config's ``restart_if_damaged`` asks to start from scratch then.
      ValueError: If ``metrics.jsonl`` holds fewer records than the
        checkpoint counted.
    """
    torn = self._metrics.torn_line
    if torn is not None:
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
    """Notes one training step's metrics (see :class:`Progress`).

    Raises:
      NonFiniteLossError: At a fetch, for the first NaN or infinite loss.
    """
    self._progress.log_step(metrics)

  def running_means(self) -> dict[str, float]:
    """Means of each step metric since the last call (or the run's start).

    Fetches the pending steps first; the sums survive a resume.
    """
    return self._progress.running_means()

  def record(self, record: dict[str, Any]) -> None:
    """Appends an evaluation record to ``metrics.jsonl`` and prints it.

    The record gets the timing fields of :meth:`Progress.timing`
    (``<unit>_per_second``, and ``first_step_seconds`` once).

    Raises:
      WriteError: If ``metrics.jsonl`` cannot be written.
    """
    record = {**record, **self._progress.timing()}
    self._metrics.append(record)
    self.print(format_record(record))
    self._progress.restart_clock()

  def save(self, step: int, state: Any, progress: dict[str, Any]) -> None:
    """Writes a checkpoint and waits until it is complete.

    Raises:
      NonFiniteLossError: If a pending loss or the parameters are not finite
        (nothing is written then).
      WriteError: If the checkpoint cannot be written (a full disk, no
        permission); the earlier checkpoints stay intact.
    """
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
