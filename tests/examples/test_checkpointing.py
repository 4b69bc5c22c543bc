"""Checkpoints, the metrics file and the run folder."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from examples.common import checkpointing, metrics, optimizers, run_dir


def _state(scale: float):
  params = {"w": jnp.full((3, 2), scale), "b": jnp.arange(2.0)}
  opt_state = optimizers.make_optimizer("adam", 1e-3).init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  _, opt_state = optimizers.make_optimizer("adam", 1e-3).update(
    grads, opt_state, params
  )
  return {
    "params": params,
    "opt_state": opt_state,
    "step": jnp.int32(7),
    "key": jax.random.key_data(jax.random.key(3)),
  }


def _assert_trees_equal(got, expected):
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for got_leaf, expected_leaf in zip(
    jax.tree.leaves(got), jax.tree.leaves(expected), strict=True
  ):
    assert got_leaf.dtype == expected_leaf.dtype
    np.testing.assert_array_equal(got_leaf, expected_leaf)


def test_save_and_restore_round_trip(tmp_path):
  state = _state(2.0)
  progress = {"epoch": 3, "plateau": {"best": "inf"}, "metrics_records": 3}
  with checkpointing.Checkpointer(tmp_path / "ckpt") as checkpointer:
    assert checkpointer.latest_step() is None
    checkpointer.save(10, state, progress)
    restored, restored_progress = checkpointer.restore(like=_state(0.0))
  _assert_trees_equal(restored, state)
  assert type(restored["opt_state"]) is type(state["opt_state"])
  assert restored_progress == progress
  # The completed step is a plain folder: the temporary one was renamed.
  assert sorted(path.name for path in (tmp_path / "ckpt").iterdir()) == ["10"]


def test_keeps_latest_checkpoints_and_restores_a_chosen_step(tmp_path):
  with checkpointing.Checkpointer(tmp_path, max_to_keep=2) as checkpointer:
    for step in (1, 2, 3):
      checkpointer.save(step, _state(float(step)), {"step": step})
    assert checkpointer.all_steps() == [2, 3]
    assert checkpointer.latest_step() == 3
    restored, progress = checkpointer.restore(like=_state(0.0), step=2)
    assert progress == {"step": 2}
    np.testing.assert_array_equal(restored["params"]["w"], np.full((3, 2), 2.0))
    with pytest.raises(FileNotFoundError, match="No checkpoint 1"):
      checkpointer.restore(like=_state(0.0), step=1)


def test_unfinished_save_is_invisible_and_cleaned_up(tmp_path):
  with checkpointing.Checkpointer(tmp_path) as checkpointer:
    checkpointer.save(1, _state(1.0), {"step": 1})
  # What a crash during the save of step 2 leaves behind.
  leftover = tmp_path / "2.orbax-checkpoint-tmp-1234567890"
  (leftover / "state").mkdir(parents=True)
  with checkpointing.Checkpointer(tmp_path) as checkpointer:
    assert checkpointer.latest_step() == 1
    _, progress = checkpointer.restore(like=_state(0.0))
  assert progress == {"step": 1}
  assert not leftover.exists()


def test_restore_without_checkpoint_fails_clearly(tmp_path):
  with checkpointing.Checkpointer(tmp_path) as checkpointer:
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
      checkpointer.restore(like=_state(0.0))


def test_max_to_keep_must_be_positive(tmp_path):
  with pytest.raises(ValueError, match="max_to_keep"):
    checkpointing.Checkpointer(tmp_path, max_to_keep=0)


def test_metrics_log_appends_reads_back_and_truncates(tmp_path):
  path = tmp_path / "metrics.jsonl"
  log = metrics.MetricsLog(path)
  for step in range(4):
    log.append({"step": step, "loss": 1.0 / (step + 1)})
  assert [record["step"] for record in metrics.MetricsLog(path).records] == [
    0,
    1,
    2,
    3,
  ]
  log.truncate(2)
  assert len(log) == 2
  lines = path.read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [0, 1]
  with pytest.raises(ValueError, match="holds 2 records but the checkpoint"):
    log.truncate(3)


def test_metrics_log_of_other_processes_writes_nothing(tmp_path):
  path = tmp_path / "metrics.jsonl"
  log = metrics.MetricsLog(path, writable=False)
  log.append({"step": 0})
  assert len(log) == 1 and not path.exists()


def test_damaged_metrics_file_is_reported(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 0}\n{"step": 1\n')
  with pytest.raises(ValueError, match="line 2, is not JSON"):
    metrics.MetricsLog(path)


def test_run_dir_refuses_existing_run_and_changed_settings(tmp_path):
  config = {"lr": 1e-4, "epochs": 2, "out_dir": str(tmp_path)}
  folder = run_dir.prepare_run_dir(
    tmp_path, config, resume=False, may_change_on_resume={"epochs"}
  )
  assert json.loads((folder / "config.json").read_text()) == config
  (folder / "metrics.jsonl").write_text('{"step": 0}\n')
  with pytest.raises(FileExistsError, match="--resume"):
    run_dir.prepare_run_dir(
      tmp_path, config, resume=False, may_change_on_resume={"epochs"}
    )
  with pytest.raises(ValueError, match=r"lr: 0\.0001 -> 0\.001"):
    run_dir.prepare_run_dir(
      tmp_path,
      {**config, "lr": 1e-3},
      resume=True,
      may_change_on_resume={"epochs"},
    )
  longer = {**config, "epochs": 5}
  run_dir.prepare_run_dir(
    tmp_path, longer, resume=True, may_change_on_resume={"epochs"}
  )
  assert json.loads((folder / "config.json").read_text()) == longer
