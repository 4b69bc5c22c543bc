"""The scaffolding around both training loops: examples.common.training_run."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from examples.common import config as config_lib
from examples.common import optimizers, training_run


@dataclasses.dataclass(frozen=True)
class _Model:
  width: int = 2


@dataclasses.dataclass(frozen=True)
class _Config(config_lib.RunConfig):
  model: _Model = _Model()
  steps: int = 4


class _Tree(NamedTuple):
  """A stand-in for a TrainState: the scaffolding reads only ``params``."""

  params: Any
  opt_state: Any
  step: jax.Array


def _tree_state(scale: float) -> _Tree:
  params = {"w": jnp.full((3, 2), scale), "b": jnp.arange(2.0)}
  optimizer = optimizers.make_optimizer("adam", 1e-3)
  opt_state = optimizer.init(params)
  _, opt_state = optimizer.update(
    jax.tree.map(jnp.ones_like, params), opt_state, params
  )
  return _Tree(params=params, opt_state=opt_state, step=jnp.int32(7))


def _run(tmp_path, **overrides) -> training_run.TrainingRun:
  config = _Config(**{"out_dir": str(tmp_path / "run"), **overrides})
  return training_run.TrainingRun(
    config,
    config.run_dir("test"),
    total_steps=4,
    unit="examples",
    examples_per_step=8,
    resumable=config.RESUMABLE,
    progress_bar=False,
    log_every=2,
  )


def _assert_trees_equal(got, expected):
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for got_leaf, expected_leaf in zip(
    jax.tree.leaves(got), jax.tree.leaves(expected), strict=True
  ):
    assert got_leaf.dtype == expected_leaf.dtype
    np.testing.assert_array_equal(got_leaf, expected_leaf)


def test_config_json_holds_the_resolved_run_folder_and_nested_settings(
  tmp_path,
):
  with _run(tmp_path):
    pass
  saved = json.loads((tmp_path / "run" / "config.json").read_text())
  assert saved["out_dir"] == str((tmp_path / "run").absolute())
  assert saved["model"] == {"width": 2}
  assert saved["lr"] == 1e-4


def test_default_run_folder_is_recorded_resolved(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = _Config()
  with training_run.TrainingRun(
    config,
    config.run_dir("test"),
    total_steps=1,
    unit="examples",
    examples_per_step=1,
    resumable=config.RESUMABLE,
    progress_bar=False,
  ):
    pass
  folder = tmp_path / "runs" / "test-paper-exadam-seed1234"
  saved = json.loads((folder / "config.json").read_text())
  assert saved["out_dir"] == str(folder.absolute())


def test_save_restore_round_trip_and_records_after_the_checkpoint_are_dropped(
  tmp_path,
):
  state = _tree_state(2.0)
  with _run(tmp_path) as run:
    restored, progress = run.restore(_tree_state(0.0))
    assert progress == {}
    run.record({"step": 0, "val_loss": 3.0})
    run.save(2, state, {"step": 2})
    run.record({"step": 3, "val_loss": 2.0})  # after the checkpoint
  lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [0, 3]
  with _run(tmp_path, resume=True) as run:
    restored, progress = run.restore(_tree_state(0.0))
    _assert_trees_equal(restored, state)
    assert progress["step"] == 2
    assert [record["step"] for record in run.records] == [0]
  lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [0]
  # The completed checkpoint is a plain folder: the temporary one was renamed.
  assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["2"]


def test_keeps_the_latest_checkpoints(tmp_path):
  with _run(tmp_path, keep_checkpoints=2) as run:
    run.restore(_tree_state(0.0))
    for step in (1, 2, 3):
      run.save(step, _tree_state(float(step)), {"step": step})
  steps = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
  assert steps == ["2", "3"]


def test_new_run_refuses_a_folder_holding_a_run(tmp_path):
  with _run(tmp_path) as run:
    run.restore(_tree_state(0.0))
    run.record({"step": 0})
  with pytest.raises(FileExistsError, match="--resume"):
    _run(tmp_path)


def test_resume_refuses_changed_settings_but_allows_resumable_ones(tmp_path):
  with _run(tmp_path) as run:
    run.restore(_tree_state(0.0))
    run.record({"step": 0})
  with pytest.raises(ValueError, match=r"lr: 0\.0001 -> 0\.001.*model\.width"):
    _run(tmp_path, resume=True, lr=1e-3, model=_Model(3))
  with _run(tmp_path, resume=True, keep_checkpoints=5, progress=False):
    pass


def test_non_finite_loss_stops_before_a_checkpoint(tmp_path):
  with _run(tmp_path) as run:
    run.restore(_tree_state(0.0))
    run.log_step({"loss": jnp.float32(1.0)})
    run.log_step({"loss": jnp.float32(jnp.nan)})
    with pytest.raises(training_run.NonFiniteLossError, match="at step 2"):
      run.save(2, _tree_state(1.0), {"step": 2})
  assert not any((tmp_path / "run" / "checkpoints").iterdir())


def test_non_finite_parameters_are_never_saved(tmp_path):
  with _run(tmp_path) as run:
    run.restore(_tree_state(0.0))
    with pytest.raises(training_run.NonFiniteLossError, match="parameters"):
      run.save(1, _tree_state(float("inf")), {"step": 1})


def test_throughput_and_first_step_time_are_recorded(tmp_path):
  with _run(tmp_path) as run:
    run.restore(_tree_state(0.0))
    for _ in range(5):  # the first, then two full fetches of two steps
      run.log_step({"loss": jnp.float32(1.0)})
    run.record({"step": 5})
    run.log_step({"loss": jnp.float32(1.0)})
    run.log_step({"loss": jnp.float32(1.0)})
    run.record({"step": 7})
  first, second = run.records
  assert first["first_step_seconds"] > 0
  assert first["examples_per_second"] > 0
  assert "first_step_seconds" not in second
  assert second["examples_per_second"] > 0


def test_running_means_survive_a_resume(tmp_path):
  with _run(tmp_path) as run:
    run.restore(_tree_state(0.0))
    run.log_step({"loss": jnp.float32(1.0), "correct": jnp.int32(3)})
    run.log_step({"loss": jnp.float32(2.0), "correct": jnp.int32(5)})
    run.save(2, _tree_state(1.0), {"step": 2})
  with _run(tmp_path, resume=True) as run:
    run.restore(_tree_state(0.0))
    run.log_step({"loss": jnp.float32(6.0), "correct": jnp.int32(1)})
    means = run.running_means()
  assert means == {"loss": 3.0, "correct": 3.0}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_saves_at_the_current_step_then_stops(tmp_path, signum):
  with _run(tmp_path) as run:
    run.restore(_tree_state(0.0))
    os.kill(os.getpid(), signum)
    assert run.stop_requested
    with pytest.raises(training_run.RunStopped, match="--resume") as stopped:
      run.save(3, _tree_state(1.0), {"step": 3})
  assert stopped.value.exit_status == 128 + signum
  assert stopped.value.step == 3
  assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["3"]
  # The previous handlers are back once the run is closed.
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_signal_stops_at_once(tmp_path):
  with _run(tmp_path) as run, pytest.raises(KeyboardInterrupt):
    run.restore(_tree_state(0.0))
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)


def test_a_damaged_metrics_file_is_reported(tmp_path):
  folder = tmp_path / "run"
  folder.mkdir()
  (folder / "metrics.jsonl").write_text('{"step": 0}\nnot json\n')
  with pytest.raises(ValueError, match="line 2, is not JSON"):
    _run(tmp_path, resume=True)


def test_flatten_and_unflatten_are_inverse():
  nested = {"a": 1, "model": {"n": 2, "dtype": "float32"}}
  flat = training_run.flatten(nested)
  assert flat == {"a": 1, "model.n": 2, "model.dtype": "float32"}
  assert training_run.unflatten(flat) == nested
