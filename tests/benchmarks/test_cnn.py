"""Tests of the CNN experiment (``benchmarks/reproduce/cnn.py``): its data,
and its batched training loop on the ``smoke`` preset with random images,
where one vmapped, scanned call over two runs must give the same numbers as
one call per run and epoch.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import pytest

from benchmarks.reproduce import cnn, runs
from benchmarks.reproduce.presets import Arm
from examples.cifar10 import data as cifar_data
from examples.cifar10 import train as cnn_train
from tests.benchmarks import conftest
from tests.benchmarks.conftest import SINGLE, SMOKE, VMAPPED


def test_padded_batches_cover_each_example_once():
  # Not covered by tests/examples: the benchmark relies on the padding.
  indices, weights = cnn_train.padded_batches(5, 2, num_batches=4)
  assert indices.shape == weights.shape == (4, 2)
  assert sorted(indices[weights > 0].tolist()) == [0, 1, 2, 3, 4]
  assert weights.sum() == 5
  with pytest.raises(ValueError, match="cannot cover"):
    cnn_train.padded_batches(5, 2, num_batches=2)


def test_cnn_load_limits_the_data_as_the_protocol_asks(smoke_cifar_dir):
  protocol = SMOKE.cnn
  dataset = cnn.load(protocol, str(smoke_cifar_dir), download=False)
  full = cifar_data.load_cifar10(
    str(smoke_cifar_dir), download=False, val_size=protocol.val_size
  )
  assert len(dataset.val_images) == protocol.val_size == 16
  assert len(dataset.train_images) == protocol.max_train_images == 32
  np.testing.assert_array_equal(
    dataset.train_images, full.train_images[: protocol.max_train_images]
  )
  np.testing.assert_array_equal(dataset.val_images, full.val_images)
  np.testing.assert_array_equal(dataset.test_labels, full.test_labels)
  unlimited = cnn.load(
    dataclasses.replace(protocol, max_train_images=None),
    str(smoke_cifar_dir),
    False,
  )
  assert len(unlimited.train_images) == 5 * conftest.CIFAR_IMAGES_PER_FILE - 16


def _random_cifar(seed: int = 0) -> cifar_data.Cifar10:
  rng = np.random.default_rng(seed)

  def split(size):
    images = rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8)
    return images, rng.integers(0, 10, size).astype(np.int32)

  return cifar_data.Cifar10(*split(64), *split(32), *split(32))


def _final_params(group, index):
  return jax.device_get(group.batched.run_state(index).params)


# SGD keeps the trajectories smooth functions of the arithmetic (Adam's first
# steps are signs of the gradient, which floating-point noise can flip), and
# unaugmented random images have no flat regions, hence no tied maxima in max
# pooling whose gradient XLA may route differently in a loop. Still, a vmapped
# convolution sums in another order than a single one, and after a few
# updates at these rates float32 rounding grows to the percent level on some
# CPUs (0.34 relative, measured on an AMD EPYC): the runs are made in
# float64, where the parameters agree to 1e-9.
CNN_EQUALITY_PROTOCOL = dataclasses.replace(
  SMOKE.cnn,
  augment=False,
  model=dataclasses.replace(
    SMOKE.cnn.model, dtype="float64", param_dtype="float64"
  ),
)


def _sgd_runs():
  return [
    runs.RunSpec(Arm("sgd", "sgd"), rate, seed)
    for rate, seed in ((0.05, 3), (0.1, 4))
  ]


# flax's nnx.BatchNorm keeps its running statistics in float32 whatever
# the model's dtype, and assigns this float64 model's statistics to them.
@pytest.mark.filterwarnings(
  "ignore:scatter inputs have incompatible types:FutureWarning"
)
@jax.enable_x64(True)
def test_vmapped_scanned_cnn_runs_equal_single_runs(mesh):
  protocol = CNN_EQUALITY_PROTOCOL
  dataset = _random_cifar()
  groups = {
    name: cnn.CNNRunGroup(_sgd_runs(), protocol, dataset, mesh, execution)
    for name, execution in (("vmapped", VMAPPED), ("single", SINGLE))
  }
  assert groups["vmapped"].steps_per_epoch == 4
  results = {
    name: [group.run_chunk() for _ in range(protocol.epochs)] + [group.finish()]
    for name, group in groups.items()
  }
  keys = (
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
  )
  for vmapped, single in zip(*results.values(), strict=True):
    for a, b in zip(vmapped, single, strict=True):
      assert a["run_id"] == b["run_id"]
      assert (a["kind"], a["epoch"], a["step"]) == (
        b["kind"],
        b["epoch"],
        b["step"],
      )
      for key in keys:
        if key in a:
          # The trainer reduces losses and counts in float32.
          assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
  assert [r["step"] for r in results["single"][1]] == [8, 8]
  for index in (0, 1):
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12),
      _final_params(groups["vmapped"], index),
      _final_params(groups["single"], index),
    )


def test_plateau_lowers_each_runs_rate_in_the_batched_state(mesh):
  # Float32: the float64 equality protocol would need x64, and the rates do
  # not depend on the dtype.
  protocol = dataclasses.replace(SMOKE.cnn, augment=False)
  group = cnn.CNNRunGroup(_sgd_runs(), protocol, _random_cifar(), mesh, SINGLE)
  group.schedulers[0].best = -math.inf  # Run 0 can never improve.
  group.schedulers[1].patience = 10  # Run 1 keeps its rate.
  first = group.run_chunk()
  second = group.run_chunk()
  assert [r["lr"] for r in first] == pytest.approx([0.05, 0.1])
  # Patience 0: each bad epoch of run 0 lowers its rate tenfold.
  assert [r["lr"] for r in second] == pytest.approx([0.005, 0.1])
  np.testing.assert_allclose(
    group.batched.learning_rates(), [0.0005, 0.1], rtol=1e-6
  )
