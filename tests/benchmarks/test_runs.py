"""Tests of the batched runs (``benchmarks/reproduce/runs.py``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from flax import nnx

from benchmarks.reproduce import orchestration, runs
from benchmarks.reproduce.presets import Arm
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
