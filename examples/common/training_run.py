"""What both trainers share around their loop: :class:`TrainingRun`.

A run lives in one folder, which holds

* ``config.json``: the run's settings (the resolved run folder included);
* ``metrics.jsonl``: one JSON record per evaluation, oldest first;
* ``checkpoints/<step>/``: the latest few Orbax checkpoints, each holding the
  training state (parameters, model and optimizer state, step, key) and a
  JSON dict of host-side progress (data position, scheduler state, number of
  metrics records);
* ``checkpoints-damaged/<step>-<time>/``: checkpoints that did not restore,
  moved out of Orbax's folder (never deleted) by :func:`restore_newest_intact`.

A :class:`TrainingRun` prepares the folder (a new run refuses a folder that
holds a run; ``resume`` checks that the settings which shape the computation
are unchanged), restores the latest checkpoint, fetches the per-step metrics
from the device in batches (so that the host never waits for a step it does
not need), stops the run at the first NaN or infinite loss
(:class:`NonFiniteLossError`), measures throughput, draws the progress bar
and writes records and checkpoints. On SIGTERM (what schedulers send before
preemption) or Ctrl-C it lets the loop save a checkpoint at the current step
and then raises :class:`RunStopped`; resuming continues exactly where it
stopped.

Orbax writes each checkpoint into a temporary folder and renames it into
place when complete, and ``metrics.jsonl`` and ``config.json`` are replaced
atomically, so a crash at any moment leaves a consistent run behind. What
a crash can still leave is handled on resume: a checkpoint that does not
restore completely (array files cut short by a full disk or an interrupted
copy, metadata missing) is moved aside and the one before it restored; a last
line of ``metrics.jsonl`` cut short by a killed write is dropped. A save that
fails (no space, no permission) stops the run with :class:`WriteError` and
leaves the earlier checkpoints as they were. In a multi-process run only process 0 writes ``config.json``, ``metrics.jsonl`` and
the progress output; every process writes its part of the checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import math
import os
import pathlib
import re
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Collection, Iterator
from typing import Any, Generic, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
import tqdm
from jax.experimental import multihost_utils

from examples.common import train_state as train_state_lib

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints-damaged"
"""Where checkpoints that did not restore are moved (outside Orbax's folder)."""
_STATE_ITEM = "state"
_PROGRESS_ITEM = "progress"
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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


class RunStopped(Exception):
  """Raised after a stop signal, once the checkpoint at the current step exists.

  Attributes:
    signal_name: ``"SIGTERM"`` or ``"SIGINT"``.
    step: The step of the checkpoint.
    out_dir: The run folder.
  """

  def __init__(self, signum: int, step: int, out_dir: pathlib.Path):
    self.signal_name = signal.Signals(signum).name
    self.exit_status = 128 + signum
    self.step = step
    self.out_dir = out_dir
    super().__init__(
      f"{self.signal_name}: stopped at step {step} and saved a checkpoint in "
      f"{out_dir}; run the same command with --resume to continue."
    )


class WriteError(OSError):
  """Raised when the run folder cannot be written (a full disk, no permission).

  Whatever was written before stays usable: a checkpoint that fails to save
  leaves only Orbax's temporary folder, which the next start removes.

  Attributes:
    errno: The operating system's error number, or None if unknown.
  """

  def __init__(self, what: str, error: BaseException):
    number = _os_error_number(error)
    cause = os.strerror(number) if number else _brief(error)
    if number in (errno.ENOSPC, errno.EDQUOT):
      remedy = "free some space"
    elif number in (errno.EACCES, errno.EPERM, errno.EROFS):
      remedy = "make the folder writable"
    else:
      remedy = "fix that"
    super().__init__(
      f"{what}: {cause}. The earlier checkpoints are intact: {remedy}, then "
      "run the same command with --resume to continue from the last one."
    )
    self.errno = number  # after OSError's constructor, which sets it to None


class DamagedCheckpointsError(RuntimeError):
  """Raised on resume when checkpoints exist but none restores completely."""


def _os_error_number(error: BaseException) -> int | None:
  """The OS error number behind ``error``, from it or what it was raised from.

  Tensorstore reports a failed write as a ``ValueError`` whose message ends
  with ``[os_error_code='28']``; Python's own writes raise ``OSError``.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno:
      return error.errno
    match = re.search(r"os_error_code='(\d+)'", str(error))
    if match:
      return int(match.group(1))
    error = error.__cause__ or error.__context__
  return None


def _brief(error: BaseException | None, limit: int = 200) -> str:
  """One line about ``error``: its type and its message, shortened.

  Tensorstore's messages carry the whole JSON spec of the array after the
  reason (``... [tensorstore_spec='{...}']``), which is cut off.
  """
  if error is None:
    return "it failed on another process"
  lines = str(error).strip().splitlines() or [""]
  text = re.split(r"\s\[(?:tensorstore_spec|os_error_code|source)", lines[0])[0]
  # Tensorstore chains its contexts ("OUT_OF_RANGE: Error opening ...: Error
  # reading ...: Requested byte range ..."); the first and last say it.
  parts = text.split(": ")
  if len(parts) > 2:
    text = f"{parts[0]}: ... {parts[-1]}"
  text = f"{type(error).__name__}: {text}" if text else type(error).__name__
  if len(text) > limit:
    text = text[: limit - 3] + "..."
  return text


# Orbax and asyncio output while an Orbax operation fails.

_NOISY_LOGGERS = ("absl", "asyncio")
"""Orbax logs through absl; asyncio reports tasks whose error was not read."""


class _HoldRecords(logging.Filter):
  """Keeps the records that reach a logger instead of letting them through."""

  def __init__(self):
    super().__init__()
    self.held: list[logging.LogRecord] = []

  def filter(self, record: logging.LogRecord) -> bool:
    self.held.append(record)
    return False


class _LateOrbaxNoise(logging.Filter):
  """Drops what the threads of an Orbax operation that failed log later."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    unread = message.startswith(
      (
        "Task exception was never retrieved",
        "Future exception was never retrieved",
        "Task was destroyed but it is pending",
      )
    )
    return not (
      "_SignalingThread.run() raised an exception" in message
      or (unread and ("orbax" in message or "tensorstore" in message))
    )


