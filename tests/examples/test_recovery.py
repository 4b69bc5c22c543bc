"""Both trainers resume from what crashes leave: damaged checkpoints, a full disk.

Each trainer runs once uninterrupted (a module fixture); each test copies
that run folder, damages it as a crash would, resumes and checks that the
run ends exactly as the uninterrupted one did. The scaffolding's own tests
(every kind of damage, torn records, a read-only folder) are in
test_training_run.py.
"""

from __future__ import annotations

import gc
import random
import re
import shutil

import pytest

from examples.cifar10 import train as cnn_train
from examples.common import training_run
from examples.mingpt import train as gpt_train
from tests.examples import damage as damage_lib
from tests.examples.test_training import (
  CNN_ARGS,
  GPT_ARGS,
  _assert_states_identical,
  _cnn_config,
  _gpt_config,
  _records,
  text_file,  # noqa: F401 (a fixture)
)
from tests.examples.test_training_run import unraisable  # noqa: F401 (a fixture)

# Each test starts subprocesses or trains for several seconds.
pytestmark = pytest.mark.slow

GPT_SETTINGS = dict(iters=4)  # checkpoints at steps 2 and 4
CNN_SETTINGS = dict(epochs=2)  # checkpoints at steps 2 and 4 (epochs 1 and 2)


@pytest.fixture(scope="module")
def gpt_full(text_file, tmp_path_factory):  # noqa: F811
  out_dir = tmp_path_factory.mktemp("gpt") / "full"
  return gpt_train.train(_gpt_config(text_file, out_dir, **GPT_SETTINGS))


@pytest.fixture(scope="module")
def cnn_full(cifar_dir, tmp_path_factory):
  out_dir = tmp_path_factory.mktemp("cnn") / "full"
  return cnn_train.train(_cnn_config(cifar_dir, out_dir, **CNN_SETTINGS))


def _copy_run(full, tmp_path):
  """A copy of a finished run's folder, and its checkpoint folder."""
  out_dir = tmp_path / "run"
  shutil.copytree(full.out_dir, out_dir)
  checkpoints = out_dir / training_run.CHECKPOINT_DIR
  assert sorted(p.name for p in checkpoints.iterdir()) == ["2", "4"]
  return out_dir, checkpoints


def _check_damage_line(out: str, checkpoints) -> None:
  """The one line about the damage: which, where it went, where it resumed."""
  lines = [line for line in out.splitlines() if "restore" in line]
  assert len(lines) == 1 and "Resumed" not in out
  moved = checkpoints.parent / training_run.DAMAGED_DIR
  assert re.fullmatch(
    rf"Checkpoint 4 in {re.escape(str(checkpoints))} did not restore \(.+\); "
    rf"moved it to {re.escape(str(moved))}/4-\d{{8}}T\d{{6}}Z\. Resuming from "
    r"the checkpoint at step 2\.",
    lines[0],
  )
  (folder,) = moved.iterdir()
  assert (folder / "state").is_dir()  # moved, not deleted


@pytest.mark.parametrize("damage", damage_lib.DAMAGE)
def test_mingpt_resumes_from_the_checkpoint_before_a_damaged_one(
  text_file,  # noqa: F811
  gpt_full,
  tmp_path,
  capfd,
  damage,
):
  out_dir, checkpoints = _copy_run(gpt_full, tmp_path)
  damage_lib.DAMAGE[damage](checkpoints / "4")
  capfd.readouterr()
  resumed = gpt_train.train(
    _gpt_config(text_file, out_dir, resume=True, **GPT_SETTINGS)
  )
  out, err = capfd.readouterr()
  _check_damage_line(out, checkpoints)
  assert "Traceback" not in err
  _assert_states_identical(resumed.state, gpt_full.state)
  assert _records(out_dir) == _records(gpt_full.out_dir)
  assert resumed.sample == gpt_full.sample
  assert sorted(p.name for p in checkpoints.iterdir()) == ["2", "4"]


@pytest.mark.parametrize("damage", damage_lib.DAMAGE)
def test_cnn_resumes_from_the_checkpoint_before_a_damaged_one(
  cifar_dir, cnn_full, tmp_path, capfd, damage
):
  out_dir, checkpoints = _copy_run(cnn_full, tmp_path)
  damage_lib.DAMAGE[damage](checkpoints / "4")
  capfd.readouterr()
  resumed = cnn_train.train(
    _cnn_config(cifar_dir, out_dir, resume=True, **CNN_SETTINGS)
  )
  out, err = capfd.readouterr()
  _check_damage_line(out, checkpoints)
  assert "Traceback" not in err
  _assert_states_identical(resumed.state, cnn_full.state)
  assert _records(out_dir) == _records(cnn_full.out_dir)
  assert resumed.final == cnn_full.final


