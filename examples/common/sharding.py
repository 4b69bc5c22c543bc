"""Data parallelism over a one-axis device mesh, optionally fully sharded.

The training scripts split each batch along its first axis over a mesh axis
named :data:`DATA_AXIS`. By default the model and optimizer state are
replicated on every device; under ``jax.jit`` XLA then computes each device's
share of the batch and all-reduces the gradients (and batch-norm statistics),
so the result is the same as on one device up to floating-point summation
order. With fully sharded data parallelism (:func:`param_shardings` with
``fsdp=True``) each parameter and its optimizer moments are split over the
same axis instead, and XLA gathers them where the computation needs them.

With several processes (hosts) after :func:`jax.distributed.initialize`, the
mesh spans the devices of all of them; each process feeds only the rows of a
global batch that its own devices hold (:func:`local_rows`), and
:func:`put_batch` assembles them into one global array with
:func:`jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
"""Name of the mesh axis that batches are split over."""


def make_data_mesh(num_devices: int | None = None) -> Mesh:
  """Builds a one-axis mesh named :data:`DATA_AXIS`.

  Args:
    num_devices: Use the first ``num_devices`` of :func:`jax.devices`; ``None``
      uses all of them (all processes' devices in a multi-process run).

  Returns:
    The mesh.

  Raises:
    ValueError: If ``num_devices`` is not in ``[1, len(jax.devices())]``, or
      is given in a multi-process run (where every device must take part).
  """
  devices = jax.devices()
  if num_devices is None:
    return Mesh(np.asarray(devices), (DATA_AXIS,))
  if isinstance(num_devices, bool) or not 1 <= num_devices <= len(devices):
    raise ValueError(
      f"num_devices must be between 1 and the {len(devices)} available "
      f"devices, got {num_devices!r}."
    )
  if jax.process_count() > 1:
    raise ValueError(
      "num_devices cannot be set in a multi-process run: the mesh must span "
      "every process's devices. Leave it unset."
    )
  return Mesh(np.asarray(devices[:num_devices]), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding that splits an array's first axis over :data:`DATA_AXIS`."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding that keeps a full copy of an array on every device."""
  return NamedSharding(mesh, PartitionSpec())


def param_shardings(params, mesh: Mesh, *, fsdp: bool):
  """Where each parameter lives: replicated, or split over :data:`DATA_AXIS`.

  With ``fsdp``, an array is split along its largest dimension that divides
  evenly over the mesh's devices (the first such, if several are equally
  large); arrays with no such dimension (biases of odd sizes, scalars) stay
  replicated.

  Args:
    params: A pytree of arrays or :class:`jax.ShapeDtypeStruct`.
    mesh: The data mesh.
    fsdp: Whether to shard at all.

  Returns:
    A pytree of :class:`~jax.sharding.NamedSharding` of the same structure.
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
  """The most bytes that one device holds of the arrays of ``tree``.

  Args:
    tree: A pytree of :class:`jax.Array`, or of :class:`jax.ShapeDtypeStruct`
      with shardings (as :func:`jax.eval_shape` returns them).

  Returns:
    The largest, over the devices of the arrays' shardings, of the summed
    sizes of the shards that device holds.
  """
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
  """Checks that a global batch splits evenly over the mesh's devices.

  Args:
    batch_size: The global batch size.
    mesh: The data mesh.
    what: How to name the batch size in the error message.

  Raises:
    ValueError: If ``batch_size`` is not a positive multiple of the number of
      devices.
  """
  num_devices = mesh.devices.size
  if batch_size < 1 or batch_size % num_devices:
    raise ValueError(
      f"The {what} ({batch_size}) must be a positive multiple of the number "
      f"of devices ({num_devices}) so that every device gets the same share; "
      f"use e.g. {max(1, round(batch_size / num_devices)) * num_devices}."
    )


def local_rows(mesh: Mesh, global_batch_size: int) -> np.ndarray:
  """The rows of a global batch that this process's devices hold, in order.

  Args:
    mesh: The data mesh.
    global_batch_size: Size of the global batch.

  Returns:
    Increasing ``int64`` row indices; all rows in a single-process run.
  """
  index_map = batch_sharding(mesh).addressable_devices_indices_map(
    (global_batch_size,)
  )
  starts_stops = sorted(
    {
      (
        index[0].start or 0,
        global_batch_size if index[0].stop is None else index[0].stop,
      )
      for index in index_map.values()
    }
  )
  return np.concatenate(
    [np.arange(start, stop) for start, stop in starts_stops]
  ).astype(np.int64)


def put_batch(mesh: Mesh, local_batch: Any, global_batch_size: int) -> Any:
  """Assembles this process's rows of a batch into global sharded arrays.

  Args:
    mesh: The data mesh.
    local_batch: A pytree of numpy arrays whose first axis holds the rows
      :func:`local_rows` returns, in that order.
    global_batch_size: Size of the global batch.

  Returns:
    The same pytree of :class:`jax.Array` of leading size
    ``global_batch_size``, sharded by :func:`batch_sharding`.
  """
  sharding = batch_sharding(mesh)

  def put(array: np.ndarray) -> jax.Array:
    return jax.make_array_from_process_local_data(
      sharding, array, (global_batch_size, *array.shape[1:])
    )

  return jax.tree.map(put, local_batch)


def replicate(mesh: Mesh, tree: Any) -> Any:
  """Places a copy of every array of ``tree`` on every device of ``mesh``.

  Host (numpy) arrays are copied in with :func:`jax.make_array_from_callback`,
  which also works when the mesh spans several processes (each process must
  then pass the same values); device arrays are moved with
  :func:`jax.device_put`.

  Args:
    mesh: The data mesh.
    tree: A pytree of numpy or JAX arrays.

  Returns:
    The pytree of replicated :class:`jax.Array`.
  """
  sharding = replicated_sharding(mesh)

  def put(leaf: Any) -> jax.Array:
    if isinstance(leaf, jax.Array):
      return jax.device_put(leaf, sharding)
    array = np.asarray(leaf)
    return jax.make_array_from_callback(
      array.shape, sharding, lambda index: array[index]
    )

  return jax.tree.map(put, tree)