_late_noise_ignored = False


def _ignore_late_orbax_noise() -> None:
  """Stops what a failed Orbax operation prints after it has returned.

  When one array of a restore or save fails, Orbax's event loop ends at once,
  and the reads and writes still under way complete later: Tensorstore's
  callbacks then find the loop closed (a ``RuntimeError`` that Python prints
  as "unraisable") and asyncio logs the tasks whose errors nobody read. Both
  only repeat the error that was raised, which the caller reports. Installed
  once, before the first Orbax operation (the first callbacks can come before
  the error is raised); both filters let everything else through.
  """
  global _late_noise_ignored
  if _late_noise_ignored:
    return
  _late_noise_ignored = True
  for name in _NOISY_LOGGERS:
    logging.getLogger(name).addFilter(_LateOrbaxNoise())
  previous_hook = sys.unraisablehook

  def unraisable_hook(unraisable) -> None:
    error = unraisable.exc_value
    frames = []
    traceback_ = unraisable.exc_traceback
    while traceback_ is not None:
      frames.append(traceback_.tb_frame.f_code.co_name)
      traceback_ = traceback_.tb_next
    if not (
      isinstance(error, RuntimeError)
      and str(error) == "Event loop is closed"
      and "call_soon_threadsafe" in frames
    ):
      previous_hook(unraisable)

  sys.unraisablehook = unraisable_hook


_STEP_METADATA_NOTES = (
  "Metadata file does not exist",
  "Failed to read Metadata file",
  "Failed to json parse Metadata file",
)


