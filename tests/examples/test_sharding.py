"""The data-parallel mesh helpers.

The test process has eight CPU devices (see the repository's conftest.py).
Training on one device against eight is tested in test_training.py, where it
shares compiled functions with the other MinGPT runs.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from examples.common import sharding


def test_mesh_spans_all_or_the_first_devices():
  assert jax.device_count() == 8
  mesh = sharding.make_data_mesh()
  assert mesh.axis_names == (sharding.DATA_AXIS,)
  assert list(mesh.devices) == jax.devices()
  assert list(sharding.make_data_mesh(2).devices) == jax.devices()[:2]


@pytest.mark.parametrize("num_devices", [0, 9])
def test_mesh_size_out_of_range_is_rejected(num_devices):
  with pytest.raises(ValueError, match="between 1 and the 8 available"):
    sharding.make_data_mesh(num_devices)


def test_batch_size_must_be_a_multiple_of_devices():
  mesh = sharding.make_data_mesh()
  sharding.check_batch_size(16, mesh)
  with pytest.raises(
    ValueError, match=r"\(12\) must be a positive multiple of"
  ):
    sharding.check_batch_size(12, mesh)


def test_put_batch_splits_rows_over_devices():
  mesh = sharding.make_data_mesh(4)
  rows = sharding.local_rows(mesh, 8)
  np.testing.assert_array_equal(rows, np.arange(8))
  images = np.arange(8 * 3).reshape(8, 3)
  labels = np.arange(8)
  put_images, put_labels = sharding.put_batch(mesh, (images, labels), 8)
  assert put_images.sharding.spec == PartitionSpec(sharding.DATA_AXIS)
  assert len(put_images.addressable_shards) == 4
  for shard in put_images.addressable_shards:
    assert shard.data.shape == (2, 3)
    np.testing.assert_array_equal(shard.data, images[shard.index])
  np.testing.assert_array_equal(put_labels, labels)


def test_replicate_copies_to_every_device():
  mesh = sharding.make_data_mesh()
  host, device = sharding.replicate(mesh, (np.arange(5), jax.numpy.ones(2)))
  for array in (host, device):
    assert array.sharding.is_fully_replicated
    assert len(array.addressable_shards) == 8
  np.testing.assert_array_equal(host, np.arange(5))


def test_fsdp_splits_the_largest_divisible_axis_and_replicates_the_rest():
  mesh = sharding.make_data_mesh()
  params = {
    "kernel": jax.ShapeDtypeStruct((16, 64), np.float32),
    "tall": jax.ShapeDtypeStruct((24, 3), np.float32),
    "bias": jax.ShapeDtypeStruct((65,), np.float32),
    "scalar": jax.ShapeDtypeStruct((), np.float32),
  }
  shardings = sharding.param_shardings(params, mesh, fsdp=True)
  assert shardings["kernel"].spec == PartitionSpec(None, sharding.DATA_AXIS)
  assert shardings["tall"].spec == PartitionSpec(sharding.DATA_AXIS, None)
  assert shardings["bias"].is_fully_replicated
  assert shardings["scalar"].is_fully_replicated
  replicated = sharding.param_shardings(params, mesh, fsdp=False)
  assert all(s.is_fully_replicated for s in replicated.values())


def test_bytes_per_device_follows_the_shardings():
  mesh = sharding.make_data_mesh()
  shape = jax.ShapeDtypeStruct((16, 64), np.float32)
  split = sharding.param_shardings({"w": shape}, mesh, fsdp=True)["w"]
  sharded = jax.device_put(np.zeros((16, 64), np.float32), split)
  replicated = jax.device_put(
    np.zeros(5, np.float32), sharding.replicated_sharding(mesh)
  )
  assert sharding.bytes_per_device(sharded) == 16 * 64 * 4 // 8
  assert (
    sharding.bytes_per_device([sharded, replicated]) == 16 * 64 * 4 // 8 + 20
  )
