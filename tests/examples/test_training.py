"""End-to-end training runs of both examples on tiny data.

The runs use the tiny presets, a few steps and tiny data written in the
official formats, so that each compiles once and trains in seconds; runs with
the same model and optimizer settings in one process share the compilation.
"""

from __future__ import annotations

import json
import pathlib
import pickle

import jax
import numpy as np
import pytest

from examples.cifar10 import train as cnn_train
from examples.common import checkpointing, run_dir
from examples.mingpt import train as gpt_train

CIFAR_IMAGES_PER_FILE = 8
CIFAR_FILES = (*(f"data_batch_{index}" for index in range(1, 6)), "test_batch")
TINY_GPT_LR = gpt_train.TRAINING_PRESETS["tiny"]["learning_rate"]


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> pathlib.Path:
  """A data folder with a tiny ``cifar-10-batches-py`` in the official layout."""
  root = tmp_path_factory.mktemp("cifar_data")
  folder = root / "cifar-10-batches-py"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for name in CIFAR_FILES:
    batch = {
      "data": rng.integers(
        0, 256, (CIFAR_IMAGES_PER_FILE, 3 * 32 * 32), dtype=np.uint8
      ),
      "labels": rng.integers(0, 10, CIFAR_IMAGES_PER_FILE).tolist(),
    }
    (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
  return root


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


def _gpt_config(text_file, out_dir, **overrides) -> gpt_train.GPTTrainConfig:
  settings = dict(
    text_file=str(text_file),
    out_dir=str(out_dir),
    iters=6,
    batch_size=8,
    eval_interval=2,
    eval_iters=2,
    checkpoint_every=2,
    sample_tokens=16,
    progress=False,
  )
  return gpt_train.GPTTrainConfig.for_preset(
    "tiny", **{**settings, **overrides}
  )


def _cnn_config(cifar_dir, out_dir, **overrides) -> cnn_train.CNNTrainConfig:
  settings = dict(
    data_dir=str(cifar_dir),
    out_dir=str(out_dir),
    epochs=2,
    batch_size=16,
    val_size=CIFAR_IMAGES_PER_FILE,
    plateau_patience=0,
    plateau_factor=0.5,
    progress=False,
  )
  return cnn_train.CNNTrainConfig.for_preset(
    "tiny", **{**settings, **overrides}
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
  lines = (out_dir / "metrics.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines]


def _latest_progress(out_dir: pathlib.Path, like) -> dict:
  with checkpointing.Checkpointer(
    out_dir / run_dir.CHECKPOINT_DIR_NAME
  ) as ckpt:
    return ckpt.restore(like=like)[1]


def test_mingpt_stopped_and_resumed_equals_uninterrupted(text_file, tmp_path):
  full = gpt_train.train(_gpt_config(text_file, tmp_path / "full"))
  assert [record["step"] for record in full.history] == [0, 2, 4, 6]
  assert full.history[-1]["train_loss"] < full.history[0]["train_loss"]
  # The sample is the prompt (a newline by default) and 16 new characters.
  assert len(full.sample) == 17 and full.sample.startswith("\n")
  assert (tmp_path / "full" / "sample.txt").read_text() == full.sample

  # First part through the command line, stopping at a checkpoint.
  resumed_dir = tmp_path / "resumed"
  argv = [
    "--preset=tiny",
    f"--text={text_file}",
    f"--out-dir={resumed_dir}",
    "--batch-size=8",
    "--eval-interval=2",
    "--eval-iters=2",
    "--checkpoint-every=2",
    "--sample-tokens=16",
    "--no-progress",
  ]
  assert gpt_train.main([*argv, "--iters=4"]) == 0
  assert [record["step"] for record in _records(resumed_dir)] == [0, 2, 4]
  saved_config = json.loads((resumed_dir / "config.json").read_text())
  assert saved_config["iters"] == 4
  assert saved_config["learning_rate"] == TINY_GPT_LR

  resumed = gpt_train.train(_gpt_config(text_file, resumed_dir, resume=True))
  _assert_states_identical(resumed.state, full.state)
  assert _records(resumed_dir) == _records(tmp_path / "full")
  assert resumed.history == full.history
  assert resumed.sample == full.sample


def test_mingpt_resume_drops_records_written_after_the_checkpoint(
  text_file, tmp_path
):
  settings = dict(eval_interval=1, checkpoint_every=2)
  full = gpt_train.train(_gpt_config(text_file, tmp_path / "full", **settings))
  crashed_dir = tmp_path / "crashed"
  gpt_train.train(_gpt_config(text_file, crashed_dir, iters=3, **settings))
  # As if the process died after evaluating step 3 but before checkpointing it.
  checkpoints = crashed_dir / run_dir.CHECKPOINT_DIR_NAME
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
  results = {
    num_devices: gpt_train.train(
      _gpt_config(
        text_file,
        tmp_path / f"devices{num_devices}",
        num_devices=num_devices,
        iters=4,
        sample_tokens=0,
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
  # Summation order differs between one and eight devices; for gradients near
  # zero, Adam-type steps turn that into differences of a small fraction of a
  # step (the learning rate is TINY_GPT_LR).
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
  argv = [
    "--preset=tiny",
    f"--data-dir={cifar_dir}",
    f"--out-dir={resumed_dir}",
    "--batch-size=16",
    f"--val-size={CIFAR_IMAGES_PER_FILE}",
    "--no-progress",
  ]
  first = cnn_train.config_from_args(
    cnn_train.parse_args([*argv, "--epochs=1"])
  )
  assert (first.learning_rate, first.batch_size, first.epochs) == (1e-3, 16, 1)
  cnn_train.train(_cnn_config(cifar_dir, resumed_dir, epochs=1))
  assert [record.get("final", False) for record in _records(resumed_dir)] == [
    False,
    True,
  ]
  resumed = cnn_train.train(_cnn_config(cifar_dir, resumed_dir, resume=True))

  _assert_states_identical(resumed.state, full.state)
  assert _records(resumed_dir) == _records(tmp_path / "full")
  assert resumed.final == full.final
  # The plateau scheduler's state went through the checkpoint too.
  assert _latest_progress(resumed_dir, full.state) == _latest_progress(
    tmp_path / "full", full.state
  )


def test_cnn_command_line_runs(cifar_dir, tmp_path):
  out_dir = tmp_path / "run"
  status = cnn_train.main(
    [
      "--preset=tiny",
      f"--data-dir={cifar_dir}",
      f"--out-dir={out_dir}",
      "--batch-size=16",
      f"--val-size={CIFAR_IMAGES_PER_FILE}",
      "--epochs=1",
      "--optimizer=exadam",
      "--lr=0.001",
      "--no-progress",
    ]
  )
  assert status == 0
  records = _records(out_dir)
  assert records[0]["epoch"] == 1 and records[-1]["final"] is True
  config = json.loads((out_dir / "config.json").read_text())
  assert (config["optimizer"], config["variant"], config["epochs"]) == (
    "exadam",
    "paper",
    1,
  )


def test_divergence_stops_with_error_and_keeps_last_good_checkpoint(
  text_file, tmp_path, capsys
):
  out_dir = tmp_path / "diverged"
  status = gpt_train.main(
    [
      "--preset=tiny",
      f"--text={text_file}",
      f"--out-dir={out_dir}",
      "--batch-size=8",
      "--eval-iters=2",
      "--iters=6",
      "--checkpoint-every=1",
      "--lr=1e30",
      "--no-progress",
    ]
  )
  assert status == 1
  error = capsys.readouterr().err
  assert "Training loss is nan at step 2" in error
  assert "Lower the learning rate" in error
  checkpoints = sorted(
    int(path.name) for path in (out_dir / run_dir.CHECKPOINT_DIR_NAME).iterdir()
  )
  assert checkpoints == [1]


def test_existing_run_needs_resume_and_same_settings(text_file, tmp_path):
  out_dir = tmp_path / "run"
  out_dir.mkdir()
  (out_dir / "metrics.jsonl").write_text("")
  (out_dir / "config.json").write_text(
    json.dumps(
      {
        **json.loads(json.dumps(vars(_gpt_config(text_file, out_dir)))),
        "learning_rate": 1.0,
      }
    )
  )
  with pytest.raises(FileExistsError, match="--resume"):
    gpt_train.train(_gpt_config(text_file, out_dir))
  with pytest.raises(
    ValueError, match=rf"learning_rate: 1\.0 -> {TINY_GPT_LR}"
  ):
    gpt_train.train(_gpt_config(text_file, out_dir, resume=True))


def test_batch_must_split_over_devices(text_file, tmp_path):
  with pytest.raises(ValueError, match=r"batch size \(12\) must be a positive"):
    gpt_train.train(_gpt_config(text_file, tmp_path / "run", batch_size=12))


@pytest.mark.parametrize(
  "overrides, message",
  [
    (dict(iters=0), "iters must be a positive integer"),
    (dict(optimizer="lamb"), "Unknown optimizer 'lamb'"),
    (dict(dtype="float16"), "dtype must be"),
  ],
)
def test_bad_gpt_settings_are_rejected(text_file, tmp_path, overrides, message):
  with pytest.raises(ValueError, match=message):
    _gpt_config(text_file, tmp_path, **overrides)


def test_unknown_preset_is_rejected():
  with pytest.raises(ValueError, match="Unknown preset 'huge'"):
    cnn_train.CNNTrainConfig.for_preset("huge")


def test_cnn_max_train_images_limits_the_epoch(cifar_dir, tmp_path):
  args = cnn_train.parse_args(["--preset=tiny", "--max-train-images=16"])
  assert cnn_train.config_from_args(args).max_train_images == 16
  assert cnn_train.CNNTrainConfig.for_preset("tiny").max_train_images == 4096
  with pytest.raises(ValueError, match="max_train_images must be a positive"):
    cnn_train.CNNTrainConfig.for_preset("tiny", max_train_images=0)
  result = cnn_train.train(
    _cnn_config(cifar_dir, tmp_path / "run", epochs=1, max_train_images=16)
  )
  assert [record["step"] for record in result.history] == [1]
