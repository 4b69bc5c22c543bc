"""What lets a stopped reproduction continue where it stopped.

A reproduction folder (``--out``) is resumable at every moment:

* ``run_info.json`` records the command's options and each *stage* (a sweep
  stage, or the final runs of an experiment) as it finishes; a finished
  stage is never run again.
* While a stage runs, each group of runs (one arm) writes an Orbax
  checkpoint after every chunk it trains (an epoch, or an evaluation
  interval), once that chunk's records are in the metrics file:
  ``checkpoints/<stage>/<arm>/<chunks done>/`` holds the runs' batched
  states and the group's host-side progress (chunks and steps done, plateau
  schedulers, the stage's elapsed time). Orbax writes each checkpoint into a
  temporary folder and renames it when complete, so a kill leaves the
  previous one intact.
* Started again with the same options, a stage restores each group from its
  newest checkpoint that restores completely (:func:`restore_group`), drops
  the records that the restored states have not yet produced
  (:func:`keep_restored_records`; a last line cut short by a kill goes with
  them) and trains on from there. The continued runs compute exactly what an
  uninterrupted run would have.

Once a stage has finished its checkpoints are deleted: they are the runs'
states mid-stage, and the records hold everything the report reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import orbax.checkpoint as ocp

from benchmarks.reproduce import records as records_lib
from examples.common import training_run

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints-damaged"
"""Where checkpoints that did not restore are moved (never deleted)."""
_STATE_ITEM = "state"
_PROGRESS_ITEM = "progress"
_KEEP = 2
"""Checkpoints kept per group: the newest may be damaged by a crash."""


def stage_dir(out_dir: pathlib.Path, stage: str) -> pathlib.Path:
  """The checkpoint folder of one stage."""
  return out_dir / CHECKPOINT_DIR / stage


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
  """Holds SIGTERM and SIGINT until the block ends, then delivers them.

  A second stop signal, which stops at once, would otherwise interrupt Orbax
  mid-save and leave its background threads failing at exit; a save takes a
  fraction of a second.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  received: list[int] = []
  previous = {
    signum: signal.signal(signum, lambda number, frame: received.append(number))
    for signum in (signal.SIGTERM, signal.SIGINT)
  }
  try:
    yield
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
    if received:
      signal.raise_signal(received[0])


class GroupCheckpoints:
  """The checkpoints of one group of runs (one arm) in one stage.

  Args:
    out_dir: The reproduction folder.
    stage: The stage's name.
    arm: The group's arm label.
  """

  def __init__(self, out_dir: pathlib.Path, stage: str, arm: str):
    out_dir = pathlib.Path(out_dir).absolute()
    self.folder = stage_dir(out_dir, stage) / arm
    self._damaged_dir = out_dir / DAMAGED_DIR / stage / arm
    self._manager = ocp.CheckpointManager(
      self.folder,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=_KEEP,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
        create=True,
      ),
    )

  def save(self, group: Any, stage_seconds: float) -> None:
    """Saves ``group`` after its latest chunk and waits until it is written.

    Args:
      group: A run group (see :class:`benchmarks.reproduce.schedule.RunGroup`).
      stage_seconds: Wall time the stage has used so far.
    """
    progress = {**group.host_state(), "stage_seconds": stage_seconds}
    with _signals_held():
      self._manager.save(
        group.chunks_done,
        args=ocp.args.Composite(
          **{
            _STATE_ITEM: ocp.args.StandardSave(group.batched.states),
            _PROGRESS_ITEM: ocp.args.JsonSave(progress),
          }
        ),
        force=True,
      )
      self._manager.wait_until_finished()

  def restore(self, group: Any) -> dict[str, Any] | None:
    """Restores ``group`` from its newest complete checkpoint.

    A checkpoint that fails to restore (cut short, metadata missing) is
    moved aside into ``checkpoints-damaged/<stage>/<arm>/`` and the one
    before it is tried (see
    :func:`examples.common.training_run.restore_newest_intact`).

    Args:
      group: A freshly built group, whose states give the restored arrays
        their structure, dtypes and shardings.

    Returns:
      The restored host-side progress (with ``stage_seconds``), or None if
      no checkpoint restored (the group then starts from scratch).
    """
    abstract = jax.tree.map(
      ocp.utils.to_shape_dtype_struct, group.batched.states
    )

    def restore_step(step: int) -> Any:
      return self._manager.restore(
        step,
        args=ocp.args.Composite(
          **{
            _STATE_ITEM: ocp.args.StandardRestore(abstract),
            _PROGRESS_ITEM: ocp.args.JsonRestore(),
          }
        ),
      )

    outcome = training_run.restore_newest_intact(
      self._manager, restore_step, self._damaged_dir
    )
    if outcome.damaged:
      print(outcome.describe(), flush=True)
    if outcome.restored is None:
      return None
    progress = dict(outcome.restored[_PROGRESS_ITEM])
    group.batched.states = list(outcome.restored[_STATE_ITEM])
    group.load_host_state(progress)
    return progress

  def close(self) -> None:
    """Releases the checkpoint manager."""
    self._manager.close()


def keep_restored_records(
  path: pathlib.Path, positions: dict[str, int | None]
) -> None:
  """Rewrites a metrics file without what restored runs have yet to produce.

  Args:
    path: The stage's metrics file (it may hold other stages' runs too).
    positions: Per run id of the stage, the steps its restored state has
      done, or None for a run that starts from scratch.

  The evaluation records of a restored run up to its position stay; its
  later records and its ``final`` record go, as does every record of a run
  that starts again. Records of runs outside the stage are kept as they are.
  """
  if not path.exists():
    return
  kept = []
  for record in records_lib.read_records(path):
    run_id = record.get("run_id")
    if run_id not in positions:
      kept.append(record)
      continue
    position = positions[run_id]
    if (
      position is not None
      and record.get("kind") == records_lib.EVAL
      and record["step"] <= position
    ):
      kept.append(record)
  temporary = path.with_name(f".{path.name}.tmp")
  with open(temporary, "w", encoding="utf-8") as file:
    file.writelines(json.dumps(r, sort_keys=True) + "\n" for r in kept)
  os.replace(temporary, path)


def delete_stage(out_dir: pathlib.Path, stage: str) -> None:
  """Deletes the checkpoints of a finished stage."""
  shutil.rmtree(stage_dir(out_dir, stage), ignore_errors=True)


def changed_options(
  saved: dict[str, Any], current: dict[str, Any], ignored: Sequence[str] = ()
) -> list[str]:
  """Options whose value differs between a saved and the current command."""
  return sorted(
    name
    for name in set(saved) | set(current)
    if name not in ignored and saved.get(name) != current.get(name)
  )