@pytest.mark.parametrize("seed", range(6))
def test_mingpt_after_random_damage_resumes_or_stops_with_one_line(
  text_file,  # noqa: F811
  gpt_full,
  tmp_path,
  capfd,
  unraisable,  # noqa: F811
  seed,
):
  rng = random.Random(seed)
  out_dir, checkpoints = _copy_run(gpt_full, tmp_path)
  steps = ["4", "2"] if rng.random() < 0.4 else ["4"]
  cuts = [
    f"{step}/{cut}"
    for step in steps
    for cut in damage_lib.cut_random_files(checkpoints / step, rng)
  ]
  argv = [*GPT_ARGS, f"--text={text_file}", f"--out-dir={out_dir}", "--iters=4"]
  capfd.readouterr()
  status = gpt_train.main([*argv, "--resume"])
  gc.collect()
  _, err = capfd.readouterr()
  assert "Traceback" not in err and "Exception ignored" not in err, cuts
  assert unraisable == [], cuts
  if status == 0:  # from the newest checkpoint that restores
    assert err == "", cuts
    assert _records(out_dir) == _records(gpt_full.out_dir), cuts
    assert (out_dir / "sample.txt").read_text() == gpt_full.sample, cuts
  else:  # no intact checkpoint is left
    assert status == 1, cuts
    (line,) = err.strip().splitlines()
    assert line.startswith(
      f"error: No checkpoint in {checkpoints} restores completely ("
    ), cuts


def _check_every_checkpoint_damaged(main, argv, out_dir, checkpoints, capfd):
  damage_lib.cut_array_files(checkpoints / "4")
  damage_lib.remove_metadata(checkpoints / "2")
  records = _records(out_dir)
  capfd.readouterr()
  assert main([*argv, "--resume"]) == 1
  error = capfd.readouterr().err.strip().splitlines()
  assert len(error) == 1
  assert error[0].startswith(
    f"error: No checkpoint in {checkpoints} restores completely (4: "
  )
  assert error[0].endswith(
    "they are left in place. Pass --restart-if-damaged with --resume to move "
    "them aside and start again from scratch."
  )
  assert sorted(p.name for p in checkpoints.iterdir()) == ["2", "4"]
  assert not (out_dir / training_run.DAMAGED_DIR).exists()
  assert _records(out_dir) == records


def test_mingpt_with_every_checkpoint_damaged_stops_with_one_line(
  text_file,  # noqa: F811
  gpt_full,
  tmp_path,
  capfd,
):
  out_dir, checkpoints = _copy_run(gpt_full, tmp_path)
  argv = [*GPT_ARGS, f"--text={text_file}", f"--out-dir={out_dir}", "--iters=4"]
  _check_every_checkpoint_damaged(
    gpt_train.main, argv, out_dir, checkpoints, capfd
  )


def test_cnn_with_every_checkpoint_damaged_stops_with_one_line(
  cifar_dir, cnn_full, tmp_path, capfd
):
  out_dir, checkpoints = _copy_run(cnn_full, tmp_path)
  argv = [*CNN_ARGS, f"--data-dir={cifar_dir}", f"--out-dir={out_dir}"]
  _check_every_checkpoint_damaged(
    cnn_train.main, [*argv, "--epochs=2"], out_dir, checkpoints, capfd
  )


def test_mingpt_on_a_full_disk_stops_with_one_line_and_resumes_once_freed(
  text_file,  # noqa: F811
  gpt_full,
  tmp_path,
  capfd,
  monkeypatch,
):
  disk = tmp_path / "disk"
  out_dir = disk / "run"
  argv = [*GPT_ARGS, f"--text={text_file}", f"--out-dir={out_dir}", "--iters=4"]
  save = training_run.TrainingRun.save
  filler = []

  def fill_then_save(self, step, state, progress):
    if step == 4:  # the disk fills up after the checkpoint at step 2
      filler.append(damage_lib.fill(disk))
    save(self, step, state, progress)

  with damage_lib.small_filesystem(disk, "16m"):
    monkeypatch.setattr(training_run.TrainingRun, "save", fill_then_save)
    capfd.readouterr()
    assert gpt_train.main(argv) == 1
    checkpoints = out_dir / training_run.CHECKPOINT_DIR
    assert capfd.readouterr().err.strip().splitlines() == [
      f"error: Could not save the checkpoint at step 4 in {checkpoints}: No "
      "space left on device. The earlier checkpoints are intact: free some "
      "space, then run the same command with --resume to continue from the "
      "last one."
    ]
    assert [p.name for p in checkpoints.iterdir() if p.name.isdigit()] == ["2"]

    filler[0].unlink()
    monkeypatch.undo()
    assert gpt_train.main([*argv, "--resume"]) == 0
    out = capfd.readouterr().out
    assert f"Resumed from the checkpoint at step 2 in {out_dir}." in out
    assert _records(out_dir) == _records(gpt_full.out_dir)
    assert (out_dir / "sample.txt").read_text() == gpt_full.sample
    assert sorted(p.name for p in checkpoints.iterdir()) == ["2", "4"]