@contextlib.contextmanager
def _quiet_if_it_fails() -> Iterator[None]:
  """Holds back Orbax's and asyncio's log records during an Orbax operation.

  If the operation fails they are dropped: a damaged checkpoint or a full disk
  makes Orbax log the traceback of every failed thread, hundreds of lines,
  where the caller says in one line what happened (``--debug`` shows the
  traceback of the error itself). If it succeeds they are let through, but
  for Orbax's notes on a step's own metadata file (missing or unreadable):
  it only holds the save time, and the restore says whether the step is
  intact.
  """
  _ignore_late_orbax_noise()
  hold = _HoldRecords()
  loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
  for logger in loggers:
    logger.addFilter(hold)
  try:
    yield
  except BaseException:
    # The coroutines the failure left unstarted are collected later, and
    # Python warns about each; in this program only Orbax runs coroutines.
    warnings.filterwarnings(
      "ignore", r"coroutine '.*' was never awaited", RuntimeWarning
    )
    raise
  finally:
    for logger in loggers:
      logger.removeFilter(hold)
  for record in hold.held:
    if not record.getMessage().startswith(_STEP_METADATA_NOTES):
      logging.getLogger(record.name).handle(record)


# Restoring the newest checkpoint that restores.

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class DamagedCheckpoint:
  """A checkpoint that did not restore.

  Attributes:
    step: Its step.
    cause: Why, in one line (the error's type and message, shortened).
    moved_to: The folder it was moved to, or None if it was left in place.
    error: The exception (None if it failed on another process only).
  """

  step: int
  cause: str
  moved_to: pathlib.Path | None
  error: BaseException | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True)
class RestoreOutcome(Generic[T]):
  """What :func:`restore_newest_intact` found.

  Attributes:
    directory: The checkpoint manager's folder.
    step: The step restored, or None if no checkpoint restored (or none
      exists).
    restored: What ``restore_step`` returned for ``step``, or None.
    damaged: The checkpoints newer than ``step`` (all of them if ``step`` is
      None), newest first, that did not restore.
  """

  directory: pathlib.Path
  step: int | None
  restored: T | None
  damaged: tuple[DamagedCheckpoint, ...]

  def describe(self) -> str:
    """One line on the damaged checkpoints and the step restored ('' if none).

    For example: ``Checkpoint 6 in run/checkpoints did not restore
    (ValueError: ...); moved it to run/checkpoints-damaged/6-20250101T120000Z.
    Resuming from the checkpoint at step 4.``
    """
    if not self.damaged:
      return ""
    one = len(self.damaged) == 1
    steps = _and_list([str(damaged.step) for damaged in self.damaged])
    each = "; ".join(f"{d.step}: {d.cause}" for d in self.damaged)
    moved = [d.moved_to for d in self.damaged if d.moved_to is not None]
    if not moved:
      where = f"{'it is' if one else 'they are'} left in place"
    elif one:
      where = f"moved it to {moved[0]}"
    else:
      names = ", ".join(path.name for path in moved)
      where = f"moved them to {moved[0].parent} (as {names})"
    if self.step is None:
      return (
        f"No checkpoint in {self.directory} restores completely ({each}); "
        f"{where}."
      )
    causes = self.damaged[0].cause if one else each
    return (
      f"Checkpoint{'' if one else 's'} {steps} in {self.directory} did not "
      f"restore ({causes}); {where}. Resuming from the checkpoint at step "
      f"{self.step}."
    )


def _and_list(items: list[str]) -> str:
  return (
    items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
  )


