"""Tests of the batched runs (``benchmarks/reproduce/runs.py``)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from benchmarks.reproduce import orchestration, runs
from benchmarks.reproduce.presets import Arm
from examples.common import optimizers
from tests.benchmarks.conftest import SINGLE, VMAPPED


def test_adafactor_multiplier_is_injected(mesh):
  arm = Arm("adafactor", "adafactor")
  # The protocol's rate is ignored: Adafactor's multiplier starts at 1...
  assert orchestration.protocol_rate(arm, 1e-4) == 1.0
  # ...unless the run sets it, as a sweep does. A tiny model compiles fast;
  # the experiments' groups initialise their runs with the same BatchedRuns.
  batched = runs.BatchedRuns(
    lambda rngs: nnx.Linear(3, 2, rngs=rngs),
    [runs.RunSpec(arm, 0.5, 1), runs.RunSpec(arm, 0.25, 2)],
    mesh,
    run_batch=1,
  )
  assert batched.slices == (slice(0, 1), slice(1, 2))
  np.testing.assert_allclose(batched.learning_rates(), [0.5, 0.25])
  batched.set_learning_rates([0.125, 0.25])
  np.testing.assert_allclose(batched.learning_rates(), [0.125, 0.25])
  with pytest.raises(ValueError, match="one learning rate per run"):
    batched.set_learning_rates([0.1])
  assert batched.run_state(1).params["kernel"].shape == (3, 2)


def test_batched_runs_reject_mixed_arms_and_repeated_runs():
  adam = runs.RunSpec(Arm("adam", "adam"), 1e-3, 0)
  with pytest.raises(ValueError, match="share one arm"):
    runs.check_runs([adam, runs.RunSpec(Arm("sgd", "sgd"), 1e-3, 0)])
  with pytest.raises(ValueError, match="repeated"):
    runs.check_runs([adam, adam])
  with pytest.raises(ValueError, match="at least one run"):
    runs.check_runs([])
  with pytest.raises(ValueError, match="run_batch"):
    dataclasses.replace(SINGLE, run_batch=0)
  assert adam.run_id == "adam/lr=0.001/seed=0"
  assert runs.Execution.for_platform("cpu") == SINGLE
  assert runs.Execution.for_platform("gpu") == VMAPPED
  assert runs.Execution.for_platform("cpu", 4).run_batch == 4


def test_runs_of_an_arm_share_one_optimizer_and_keep_their_rate_in_the_state(
  mesh,
):
  adam, sgd = Arm("adam", "adam"), Arm("sgd", "sgd")
  constant, cosine = optimizers.Schedule(), optimizers.Schedule("cosine", 10)
  # One object (and so one `update`, on which the jit caches key) per arm
  # and schedule.
  shared = runs.make_arm_optimizer(adam, constant)
  assert runs.make_arm_optimizer(Arm("adam", "adam"), constant) is shared
  for other in (
    runs.make_arm_optimizer(sgd, constant),
    runs.make_arm_optimizer(adam, cosine),
  ):
    assert other is not shared and other.update is not shared.update
  # Two runs of the arm at different rates: the same update function, their
  # rate in the state, so one gradient gives updates in the rates' ratio.
  updates = []
  for rate in (0.5, 0.25):
    _, state, update = runs.init_run_state(
      lambda rngs: nnx.Linear(3, 2, rngs=rngs),
      runs.RunSpec(adam, rate, 0),
      mesh,
    )
    assert update is shared.update
    gradient = jax.tree.map(jnp.ones_like, state.params)
    updates.append(update(gradient, state.opt_state, state.params)[0])
  first, second = (jax.tree.leaves(u) for u in updates)
  for a, b in zip(first, second, strict=True):
    np.testing.assert_allclose(a, 2 * b, rtol=1e-6)
    assert not np.allclose(a, b)
  assert runs.make_arm_optimizer(adam, constant) is shared
