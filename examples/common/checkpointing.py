"""Saving and restoring training runs with Orbax.

A checkpoint holds two items: ``state``, the pytree of arrays (model
parameters and other model state, optimizer state, step, RNG key), and
``progress``, a JSON dict of host-side bookkeeping (data position, scheduler
state, number of metrics records).

Orbax writes each step into a temporary folder
(``<step>.orbax-checkpoint-tmp-<timestamp>``) and renames it to ``<step>``
only once everything is written (``AtomicRenameTemporaryPath``, its default on
local and network file systems; on Google Cloud Storage it marks completed
steps with a ``commit_success.txt`` file instead). A crash mid-save therefore
leaves no half-written step among those that :meth:`Checkpointer.latest_step`
sees; leftover temporary folders are deleted when the next run opens the
folder.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

STATE_ITEM = "state"
PROGRESS_ITEM = "progress"


class Checkpointer:
  """Keeps the latest few checkpoints of a run in one folder.

  Saving is synchronous: :meth:`save` returns when the checkpoint is complete
  on disk, so the caller may donate or overwrite the saved arrays right after.

  Args:
    directory: The checkpoint folder (created if missing).
    max_to_keep: How many of the most recent checkpoints to keep.

  Raises:
    ValueError: If ``max_to_keep`` is smaller than 1.
  """

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3):
    if max_to_keep < 1:
      raise ValueError(
        f"max_to_keep must be at least 1 (the latest checkpoint), got "
        f"{max_to_keep!r}."
      )
    self.directory = pathlib.Path(directory).absolute()
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
        create=True,
      ),
    )

  def latest_step(self) -> int | None:
    """The step of the newest complete checkpoint, or None if there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Steps of all complete checkpoints kept, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, progress: dict[str, Any]) -> None:
    """Writes a checkpoint and waits until it is complete.

    Args:
      step: The checkpoint's number (the training step).
      state: Pytree of :class:`jax.Array`.
      progress: JSON-serialisable dict.
    """
    self._manager.save(
      step,
      args=ocp.args.Composite(
        **{
          STATE_ITEM: ocp.args.StandardSave(state),
          PROGRESS_ITEM: ocp.args.JsonSave(progress),
        }
      ),
      force=True,
    )
    self._manager.wait_until_finished()

  def restore(
    self, like: Any, step: int | None = None
  ) -> tuple[Any, dict[str, Any]]:
    """Reads a checkpoint back.

    Args:
      like: A pytree with the structure, shapes, dtypes and shardings of the
        saved state (for example a freshly initialised state); the restored
        arrays get its shardings.
      step: The checkpoint to read; None reads the latest.

    Returns:
      ``(state, progress)``.

    Raises:
      FileNotFoundError: If there is no checkpoint (or not that step).
    """
    if step is None:
      step = self.latest_step()
    if step is None or step not in self._manager.all_steps():
      raise FileNotFoundError(
        f"No checkpoint {'' if step is None else step} in {self.directory}."
      )
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        **{
          STATE_ITEM: ocp.args.StandardRestore(abstract),
          PROGRESS_ITEM: ocp.args.JsonRestore(),
        }
      ),
    )
    return restored[STATE_ITEM], dict(restored[PROGRESS_ITEM])

  def close(self) -> None:
    """Waits for pending work and releases the manager."""
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