def _on_any_process(flag: bool) -> bool:
  """Whether ``flag`` is true on any process (all processes must call it)."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.process_allgather(np.int32(flag)).any())


def restore_newest_intact(
  manager: ocp.CheckpointManager,
  restore_step: Callable[[int], T],
  damaged_dir: str | os.PathLike,
  *,
  move_if_none_intact: bool = True,
) -> RestoreOutcome[T]:
  """Restores the newest checkpoint that restores completely.

  Tries the manager's steps newest first: ``restore_step(step)`` must really
  restore (read every array, e.g. ``manager.restore(step, args=...)``) and may
  check what it read; any exception it raises (Orbax's, Tensorstore's
  ``ValueError``, ``OSError``, asyncio's, a ``KeyError`` of a check) marks
  the checkpoint as damaged, and the next older one is tried. Orbax's own
  output about the failure (hundreds of lines of tracebacks) is suppressed.
  ``KeyboardInterrupt`` and ``SystemExit`` pass through.

  The damaged checkpoints are then moved (never deleted) out of the manager's
  folder, each to ``damaged_dir/<step>-<UTC time>/`` (``-1``, ``-2``...
  added if taken), so that Orbax no longer sees them and later saves of the
  same steps can be written; the manager is reloaded. If none restores, they
  are moved only if ``move_if_none_intact``; left in place, the same command
  finds them again.

  In a multi-process run every process must call it: a checkpoint counts as
  damaged if it fails on any process, and process 0 moves the folders. The
  step folders must have Orbax's default names (``<step>``).

  Args:
    manager: The checkpoint manager.
    restore_step: Restores one step and returns what the caller needs.
    damaged_dir: Where damaged checkpoints go; it must lie outside the
      manager's folder (e.g. ``<run>/checkpoints-damaged``).
    move_if_none_intact: Whether to move the checkpoints aside when none
      restores.

  Returns:
    The step restored and what ``restore_step`` returned (None and None if
    no checkpoint restored or none exists), and the damaged checkpoints,
    newest first; :meth:`RestoreOutcome.describe` says it in one line.

  Raises:
    ValueError: If ``damaged_dir`` lies inside the manager's folder.
  """
  directory = pathlib.Path(str(manager.directory)).absolute()
  damaged_dir = pathlib.Path(damaged_dir).absolute()
  if damaged_dir == directory or directory in damaged_dir.parents:
    raise ValueError(
      f"The folder for damaged checkpoints, {damaged_dir}, must lie outside "
      f"the checkpoint folder {directory}."
    )
  failures: list[tuple[int, BaseException | None]] = []
  step, restored = None, None
  for candidate in sorted(manager.all_steps(), reverse=True):
    error: BaseException | None = None
    try:
      with _quiet_if_it_fails():
        value = restore_step(candidate)
    # Orbax and Tensorstore raise ValueError, OSError and others for a
    # checkpoint cut short; asyncio's CancelledError is no Exception.
    except (Exception, asyncio.CancelledError) as caught:
      error = caught
    if _on_any_process(error is not None):
      failures.append((candidate, error))
      continue
    step, restored = candidate, value
    break
  moved: dict[int, pathlib.Path] = {}
  if failures and (step is not None or move_if_none_intact):
    moved = _move_aside(
      manager, directory, [s for s, _ in failures], damaged_dir
    )
  damaged = tuple(
    DamagedCheckpoint(s, _brief(error), moved.get(s), error)
    for s, error in failures
  )
  return RestoreOutcome(directory, step, restored, damaged)


def _move_aside(
  manager: ocp.CheckpointManager,
  directory: pathlib.Path,
  steps: list[int],
  damaged_dir: pathlib.Path,
) -> dict[int, pathlib.Path]:
  """Moves step folders to ``damaged_dir`` and reloads the manager."""
  now = int(time.time())
  if jax.process_count() > 1:  # one name on every process
    now = int(multihost_utils.broadcast_one_to_all(np.int32(now)))
  stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
  targets = {}
  for step in steps:
    target = damaged_dir / f"{step}-{stamp}"
    number = 0
    while target.exists():
      number += 1
      target = damaged_dir / f"{step}-{stamp}-{number}"
    targets[step] = target
  if jax.process_count() > 1:  # every process named them before any moved
    multihost_utils.sync_global_devices("exadam_damaged_checkpoints_named")
  if jax.process_index() == 0:
    for step, target in targets.items():
      try:
        damaged_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(directory / str(step), target)
      except OSError as error:
        raise WriteError(
          f"Could not move the damaged checkpoint {directory / str(step)} to "
          f"{target}",
          error,
        ) from error
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("exadam_damaged_checkpoints_moved")
  manager.reload()
  return targets


def flatten(config: dict[str, Any]) -> dict[str, Any]:
  """Settings as a flat dict, nested ones under dotted keys (``model.n_layer``)."""
  flat = {}
  for name, value in config.items():
    if isinstance(value, dict):
      flat.update({f"{name}.{key}": item for key, item in value.items()})
    else:
      flat[name] = value
  return flat


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
  """The nested dict of a flat one with dotted keys."""
  nested: dict[str, Any] = {}
  for name, value in flat.items():
    head, _, tail = name.partition(".")
    if tail:
      nested.setdefault(head, {})[tail] = value
    else:
      nested[name] = value
  return nested


def _format(key: str, value: Any) -> str:
  if not isinstance(value, float):
    return f"{key} {value}"
  if key.endswith("per_second"):
    return f"{key} {value:,.0f}"
  if key.endswith(("loss", "acc")):
    return f"{key} {value:.4f}"
  return f"{key} {value:.4g}"


def _write_atomically(path: pathlib.Path, text: str) -> None:
  temporary = path.with_name(f".{path.name}.tmp")
  try:
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
  except OSError as error:
    raise WriteError(f"Could not write {path}", error) from error


@dataclasses.dataclass
class _Records:
  """The records of ``metrics.jsonl`` as read.

  Attributes:
    records: The records, oldest first.
    torn_line: A last line without a newline that is not JSON, dropped: what
      a process killed in the middle of writing a record leaves.
    unterminated: Whether the file lacks its final newline (then it must be
      rewritten before a record is appended).
  """

  records: list[dict[str, Any]]
  torn_line: str | None = None
  unterminated: bool = False


def _read_records(path: pathlib.Path) -> _Records:
  if not path.exists():
    return _Records([])
  text = path.read_text(encoding="utf-8")
  lines = text.splitlines()
  result = _Records([], unterminated=bool(text) and not text.endswith("\n"))
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as error:
      if result.unterminated and number == len(lines):
        result.torn_line = line
        break
      raise ValueError(
        f"{path}, line {number}, is not JSON ({error}); the metrics file is "
        "damaged. Delete that line, or start a new run in another --out-dir."
      ) from error
    if not isinstance(record, dict):
      raise ValueError(f"{path}, line {number}, is not a JSON object.")
    result.records.append(record)
  return result


class TrainingRun:
  """The folder, checkpoints, metrics log and progress of one training run.

  Use it as a context manager around the training loop::

    with TrainingRun(config, out_dir, ...) as run:
      state, progress = run.restore(state)
      while ...:
        state, metrics = train_step(state, ...)
        run.log_step(metrics)
        if time_to_evaluate:
          run.record({"step": step, "val_loss": ...})
        if time_to_save or run.stop_requested:
          run.save(step, state, {"step": step})

  Args:
    config: The run's settings, a (possibly nested) dataclass with
      ``resume``, ``restart_if_damaged`` and ``keep_checkpoints`` fields;
      written to ``config.json``.
    out_dir: The run folder.
    total_steps: Steps of the whole run, for the progress bar.
    unit: What the throughput counts, e.g. ``"images"`` or ``"tokens"``.
    examples_per_step: Images or tokens per training step.
    resumable: Settings (flattened names, see :func:`flatten`) that may
      differ from the saved ``config.json`` when resuming.
    progress_bar: Whether to draw a progress bar.
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
    out_dir: pathlib.Path,
    *,
    total_steps: int,
    unit: str,
    examples_per_step: int,
    resumable: Collection[str],
    progress_bar: bool = True,
    log_every: int = 10,
  ):
    self.out_dir = pathlib.Path(out_dir).expanduser().absolute()
    self.is_writer = jax.process_index() == 0
    self._resume = config.resume
    self._restart_if_damaged = config.restart_if_damaged
    self._unit = unit
    self._examples_per_step = examples_per_step
    self._log_every = log_every
    self._prepare_folder(flatten(dataclasses.asdict(config)), resumable)
    self._metrics_path = self.out_dir / METRICS_FILE
    read = _read_records(self._metrics_path)
    self._records = read.records
    self._torn_line = read.torn_line
    self._rewrite_records = read.unterminated
    with _quiet_if_it_fails():  # it reads each step's metadata
      self._checkpoints = ocp.CheckpointManager(
        self.out_dir / CHECKPOINT_DIR,
        options=ocp.CheckpointManagerOptions(
          max_to_keep=config.keep_checkpoints,
          enable_async_checkpointing=False,
          cleanup_tmp_directories=True,
          create=True,
        ),
      )
    self._bar = tqdm.tqdm(
      total=total_steps,
      unit="step",
      disable=not (progress_bar and self.is_writer),
      dynamic_ncols=True,
    )
    self._pending: list[dict[str, jax.Array]] = []
    self._step = 0
    self._sums: dict[str, float] = {}
    self._count = 0
    self._clock = time.perf_counter()
    self._first_step_seconds: float | None = None
    self._first_step_recorded = False
    self._timed = [0, 0.0]  # steps and seconds of clean intervals
    self._signal_received: int | None = None  # on this process
    self._stop_signal: int | None = None  # agreed by all processes
    self._saved_handlers: dict[int, Any] = {}

  def _prepare_folder(
    self, config: dict[str, Any], resumable: Collection[str]
  ) -> None:
    # Through JSON, so that it compares with the saved file (tuples are lists).
    config = json.loads(json.dumps({**config, "out_dir": str(self.out_dir)}))
    config_path = self.out_dir / CONFIG_FILE
    checkpoints = self.out_dir / CHECKPOINT_DIR
    holds_run = (self.out_dir / METRICS_FILE).exists() or (
      checkpoints.is_dir()
      and any(p.name.isdigit() for p in checkpoints.iterdir())
    )
    if holds_run and not self._resume:
      raise FileExistsError(
        f"{self.out_dir} already holds a training run. Pass --resume to "
        "continue it, or choose another --out-dir."
      )
    if self._resume and config_path.exists():
      saved = flatten(json.loads(config_path.read_text(encoding="utf-8")))
      changed = sorted(
        name
        for name in set(saved) | set(config)
        if name not in resumable and saved.get(name) != config.get(name)
      )
      if changed:
        details = ", ".join(
          f"{name}: {saved.get(name)!r} -> {config.get(name)!r}"
          for name in changed
        )
        raise ValueError(
          f"Cannot resume the run in {self.out_dir} with different settings "
          f"({details}). Resume with the original settings (see its "
          "config.json), or start a new run in another --out-dir."
        )
    if self.is_writer:
      self.out_dir.mkdir(parents=True, exist_ok=True)
      _write_atomically(
        config_path,
        json.dumps(unflatten(config), indent=2, sort_keys=True) + "\n",
      )

  # Context management and signals.

  def __enter__(self) -> TrainingRun:
    if threading.current_thread() is threading.main_thread():
      for signum in _STOP_SIGNALS:
        self._saved_handlers[signum] = signal.signal(signum, self._on_signal)
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._saved_handlers.items():
      signal.signal(signum, handler)
    self._bar.close()
    self._checkpoints.close()

  def _on_signal(self, signum: int, frame) -> None:
    del frame
    if self._signal_received is not None:
      # A second signal: stop at once, losing what the checkpoint lacks.
      raise KeyboardInterrupt
    self._signal_received = signum
    if jax.process_count() == 1:
      self._stop_signal = signum
    self.print(
      f"{signal.Signals(signum).name} received: saving a checkpoint at the "
      "current step (send it again to stop at once)."
    )

  @property
  def stop_requested(self) -> bool:
    """Whether a stop signal arrived (on any process, as of the last fetch).

    In a multi-process run every process sees it at the same step: the flag
    is exchanged at the fixed steps where metrics are fetched (every
    ``log_every`` steps).
    """
    return self._stop_signal is not None

  # Records and progress.

  @property
  def records(self) -> list[dict[str, Any]]:
    """Copies of all records of ``metrics.jsonl``, oldest first."""
    return [dict(record) for record in self._records]

  def print(self, message: str) -> None:
    """Prints a line without breaking the progress bar (process 0 only)."""
    if self.is_writer:
      self._bar.write(message)

  def restore(self, state: Any) -> tuple[Any, dict[str, Any]]:
    """Continues from the newest checkpoint that restores, when resuming.

    Damaged checkpoints (see :func:`restore_newest_intact`) are moved to
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
    if self._torn_line is not None:
      preview = self._torn_line[:40] + (
        "..." if len(self._torn_line) > 40 else ""
      )
      self.print(
        f"{self._metrics_path}: dropped its last line, cut short by an "
        f"interrupted write ({preview})."
      )
    progress: dict[str, Any] = {}
    if not self._resume:
      self._truncate_records(0)
    else:
      abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
      outcome = restore_newest_intact(
        self._checkpoints,
        lambda step: self._restore_step(step, abstract),
        self.out_dir / DAMAGED_DIR,
        move_if_none_intact=self._restart_if_damaged,
      )
      if outcome.step is not None:
        state, progress = outcome.restored
        self._truncate_records(int(progress["metrics_records"]))
        self._sums = dict(progress["sums"])
        self._count = int(progress["count"])
        self._step = outcome.step
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
        kept = self._keep_records_aside()
        self.print(
          f"{outcome.describe()} Starting again from scratch "
          "(--restart-if-damaged)"
          + (f"; the earlier records are in {kept}." if kept else ".")
        )
        self._truncate_records(0)
      else:
        self.print(f"No checkpoint in {self.out_dir}; starting from scratch.")
        self._truncate_records(0)
    self._bar.update(self._step)
    self._clock = time.perf_counter()
    return state, progress

  def _restore_step(self, step: int, abstract: Any) -> tuple[Any, dict]:
    """The state and progress of one checkpoint; raises if it is damaged."""
    restored = self._checkpoints.restore(
      step,
      args=ocp.args.Composite(
        **{
          _STATE_ITEM: ocp.args.StandardRestore(abstract),
          _PROGRESS_ITEM: ocp.args.JsonRestore(),
        }
      ),
    )
    progress = dict(restored[_PROGRESS_ITEM])
    # Progress that lacks what resuming reads is as damaged as a cut array.
    int(progress["metrics_records"])
    int(progress["count"])
    dict(progress["sums"])
    return restored[_STATE_ITEM], progress

  def _keep_records_aside(self) -> pathlib.Path | None:
    """Copies ``metrics.jsonl`` into ``checkpoints-damaged/`` before a restart."""
    if not (self.is_writer and self._records):
      return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = self.out_dir / DAMAGED_DIR / f"metrics-{stamp}.jsonl"
    try:
      kept.parent.mkdir(parents=True, exist_ok=True)
      shutil.copyfile(self._metrics_path, kept)
    except OSError as error:
      raise WriteError(f"Could not write {kept}", error) from error
    return kept

  def _truncate_records(self, count: int) -> None:
    if count > len(self._records):
      raise ValueError(
        f"{self._metrics_path} holds {len(self._records)} records but the "
        f"checkpoint counted {count}: the metrics file was truncated or "
        "replaced. Restore it, or start a new run in another --out-dir."
      )
    if (
      count < len(self._records)
      or self._rewrite_records
      or self._torn_line is not None
      or not self._metrics_path.exists()
    ):
      del self._records[count:]
      if self.is_writer:
        _write_atomically(
          self._metrics_path,
          "".join(json.dumps(r, sort_keys=True) + "\n" for r in self._records),
        )
      self._rewrite_records, self._torn_line = False, None

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
      self._fetch(timed=False)
    elif len(self._pending) >= self._log_every:
      self._fetch(timed=True)

  def _fetch(self, *, timed: bool) -> None:
    pending, self._pending = self._pending, []
    if pending:
      values = jax.device_get(pending)
      first = self._step + 1
      self._step += len(values)
      for offset, step_values in enumerate(values):
        if not math.isfinite(float(step_values["loss"])):
          raise NonFiniteLossError(
            first + offset, f"Training loss is {float(step_values['loss'])}"
          )
        for name, value in step_values.items():
          self._sums[name] = self._sums.get(name, 0.0) + float(value)
      self._count += len(values)
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
    if jax.process_count() > 1 and self._stop_signal is None:
      flags = multihost_utils.process_allgather(
        np.int32(self._signal_received or 0)
      )
      if flags.any():
        self._stop_signal = int(flags[flags > 0][0])

  def _throughput(self) -> float:
    steps, seconds = self._timed
    return steps * self._examples_per_step / seconds if seconds else math.nan

  def running_means(self) -> dict[str, float]:
    """Means of each step metric since the last call (or the run's start).

    Fetches the pending steps first; the sums survive a resume.
    """
    self._fetch(timed=True)
    means = {name: total / self._count for name, total in self._sums.items()}
    self._sums, self._count = {}, 0
    return means

  def record(self, record: dict[str, Any]) -> None:
    """Appends an evaluation record to ``metrics.jsonl`` and prints it.

    The record gets ``<unit>_per_second``: the training throughput since the
    previous record, compilation and evaluations excluded (steps fetched
    together with an evaluation are left out of it), and, in the first record
    after the process's first step, ``first_step_seconds``.
    """
    self._fetch(timed=False)
    record = dict(record)
    if self._timed[0]:
      record[f"{self._unit}_per_second"] = self._throughput()
    if self._first_step_seconds is not None and not self._first_step_recorded:
      record["first_step_seconds"] = self._first_step_seconds
      self._first_step_recorded = True
    line = json.dumps(record, sort_keys=True)
    self._records.append(json.loads(line))
    if self.is_writer:
      try:
        with open(self._metrics_path, "a", encoding="utf-8") as file:
          file.write(line + "\n")
      except OSError as error:
        raise WriteError(
          f"Could not write {self._metrics_path}", error
        ) from error
    self.print(", ".join(_format(key, value) for key, value in record.items()))
    self._timed = [0, 0.0]
    self._clock = time.perf_counter()

  # Checkpoints.

  def save(self, step: int, state: Any, progress: dict[str, Any]) -> None:
    """Writes a checkpoint and waits until it is complete.

    Raises:
      NonFiniteLossError: If a pending loss or the parameters are not finite
        (nothing is written then).
      WriteError: If the checkpoint cannot be written (a full disk, no
        permission); the earlier checkpoints stay intact.
      RunStopped: After writing, if a stop signal arrived.
    """
    self._fetch(timed=False)
    if not train_state_lib.all_finite(state.params):
      raise NonFiniteLossError(
        step, "The parameters hold NaN or infinite values"
      )
    progress = {
      **progress,
      "metrics_records": len(self._records),
      "sums": self._sums,
      "count": self._count,
    }
    folder = self.out_dir / CHECKPOINT_DIR
    try:
      with _quiet_if_it_fails():
        self._checkpoints.save(
          step,
          args=ocp.args.Composite(
            **{
              _STATE_ITEM: ocp.args.StandardSave(state),
              _PROGRESS_ITEM: ocp.args.JsonSave(progress),
            }
          ),
          force=True,
        )
        self._checkpoints.wait_until_finished()
    # Orbax writes into a temporary folder and renames it when complete, so a
    # save that fails leaves the earlier checkpoints as they were.
    except (Exception, asyncio.CancelledError) as error:
      raise WriteError(
        f"Could not save the checkpoint at step {step} in {folder}", error
      ) from error
    self._clock = time.perf_counter()
    if self._stop_signal is not None:
      raise RunStopped(self._stop_signal, step, self.out_dir)
