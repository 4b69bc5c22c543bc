"""The scaffolding around both training loops: examples.common.training_run
and the modules it composes (run_folder, checkpoints, metrics_log, progress,
stopping, quiet_orbax)."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import gc
import json
import os
import pathlib
import re
import signal
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from orbax.checkpoint._src.serialization import serialization

from examples.common import checkpoints as checkpoints_lib
from examples.common import config as config_lib
from examples.common import optimizers, run_folder, training_run
from tests.examples import damage as damage_lib


@dataclasses.dataclass(frozen=True)
class _Model:
  width: int = 2


@dataclasses.dataclass(frozen=True)
class _Config(config_lib.RunConfig):
  model: _Model = _Model()
  steps: int = 4
  progress: bool = False


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
    "test",
    total_steps=4,
    unit="examples",
    examples_per_step=8,
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
    config, "test", total_steps=1, unit="examples", examples_per_step=1
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
  # What was installed before, not Python's default: a shell that starts the
  # suite in the background has SIGINT ignored.
  previous = signal.getsignal(signal.SIGINT)
  with (
    pytest.raises(training_run.RunStopped, match="--resume") as stopped,
    _run(tmp_path) as run,
  ):
    run.restore(_tree_state(0.0))
    os.kill(os.getpid(), signum)
    assert run.stop_requested
    run.save(3, _tree_state(1.0), {"step": 3})  # returns: the loop ends
    raise run.stopped()
  assert stopped.value.exit_status == 128 + signum
  assert stopped.value.step == 3
  assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["3"]
  # The previous handlers are back once the run is closed.
  assert signal.getsignal(signal.SIGINT) is previous


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
  flat = run_folder.flatten(nested)
  assert flat == {"a": 1, "model.n": 2, "model.dtype": "float32"}
  assert run_folder.unflatten(flat) == nested


# What crashes leave behind: damaged checkpoints, torn records, a full disk.


def _saved_run(tmp_path, steps=(1, 2, 3)) -> pathlib.Path:
  """A run with a record and a checkpoint per step; its checkpoint folder."""
  with _run(tmp_path) as run:
    run.restore(_tree_state(0.0))
    for step in steps:
      run.record({"step": step})
      run.save(step, _tree_state(float(step)), {"step": step})
  return tmp_path / "run" / training_run.CHECKPOINT_DIR


def _lines(text: str) -> list[str]:
  return text.strip().splitlines()


def _write_progress_without_counts(step_dir: pathlib.Path) -> None:
  (step_dir / "progress" / "metadata").write_text('{"step": 3}')


@pytest.mark.parametrize(
  "damage",
  [*damage_lib.DAMAGE.values(), _write_progress_without_counts],
  ids=[*damage_lib.DAMAGE, "progress_without_counts"],
)
def test_resume_moves_a_damaged_newest_checkpoint_aside_and_restores_the_one_before(
  tmp_path, capfd, damage
):
  checkpoints = _saved_run(tmp_path)
  damage(checkpoints / "3")
  files = sorted(
    p.relative_to(checkpoints / "3") for p in (checkpoints / "3").rglob("*")
  )
  capfd.readouterr()
  with _run(tmp_path, resume=True) as run:
    restored, progress = run.restore(_tree_state(0.0))
    assert [record["step"] for record in run.records] == [1, 2]
  _assert_trees_equal(restored, _tree_state(2.0))
  assert progress["step"] == 2
  assert sorted(p.name for p in checkpoints.iterdir()) == ["1", "2"]
  (moved,) = (tmp_path / "run" / training_run.DAMAGED_DIR).iterdir()
  assert re.fullmatch(r"3-\d{8}T\d{6}Z", moved.name)
  # Moved whole, nothing deleted.
  assert sorted(p.relative_to(moved) for p in moved.rglob("*")) == files
  out, err = capfd.readouterr()
  (line,) = _lines(out)
  assert line.startswith(f"Checkpoint 3 in {checkpoints} did not restore (")
  assert line.endswith(
    f"moved it to {moved}. Resuming from the checkpoint at step 2."
  )
  assert err == ""  # none of Orbax's tracebacks


@pytest.fixture
def unraisable(monkeypatch) -> list[Any]:
  """What Python reports as unraisable during the test, instead of printing it.

  Pytest turns such reports into warnings, so that they never reach the
  captured stderr; this list shows them.
  """
  reports: list[Any] = []
  monkeypatch.setattr(sys, "unraisablehook", reports.append)
  return reports


def test_a_restore_that_fails_while_reads_are_pending_prints_nothing(
  tmp_path, capfd, monkeypatch, unraisable
):
  # Orbax ends its event loop at the first read that fails and leaves the
  # others pending; each, once collected, used to print "Exception ignored
  # in: <coroutine object _read_array_index_and_device_put ...>" and a
  # traceback, after the restore had returned.
  checkpoints = _saved_run(tmp_path, steps=(1, 2))
  read_shard = serialization._read_shard
  reads = []

  async def fail_the_first_read_and_delay_the_others(**kwargs):
    reads.append(kwargs)
    if len(reads) == 1:
      raise ValueError("cut short")
    await asyncio.sleep(0.2)
    return await read_shard(**kwargs)

  monkeypatch.setattr(
    serialization, "_read_shard", fail_the_first_read_and_delay_the_others
  )
  capfd.readouterr()
  with _run(tmp_path, resume=True) as run:
    restored, progress = run.restore(_tree_state(0.0))
  gc.collect()
  _assert_trees_equal(restored, _tree_state(1.0))
  assert progress["step"] == 1
  out, err = capfd.readouterr()
  (line,) = _lines(out)
  assert line.startswith(f"Checkpoint 2 in {checkpoints} did not restore (")
  assert err == ""
  assert unraisable == []


def test_several_damaged_checkpoints_are_named_in_one_line(tmp_path, capsys):
  checkpoints = _saved_run(tmp_path)
  damage_lib.cut_array_files(checkpoints / "3")
  damage_lib.remove_metadata(checkpoints / "2")
  capsys.readouterr()
  with _run(tmp_path, resume=True) as run:
    restored, _ = run.restore(_tree_state(0.0))
  _assert_trees_equal(restored, _tree_state(1.0))
  (line,) = _lines(capsys.readouterr().out)
  assert line.startswith(
    f"Checkpoints 3 and 2 in {checkpoints} did not restore (3: "
  )
  assert "; 2: " in line
  assert line.endswith("Resuming from the checkpoint at step 1.")
  damaged = tmp_path / "run" / training_run.DAMAGED_DIR
  assert sorted(p.name[:2] for p in damaged.iterdir()) == ["2-", "3-"]


def test_every_checkpoint_damaged_stops_and_changes_nothing(tmp_path, capfd):
  checkpoints = _saved_run(tmp_path, steps=(1, 2))
  for step in ("1", "2"):
    damage_lib.cut_array_files(checkpoints / step)
  metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
  capfd.readouterr()
  with (
    _run(tmp_path, resume=True) as run,
    pytest.raises(training_run.DamagedCheckpointsError) as raised,
  ):
    run.restore(_tree_state(0.0))
  message = str(raised.value)
  assert "\n" not in message
  assert message.startswith(
    f"No checkpoint in {checkpoints} restores completely (2: ValueError: "
  )
  assert "they are left in place. Pass --restart-if-damaged" in message
  assert isinstance(raised.value.__cause__, ValueError)  # --debug shows it
  assert sorted(p.name for p in checkpoints.iterdir()) == ["1", "2"]
  assert not (tmp_path / "run" / training_run.DAMAGED_DIR).exists()
  assert (tmp_path / "run" / "metrics.jsonl").read_text() == metrics
  assert capfd.readouterr().err == ""


def test_restart_if_damaged_moves_them_aside_and_keeps_the_records(
  tmp_path, capsys
):
  checkpoints = _saved_run(tmp_path, steps=(1,))
  damage_lib.remove_metadata(checkpoints / "1")
  capsys.readouterr()
  with pytest.raises(ValueError, match="only applies with --resume"):
    _Config(restart_if_damaged=True)
  with _run(tmp_path, resume=True, restart_if_damaged=True) as run:
    restored, progress = run.restore(_tree_state(0.0))
    assert run.records == []
  _assert_trees_equal(restored, _tree_state(0.0))
  assert progress == {}
  assert list(checkpoints.iterdir()) == []
  damaged = tmp_path / "run" / training_run.DAMAGED_DIR
  (kept,) = damaged.glob("metrics-*.jsonl")
  assert [
    json.loads(line)["step"] for line in kept.read_text().splitlines()
  ] == [1]
  (line,) = _lines(capsys.readouterr().out)
  assert line.endswith(
    f"Starting again from scratch (--restart-if-damaged); the earlier records are in {kept}."
  )


def test_restore_newest_intact_with_a_manager_of_ones_own(
  tmp_path, monkeypatch
):
  checkpoints = _saved_run(tmp_path)
  damaged_dir = tmp_path / "damaged"
  manager = ocp.CheckpointManager(checkpoints)

  def restore_step(step):
    return manager.restore(
      step, args=ocp.args.Composite(progress=ocp.args.JsonRestore())
    )["progress"]

  try:
    with pytest.raises(ValueError, match="must lie outside"):
      checkpoints_lib.restore_newest_intact(
        manager, restore_step, checkpoints / "damaged"
      )
    intact = checkpoints_lib.restore_newest_intact(
      manager, restore_step, damaged_dir
    )
    assert (intact.step, intact.restored["step"], intact.damaged) == (3, 3, ())
    assert intact.describe() == ""

    for step in ("1", "2", "3"):
      (checkpoints / step / "progress" / "metadata").unlink()
    kept = checkpoints_lib.restore_newest_intact(
      manager, restore_step, damaged_dir, move_if_none_intact=False
    )
    assert (kept.step, kept.restored) == (None, None)
    assert [(d.step, d.moved_to) for d in kept.damaged] == [
      (3, None),
      (2, None),
      (1, None),
    ]
    assert kept.damaged[0].cause.startswith("FileNotFoundError: ")
    assert manager.all_steps() == [1, 2, 3]

    # A name already taken (moved in the same second) gets a number.
    (damaged_dir / "3-19700101T000000Z").mkdir(parents=True)
    with monkeypatch.context() as patch:
      patch.setattr(checkpoints_lib.time, "time", lambda: 0.0)
      moved = checkpoints_lib.restore_newest_intact(
        manager, restore_step, damaged_dir
      )
    assert moved.step is None
    assert [d.step for d in moved.damaged] == [3, 2, 1]
    assert [d.moved_to.name for d in moved.damaged] == [
      "3-19700101T000000Z-1",
      "2-19700101T000000Z",
      "1-19700101T000000Z",
    ]
    for damaged in moved.damaged:
      assert damaged.moved_to.parent == damaged_dir
      assert (damaged.moved_to / "progress").is_dir()
    assert manager.all_steps() == []
    assert moved.describe().startswith(
      f"No checkpoint in {checkpoints} restores completely (3: FileNotFoundError: "
    )
  finally:
    manager.close()


def test_a_torn_last_record_is_dropped_with_one_line(tmp_path, capsys):
  _saved_run(tmp_path, steps=(1, 2))
  metrics = tmp_path / "run" / "metrics.jsonl"
  # As a process killed while appending the record of step 3 leaves it.
  with open(metrics, "a") as file:
    file.write('{"step": 3, "val_lo')
  capsys.readouterr()
  with _run(tmp_path, resume=True) as run:
    run.restore(_tree_state(0.0))
    run.record({"step": 3})
  assert _lines(capsys.readouterr().out) == [
    f'{metrics}: dropped its last line, cut short by an interrupted write ({{"step": 3, "val_lo).',
    "Resumed from the checkpoint at step 2 in " + str(tmp_path / "run") + ".",
    "step 3",
  ]
  assert [
    json.loads(line)["step"] for line in metrics.read_text().splitlines()
  ] == [1, 2, 3]


def test_a_last_record_without_its_newline_is_kept(tmp_path):
  _saved_run(tmp_path, steps=(1, 2))
  metrics = tmp_path / "run" / "metrics.jsonl"
  metrics.write_text(metrics.read_text().rstrip("\n"))
  with _run(tmp_path, resume=True) as run:
    run.restore(_tree_state(0.0))
    run.record({"step": 3})
  assert [
    json.loads(line)["step"] for line in metrics.read_text().splitlines()
  ] == [1, 2, 3]


@pytest.mark.parametrize(
  "text",
  ['{"step": 1}\n{"step": 2\n{"step": 3}\n', '{"step": 1}\n{"step": 2\n'],
  ids=["inside", "last_line_with_newline"],
)
def test_damage_elsewhere_in_the_records_is_still_an_error(tmp_path, text):
  folder = tmp_path / "run"
  folder.mkdir()
  (folder / "metrics.jsonl").write_text(text)
  with pytest.raises(
    ValueError, match=r"line 2, is not JSON.*Delete that line"
  ):
    _run(tmp_path, resume=True)


@pytest.fixture
def small_disk(tmp_path):
  """A 2 MiB tmpfs at ``tmp_path``/disk (the test is skipped where not allowed)."""
  disk = tmp_path / "disk"
  with damage_lib.small_filesystem(disk, "2m"):
    yield disk


def test_a_full_disk_stops_the_save_and_keeps_the_earlier_checkpoints(
  small_disk, capfd
):
  checkpoints = small_disk / "run" / training_run.CHECKPOINT_DIR
  with _run(small_disk) as run:
    run.restore(_tree_state(0.0))
    run.record({"step": 1})
    run.save(1, _tree_state(1.0), {"step": 1})
    filler = damage_lib.fill(small_disk)
    with pytest.raises(training_run.WriteError) as raised:
      run.save(2, _tree_state(2.0), {"step": 2})
    assert str(raised.value) == (
      f"Could not save the checkpoint at step 2 in {checkpoints}: No space "
      "left on device. The earlier checkpoints are intact: free some space, "
      "then run the same command with --resume to continue from the last one."
    )
    assert raised.value.errno == errno.ENOSPC
  assert capfd.readouterr().err == ""
  with pytest.raises(training_run.WriteError, match=r"config\.json: No space"):
    _run(small_disk, resume=True)
  filler.unlink()
  with _run(small_disk, resume=True) as run:
    restored, progress = run.restore(_tree_state(0.0))
    assert [record["step"] for record in run.records] == [1]
    run.save(2, _tree_state(2.0), {"step": 2})
  _assert_trees_equal(restored, _tree_state(1.0))
  assert progress["step"] == 1
  assert sorted(p.name for p in checkpoints.iterdir()) == ["1", "2"]


def test_a_folder_that_cannot_be_written_stops_the_run_likewise(tmp_path):
  checkpoints = _saved_run(tmp_path, steps=(1,))
  metrics = tmp_path / "run" / "metrics.jsonl"
  with _run(tmp_path, resume=True) as run:
    run.restore(_tree_state(0.0))
    with damage_lib.read_only(tmp_path / "run"):
      with pytest.raises(
        training_run.WriteError,
        match=f"step 2 in {re.escape(str(checkpoints))}: Read-only file "
        "system.*make the folder writable",
      ):
        run.save(2, _tree_state(2.0), {"step": 2})
      with pytest.raises(
        training_run.WriteError,
        match=f"^Could not write {re.escape(str(metrics))}: Read-only",
      ):
        run.record({"step": 2})
  with _run(tmp_path, resume=True) as run:
    restored, _ = run.restore(_tree_state(0.0))
  _assert_trees_equal(restored, _tree_state(1.0))
