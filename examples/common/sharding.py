"""Data parallelism over a one-axis device mesh, optionally fully sharded.

Batches are split along their first axis; the model and optimizer state are
replicated (results match one device's up to summation order) or, with FSDP,
split too. A mesh spans every process; each feeds the rows its devices hold.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
"""Name of the mesh axis that batches are split over."""


def make_data_mesh(num_devices: int | None = None) -> Mesh:
  """A one-axis :data:`DATA_AXIS` mesh of the first ``num_devices`` devices.

  None takes all (every process's). ``ValueError`` if the number is out of
  range, or given in a multi-process run (where every device must take part).
  """
  devices = jax.devices()
  if num_devices is not None:
    if isinstance(num_devices, bool) or not 1 <= num_devices <= len(devices):
      raise ValueError(
        f"num_devices must be between 1 and the {len(devices)} available "
        f"devices, got {num_devices!r}."
      )
    if jax.process_count() > 1:
      raise ValueError(
        "num_devices cannot be set in a multi-process run: the mesh must "
        "span every process's devices. Leave it unset."
      )
  return Mesh(np.asarray(devices[:num_devices]), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding that splits an array's first axis over :data:`DATA_AXIS`."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding that keeps a full copy of an array on every device."""
  return NamedSharding(mesh, PartitionSpec())


def param_shardings(params, mesh: Mesh, *, fsdp: bool):
  """The sharding of each leaf of ``params`` (arrays or shape structs).

  With ``fsdp``, leaves are split along their largest dimension that divides
  evenly over the devices (the first of ties); others are replicated.
  """
  size = mesh.shape[DATA_AXIS]

  def sharding_of(leaf) -> NamedSharding:
    shape = tuple(leaf.shape)
    divisible = [axis for axis, n in enumerate(shape) if n % size == 0]
    if not fsdp or size == 1 or not divisible:
      return replicated_sharding(mesh)
    axis = max(divisible, key=lambda axis: (shape[axis], -axis))
    spec = [None] * len(shape)
    spec[axis] = DATA_AXIS
    return NamedSharding(mesh, PartitionSpec(*spec))

  return jax.tree.map(sharding_of, params)


def bytes_per_device(tree) -> int:
  """The most bytes one device holds of ``tree`` (arrays or sharded structs)."""
  totals: dict[Any, int] = {}
  for leaf in jax.tree.leaves(tree):
    itemsize = np.dtype(leaf.dtype).itemsize
    shard_bytes = int(np.prod(leaf.sharding.shard_shape(leaf.shape))) * itemsize
    for device in leaf.sharding.device_set:
      totals[device] = totals.get(device, 0) + shard_bytes
  return max(totals.values(), default=0)


def check_batch_size(
  batch_size: int, mesh: Mesh, what: str = "batch size"
) -> None:
  """ValueError unless ``batch_size`` (the ``what``) splits over the devices."""
  num_devices = mesh.devices.size
  if batch_size < 1 or batch_size % num_devices:
    raise ValueError(
      f"The {what} ({batch_size}) must be a positive multiple of the number "
      f"of devices ({num_devices}) so that every device gets the same share; "
      f"use e.g. {max(1, round(batch_size / num_devices)) * num_devices}."
    )


def local_rows(mesh: Mesh, global_batch_size: int) -> np.ndarray:
  """Increasing ``int64`` indices of the global rows this process holds."""
  index_map = batch_sharding(mesh).addressable_devices_indices_map(
    (global_batch_size,)
  )
  spans = {
    index[0].indices(global_batch_size)[:2] for index in index_map.values()
  }
  return np.concatenate(
    [np.arange(start, stop) for start, stop in sorted(spans)]
  ).astype(np.int64)


def put_batch(mesh: Mesh, local_batch: Any, global_batch_size: int) -> Any:
  """Assembles this process's rows (:func:`local_rows`) into global arrays."""
  sharding = batch_sharding(mesh)

  def put(array: np.ndarray) -> jax.Array:
    return jax.make_array_from_process_local_data(
      sharding, array, (global_batch_size, *array.shape[1:])
    )

  return jax.tree.map(put, local_batch)


def replicate(mesh: Mesh, tree: Any) -> Any:
  """Copies ``tree`` to every device, across processes (same values in each)."""
  sharding = replicated_sharding(mesh)

  def put(leaf: Any) -> jax.Array:
    if isinstance(leaf, jax.Array):
      return jax.device_put(leaf, sharding)
    array = np.asarray(leaf)
    return jax.make_array_from_callback(
      array.shape, sharding, lambda index: array[index]
    )

  return jax.tree.map(put, tree)
