"""A run's Orbax checkpoints, and restoring the newest one that is intact."""

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
  """A checkpoint that did not restore; ``error`` None: it failed elsewhere."""

  step: int
  cause: str  # in one line
  moved_to: pathlib.Path | None  # None if left in place
  error: BaseException | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True)
class RestoreOutcome(Generic[T]):
  """What :func:`restore_newest_intact` found."""

  directory: pathlib.Path  # the checkpoint manager's folder
  step: int | None  # the step restored, or None
  restored: T | None  # what ``restore_step`` returned for it, or None
  damaged: tuple[DamagedCheckpoint, ...]  # newest first

  def describe(self) -> str:
    """One line on the damaged checkpoints and the step restored, or ''."""
    if not self.damaged:
      return ""
    one = len(self.damaged) == 1
    *rest, steps = [str(damaged.step) for damaged in self.damaged]
    steps = f"{', '.join(rest)} and {steps}" if rest else steps
    each = "; ".join(f"{d.step}: {d.cause}" for d in self.damaged)
    moved = [d.moved_to for d in self.damaged if d.moved_to is not None]
    if not moved:
      where = f"{'it is' if one else 'they are'} left in place"
    elif one:
      where = f"moved it to {moved[0]}"
    else:
      names = ", ".join(path.name for path in moved)
      where = f"moved them to {moved[0].parent} (as {names})"
    folder = self.directory
    if self.step is None:
      return f"No checkpoint in {folder} restores completely ({each}); {where}."
    causes = self.damaged[0].cause if one else each
    return (
      f"Checkpoint{'' if one else 's'} {steps} in {folder} did not restore "
      f"({causes}); {where}. Resuming from the checkpoint at step {self.step}."
    )


def restore_newest_intact(
  manager: ocp.CheckpointManager,
  restore_step: Callable[[int], T],  # reads every array, or raises
  damaged_dir: str | os.PathLike,  # outside the manager's folder
  *,
  move_if_none_intact: bool = True,
) -> RestoreOutcome[T]:
  """Restores the newest checkpoint that restores completely.

  Even a complete one may not (files cut short); one that fails on any process
  (all call this) is moved to ``damaged_dir/<step>-<UTC time>[-<n>]/``.
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
    except (Exception, asyncio.CancelledError) as caught:  # not an Exception
      error = caught
    failed = error is not None
    if jax.process_count() > 1:  # damaged if it fails on any process
      failed = bool(multihost_utils.process_allgather(np.int32(failed)).any())
    if not failed:
      step, restored = candidate, value
      break
    failures.append((candidate, error))
  moved: dict[int, pathlib.Path] = {}
  if failures and (step is not None or move_if_none_intact):
    moved = _move_aside(directory, [s for s, _ in failures], damaged_dir)
    manager.reload()
  damaged = tuple(
    DamagedCheckpoint(s, one_line(error), moved.get(s), error)
    for s, error in failures
  )
  return RestoreOutcome(directory, step, restored, damaged)


def _move_aside(
  directory: pathlib.Path, steps: list[int], damaged_dir: pathlib.Path
) -> dict[int, pathlib.Path]:
  now = int(time.time())
  if jax.process_count() > 1:  # one name on every process
    now = int(multihost_utils.broadcast_one_to_all(np.int32(now)))
  stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
  targets = {}
  for step in steps:
    target, number = damaged_dir / f"{step}-{stamp}", 0
    while target.exists():
      number += 1
      target = damaged_dir / f"{step}-{stamp}-{number}"
    targets[step] = target
  if jax.process_count() > 1:  # every process named them before any moved
    multihost_utils.sync_global_devices("exadam_damaged_checkpoints_named")
  if jax.process_index() == 0:
    for step, target in targets.items():
      source = directory / str(step)
      try:
        damaged_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(source, target)
      except OSError as error:
        what = f"Could not move the damaged checkpoint {source} to {target}"
        raise WriteError(what, error) from error
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("exadam_damaged_checkpoints_moved")
  return targets


class RunCheckpoints:
  """A run's checkpoints of state and JSON progress; all processes call all."""

  def __init__(
    self, directory: pathlib.Path, damaged_dir: pathlib.Path, keep: int
  ):
    self.directory = directory
    self._damaged_dir = damaged_dir
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      enable_async_checkpointing=False,
      cleanup_tmp_directories=True,  # what a failed save left
      create=True,
    )
    with quiet_orbax():  # it reads each step's metadata
      self._manager = ocp.CheckpointManager(directory, options=options)

  def save(self, step: int, state: Any, progress: dict[str, Any]) -> None:
    """Writes the checkpoint of ``step``; a WriteError leaves earlier ones."""
    what = f"Could not save the checkpoint at step {step} in {self.directory}"
    args = ocp.args.Composite(
      state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress)
    )
    try:
      with quiet_orbax():
        self._manager.save(step, args=args, force=True)
        self._manager.wait_until_finished()
    except (Exception, asyncio.CancelledError) as error:
      raise WriteError(what, error) from error

  def restore_newest(
    self,
    state: Any,
    check_progress: Callable[[dict[str, Any]], Any],  # if it raises: damaged
    *,
    move_if_none_intact: bool,
  ) -> RestoreOutcome[tuple[Any, dict[str, Any]]]:
    """Restores via :func:`restore_newest_intact`; ``state`` gives shardings."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    args = ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), progress=ocp.args.JsonRestore()
    )

    def restore_step(step: int) -> tuple[Any, dict[str, Any]]:
      restored = self._manager.restore(step, args=args)
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
