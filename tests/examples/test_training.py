"""End-to-end training runs of both examples on tiny data.

The runs use the tiny presets, a few steps and tiny data written in the
official formats, so that each compiles once and trains in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal

import jax
import numpy as np
import pytest

from examples.cifar10 import configs as cnn_configs
from examples.cifar10 import train as cnn_train
from examples.common import optimizers, training_run
from examples.mingpt import configs as gpt_configs
from examples.mingpt import train as gpt_train

# Each test starts subprocesses or trains for several seconds.
pytestmark = pytest.mark.slow

CIFAR_IMAGES_PER_FILE = 8
TIMING_KEYS = ("first_step_seconds", "tokens_per_second", "images_per_second")


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> pathlib.Path:
  """A small text with a newline-rich vocabulary of 27 characters."""
  rng = np.random.default_rng(0)
  words = "the quick brown fox jumps over a lazy dog and sings of old ships"
  vocabulary = words.split()
  lines = [
    " ".join(rng.choice(vocabulary, size=8)).capitalize() + "."
    for _ in range(60)
  ]
  path = tmp_path_factory.mktemp("text") / "tiny.txt"
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return path


GPT_ARGS = [
  "--preset=tiny",
  "--batch-size=8",
  "--eval-interval=2",
  "--eval-iters=2",
  "--checkpoint-every=2",
  "--sample-tokens=16",
  "--no-progress",
]
# Augmentation on, which the tiny preset turns off: resuming must replay it.
CNN_ARGS = [
  "--preset=tiny",
  "--augment",
  "--batch-size=16",
  f"--val-size={CIFAR_IMAGES_PER_FILE}",
  "--plateau-patience=0",
  "--plateau-factor=0.5",
  "--no-progress",
]


def _gpt_config(text_file, out_dir, **overrides) -> gpt_configs.Config:
  settings = dict(
    text=str(text_file),
    out_dir=str(out_dir),
    iters=6,
    batch_size=8,
    eval_interval=2,
    eval_iters=2,
    checkpoint_every=2,
    sample_tokens=16,
    progress=False,
  )
  return dataclasses.replace(
    gpt_configs.PRESETS["tiny"], **{**settings, **overrides}
  )


def _cnn_config(cifar_dir, out_dir, **overrides) -> cnn_configs.Config:
  settings = dict(
    data_dir=str(cifar_dir),
    out_dir=str(out_dir),
    epochs=2,
    batch_size=16,
    augment=True,
    val_size=CIFAR_IMAGES_PER_FILE,
    plateau_patience=0,
    plateau_factor=0.5,
    progress=False,
  )
  return dataclasses.replace(
    cnn_configs.PRESETS["tiny"], **{**settings, **overrides}
  )


def _assert_states_identical(got, expected) -> None:
  """Bit-exact equality of two pytrees of arrays, structure included."""
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for got_leaf, expected_leaf in zip(
    jax.tree.leaves(got), jax.tree.leaves(expected), strict=True
  ):
    np.testing.assert_array_equal(
      np.asarray(got_leaf), np.asarray(expected_leaf)
    )


def _records(out_dir: pathlib.Path) -> list[dict]:
  """The records of a run, without the timing fields that vary run to run."""
  lines = (out_dir / "metrics.jsonl").read_text().splitlines()
  return [
    {k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
    for line in lines
  ]


@pytest.fixture
def stop_at_step(monkeypatch):
  """Sends a signal to this process when the run logs a given step."""

  def arrange(step: int, signum: int = signal.SIGTERM) -> None:
    log_step = training_run.TrainingRun.log_step
    count = {"steps": 0}

    def log_and_maybe_signal(self, metrics):
      log_step(self, metrics)
      count["steps"] += 1
      if count["steps"] == step:
        os.kill(os.getpid(), signum)

    monkeypatch.setattr(
      training_run.TrainingRun, "log_step", log_and_maybe_signal
    )

  return arrange


def test_mingpt_stopped_and_resumed_equals_uninterrupted(text_file, tmp_path):
  full = gpt_train.train(_gpt_config(text_file, tmp_path / "full"))
  assert [record["step"] for record in full.history] == [0, 2, 4, 6]
  assert full.history[-1]["train_loss"] < full.history[0]["train_loss"]
  # The sample is the prompt (a newline by default) and 16 new characters.
  assert len(full.sample) == 17 and full.sample.startswith("\n")
  assert (tmp_path / "full" / "sample.txt").read_text() == full.sample

  # First part through the command line, stopping at a checkpoint.
  resumed_dir = tmp_path / "resumed"
  argv = [*GPT_ARGS, f"--text={text_file}", f"--out-dir={resumed_dir}"]
  assert gpt_train.main([*argv, "--iters=4"]) == 0
  assert [record["step"] for record in _records(resumed_dir)] == [0, 2, 4]
  saved_config = json.loads((resumed_dir / "config.json").read_text())
  assert saved_config["iters"] == 4
  assert saved_config["lr"] == gpt_configs.PRESETS["tiny"].lr
  assert saved_config["out_dir"] == str(resumed_dir.absolute())

  resumed = gpt_train.train(_gpt_config(text_file, resumed_dir, resume=True))
  _assert_states_identical(resumed.state, full.state)
  assert _records(resumed_dir) == _records(tmp_path / "full")
  assert resumed.sample == full.sample


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_mingpt_signal_saves_where_it_stopped_and_resume_is_exact(
  text_file, tmp_path, capsys, stop_at_step, signum
):
  full = gpt_train.train(_gpt_config(text_file, tmp_path / "full"))
  stopped_dir = tmp_path / "stopped"
  argv = [*GPT_ARGS, f"--text={text_file}", f"--out-dir={stopped_dir}"]
  stop_at_step(3, signum)
  assert gpt_train.main([*argv, "--iters=6"]) == 128 + signum
  error = capsys.readouterr().err.strip().splitlines()
  assert error == [
    f"{signal.Signals(signum).name}: stopped at step 3 and saved a checkpoint "
    f"in {stopped_dir.absolute()}; run the same command with --resume to "
    "continue."
  ]
  checkpoints = stopped_dir / training_run.CHECKPOINT_DIR
  assert sorted(int(p.name) for p in checkpoints.iterdir()) == [2, 3]

  resumed = gpt_train.train(_gpt_config(text_file, stopped_dir, resume=True))
  _assert_states_identical(resumed.state, full.state)
  assert _records(stopped_dir) == _records(tmp_path / "full")


def test_mingpt_resume_drops_records_written_after_the_checkpoint(
  text_file, tmp_path
):
  settings = dict(eval_interval=1, checkpoint_every=2)
  full = gpt_train.train(_gpt_config(text_file, tmp_path / "full", **settings))
  crashed_dir = tmp_path / "crashed"
  gpt_train.train(_gpt_config(text_file, crashed_dir, iters=3, **settings))
  # As if the process died after evaluating step 3 but before checkpointing it.
  checkpoints = crashed_dir / training_run.CHECKPOINT_DIR
  assert sorted(path.name for path in checkpoints.iterdir()) == ["2", "3"]
  for path in sorted((checkpoints / "3").rglob("*"), reverse=True):
    path.unlink() if path.is_file() else path.rmdir()
  (checkpoints / "3").rmdir()
  assert [record["step"] for record in _records(crashed_dir)] == [0, 1, 2, 3]

  resumed = gpt_train.train(
    _gpt_config(text_file, crashed_dir, resume=True, **settings)
  )
  steps = [record["step"] for record in _records(crashed_dir)]
  assert steps == [0, 1, 2, 3, 4, 5, 6]
  assert _records(crashed_dir) == _records(tmp_path / "full")
  _assert_states_identical(resumed.state, full.state)


def test_one_device_and_eight_devices_train_alike(text_file, tmp_path):
  # Trained with Adam, whose parameters after four steps are a fair test of
  # the mesh (see below); EXAdam's would test this model's sensitivity.
  results = {
    num_devices: gpt_train.train(
      _gpt_config(
        text_file,
        tmp_path / f"devices{num_devices}",
        num_devices=num_devices,
        iters=4,
        sample_tokens=0,
        optimizer="adam",
      )
    )
    for num_devices in (1, 8)
  }
  one, eight = results[1], results[8]
  param = jax.tree.leaves(eight.state.params)[0]
  assert param.sharding.is_fully_replicated and len(param.devices()) == 8
  assert len(jax.tree.leaves(one.state.params)[0].devices()) == 1
  assert [record["step"] for record in one.history] == [0, 2, 4]
  for record_one, record_eight in zip(one.history, eight.history, strict=True):
    for name in ("train_loss", "val_loss"):
      np.testing.assert_allclose(
        record_eight[name], record_one[name], rtol=1e-5
      )
  # Summation order differs between one and eight devices, and an adaptive
  # step divides a gradient near eps by about eps, so its rounding becomes a
  # fraction of a step (the learning rate is the tiny preset's). Adam keeps
  # that below a hundredth of a step. EXAdam's first step is 11 ln 2 times
  # larger, and its next steps grew one such difference to a whole step in the
  # first block on an AVX-512 CPU, although the gradients agree at equal
  # parameters.
  for leaf_one, leaf_eight in zip(
    jax.tree.leaves(one.state.params),
    jax.tree.leaves(eight.state.params),
    strict=True,
  ):
    np.testing.assert_allclose(leaf_eight, leaf_one, rtol=1e-4, atol=2e-5)


def test_cnn_stopped_and_resumed_equals_uninterrupted(cifar_dir, tmp_path):
  full = cnn_train.train(_cnn_config(cifar_dir, tmp_path / "full"))
  assert [record["epoch"] for record in full.history] == [1, 2]
  steps_per_epoch = (4 * CIFAR_IMAGES_PER_FILE) // 16
  assert [record["step"] for record in full.history] == [
    steps_per_epoch,
    2 * steps_per_epoch,
  ]
  for record in full.history:
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr"} <= set(
      record
    )
    assert 0.0 <= record["train_acc"] <= 1.0 and 0.0 <= record["val_acc"] <= 1.0
  assert full.final["final"] is True and 0.0 <= full.final["test_acc"] <= 1.0

  resumed_dir = tmp_path / "resumed"
  argv = [*CNN_ARGS, f"--data-dir={cifar_dir}", f"--out-dir={resumed_dir}"]
  assert cnn_train.main([*argv, "--epochs=1"]) == 0
  assert [r.get("final", False) for r in _records(resumed_dir)] == [False, True]
  resumed = cnn_train.train(_cnn_config(cifar_dir, resumed_dir, resume=True))

  _assert_states_identical(resumed.state, full.state)
  assert _records(resumed_dir) == _records(tmp_path / "full")
  assert resumed.final == full.final


def test_cnn_records_keep_the_fields_the_benchmarks_write():
  # benchmarks.reproduce.cnn writes these records too; long runs elsewhere
  # read them.
  record = cnn_train.epoch_record(2, 3, (1.5, 0.25), (1.75, 0.5), 1e-3)
  assert record == {
    "epoch": 2,
    "step": 6,
    "train_loss": 1.5,
    "train_acc": 0.25,
    "val_loss": 1.75,
    "val_acc": 0.5,
    "lr": 1e-3,
  }
  assert cnn_train.final_record(2, 3, (1.25, 0.75)) == {
    "epoch": 2,
    "step": 6,
    "test_loss": 1.25,
    "test_acc": 0.75,
  }


def test_cnn_stopped_mid_epoch_resumes_exactly(
  cifar_dir, tmp_path, capsys, stop_at_step
):
  full = cnn_train.train(_cnn_config(cifar_dir, tmp_path / "full"))
  stopped_dir = tmp_path / "stopped"
  argv = [*CNN_ARGS, f"--data-dir={cifar_dir}", f"--out-dir={stopped_dir}"]
  stop_at_step(3)  # the first of the two steps of epoch 2
  assert cnn_train.main([*argv, "--epochs=2"]) == 128 + signal.SIGTERM
  assert "stopped at step 3" in capsys.readouterr().err
  assert [record["epoch"] for record in _records(stopped_dir)] == [1]

  resumed = cnn_train.train(_cnn_config(cifar_dir, stopped_dir, resume=True))
  _assert_states_identical(resumed.state, full.state)
  assert _records(stopped_dir) == _records(tmp_path / "full")


def test_divergence_stops_with_one_line_and_keeps_last_good_checkpoint(
  text_file, tmp_path, capsys
):
  out_dir = tmp_path / "diverged"
  status = gpt_train.main(
    [
      *GPT_ARGS,
      f"--text={text_file}",
      f"--out-dir={out_dir}",
      "--iters=6",
      "--checkpoint-every=1",
      "--lr=1e30",
    ]
  )
  assert status == 1
  error = capsys.readouterr().err.strip().splitlines()
  assert len(error) == 1
  assert error[0].startswith("error: Training loss is nan at step 2")
  assert "Lower the learning rate" in error[0]
  checkpoints = sorted(
    int(path.name) for path in (out_dir / training_run.CHECKPOINT_DIR).iterdir()
  )
  assert checkpoints == [1]


def test_existing_run_needs_resume_and_same_settings(text_file, tmp_path):
  out_dir = tmp_path / "run"
  gpt_train.train(_gpt_config(text_file, out_dir, iters=2, sample_tokens=0))
  with pytest.raises(FileExistsError, match="--resume"):
    gpt_train.train(_gpt_config(text_file, out_dir))
  with pytest.raises(ValueError, match=r"lr: 0\.0005 -> 0\.001"):
    gpt_train.train(_gpt_config(text_file, out_dir, resume=True, lr=1e-3))


def test_batch_must_split_over_devices(text_file, tmp_path):
  with pytest.raises(ValueError, match=r"batch size \(12\) must be a positive"):
    gpt_train.train(_gpt_config(text_file, tmp_path / "run", batch_size=12))


def test_cnn_max_train_images_limits_the_epoch(cifar_dir, tmp_path):
  assert cnn_configs.PRESETS["tiny"].max_train_images == 4096
  result = cnn_train.train(
    _cnn_config(cifar_dir, tmp_path / "run", epochs=1, max_train_images=16)
  )
  assert [record["step"] for record in result.history] == [1]


def test_mingpt_cosine_schedule_is_recorded_and_fixes_the_length(
  text_file, tmp_path
):
  out_dir = tmp_path / "cosine"
  config = _gpt_config(
    text_file, out_dir, schedule="cosine", warmup_fraction=0.34
  )
  result = gpt_train.train(config)
  schedule = optimizers.Schedule("cosine", 6, 0.34, 0.1)
  peak = config.lr
  # Each record holds the rate of the latest update (the first at step 0).
  assert [r["lr"] for r in result.history] == pytest.approx(
    [peak * schedule.at(max(step - 1, 0)) for step in (0, 2, 4, 6)]
  )
  saved = json.loads((out_dir / "config.json").read_text())
  assert (saved["schedule"], saved["warmup_fraction"]) == ("cosine", 0.34)
  # The cosine spans the whole run: resuming with another length is refused.
  with pytest.raises(ValueError, match="iters: 6 -> 8"):
    gpt_train.train(dataclasses.replace(config, iters=8, resume=True))
