"""A run's Orbax checkpoints, and restoring the newest one that is intact.

Orbax writes each checkpoint into a temporary folder and renames it into
place when complete, so a crash or a failed save leaves the earlier ones as
they were. A checkpoint that still does not restore (files cut short by a
full disk or an interrupted copy, metadata missing) is moved aside by
:func:`restore_newest_intact`, which restores the one before without letting
Orbax flood the terminal (:mod:`examples.common.quiet_orbax`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
import shutil
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from examples.common.quiet_orbax import quiet_orbax
from examples.common.run_folder import WriteError, one_line

T = TypeVar("T")


class DamagedCheckpointsError(RuntimeError):
  """Raised on resume when checkpoints exist but none restores completely."""


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
    steps = [str(damaged.step) for damaged in self.damaged]
    steps = steps[0] if one else f"{', '.join(steps[:-1])} and {steps[-1]}"
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
      with quiet_orbax():
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
    DamagedCheckpoint(s, one_line(error), moved.get(s), error)
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


class RunCheckpoints:
  """The checkpoints of one run: each holds the training state and a JSON
  dict of host-side progress (data position, scheduler state, counts).

  In a multi-process run every process must call every method.

  Args:
    directory: Orbax's folder (``<run>/checkpoints``); created if missing.
    damaged_dir: Where damaged checkpoints are moved, outside ``directory``.
    keep: How many of the latest checkpoints to keep.
  """

  def __init__(
    self, directory: pathlib.Path, damaged_dir: pathlib.Path, keep: int
  ):
    self.directory = directory
    self._damaged_dir = damaged_dir
    with quiet_orbax():  # it reads each step's metadata
      self._manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(
          max_to_keep=keep,
          enable_async_checkpointing=False,
          cleanup_tmp_directories=True,
          create=True,
        ),
      )

  def save(self, step: int, state: Any, progress: dict[str, Any]) -> None:
    """Writes the checkpoint of ``step`` and waits until it is complete.

    Raises:
      WriteError: If it cannot be written (a full disk, no permission); the
        earlier checkpoints stay intact.
    """
    try:
      with quiet_orbax():
        self._manager.save(
          step,
          args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            progress=ocp.args.JsonSave(progress),
          ),
          force=True,
        )
        self._manager.wait_until_finished()
    except (Exception, asyncio.CancelledError) as error:
      raise WriteError(
        f"Could not save the checkpoint at step {step} in {self.directory}",
        error,
      ) from error

  def restore_newest(
    self,
    state: Any,
    check_progress: Callable[[dict[str, Any]], Any],
    *,
    move_if_none_intact: bool,
  ) -> RestoreOutcome[tuple[Any, dict[str, Any]]]:
    """Restores the newest intact checkpoint (see :func:`restore_newest_intact`).

    Args:
      state: A freshly initialised state, which gives the restored arrays
        their structure, dtypes and shardings.
      check_progress: Raises if a checkpoint's progress lacks what resuming
        reads; such a checkpoint counts as damaged.
      move_if_none_intact: Whether to move the checkpoints aside when none
        restores.

    Returns:
      The outcome, whose ``restored`` is ``(state, progress)``.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)

    def restore_step(step: int) -> tuple[Any, dict[str, Any]]:
      restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract),
          progress=ocp.args.JsonRestore(),
        ),
      )
      progress = dict(restored["progress"])
      check_progress(progress)
      return restored["state"], progress

    return restore_newest_intact(
      self._manager,
      restore_step,
      self._damaged_dir,
      move_if_none_intact=move_if_none_intact,
    )

  def close(self) -> None:
    """Releases the checkpoint manager."""
    self._manager.close()
