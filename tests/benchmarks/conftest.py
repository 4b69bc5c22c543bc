"""Fixtures of the benchmark tests: a tiny CIFAR-10 folder, a clean data
environment, a one-device mesh, and synthetic records of the reproduction
benchmark (``benchmarks/reproduce``) for the tests of its modules."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from benchmarks.reproduce import runs, sweep
from benchmarks.reproduce.presets import PRESETS
from examples.cifar10 import data as cifar_data
from examples.common import sharding

CIFAR_IMAGES_PER_FILE = 16
"""80 training images: the smoke preset's 16 for validation and 32 of the
rest for training (two batches of 16); 16 test images."""

SMOKE = PRESETS["smoke"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SINGLE = runs.Execution(run_batch=1, scan_chunks=False)
"""One call per run and chunk, as on a CPU."""
VMAPPED = runs.Execution(run_batch=None, scan_chunks=True)
"""One vmapped, scanned call over all runs, as on a GPU."""


@pytest.fixture(scope="session")
def smoke_cifar_dir(tmp_path_factory):
  """A data folder with a tiny ``cifar-10-batches-py`` in the official layout."""
  root = tmp_path_factory.mktemp("cifar_data")
  folder = root / cifar_data.FOLDER_NAME
  folder.mkdir()
  rng = np.random.default_rng(0)
  for name in (*cifar_data.TRAIN_BATCH_NAMES, cifar_data.TEST_BATCH_NAME):
    batch = {
      "data": rng.integers(
        0, 256, (CIFAR_IMAGES_PER_FILE, 3 * 32 * 32), dtype=np.uint8
      ),
      "labels": rng.integers(0, 10, CIFAR_IMAGES_PER_FILE).tolist(),
    }
    (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
  return root


@pytest.fixture(scope="module")
def module_data_env(tmp_path_factory):
  """No data folder but the one passed: EXADAM_DATA_DIR unset, the cache
  folder (and its record of verified files) in a temporary folder."""
  with pytest.MonkeyPatch.context() as patch:
    patch.delenv("EXADAM_DATA_DIR", raising=False)
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
    yield


@pytest.fixture(scope="module")
def mesh():
  """A mesh of one device, for the batched runs."""
  return sharding.make_data_mesh(1)


# Synthetic records of the reproduction benchmark.


def eval_records(arm, x_key, xs, metrics, seeds=(0, 1), base_lr=1e-4):
  """Evaluation records: ``metrics[name]`` is (num_seeds, len(xs))."""
  out = []
  for seed_index, seed in enumerate(seeds):
    for point, x in enumerate(xs):
      record = {
        "arm": arm,
        "base_lr": base_lr,
        "seed": seed,
        "kind": "eval",
        x_key: x,
      }
      for name, values in metrics.items():
        record[name] = float(np.asarray(values)[seed_index, point])
      out.append(record)
  return out


def final_records(arm, test_accs, seeds=(0, 1), base_lr=1e-4):
  return [
    {
      "arm": arm,
      "base_lr": base_lr,
      "seed": seed,
      "kind": "final",
      "test_acc": test_acc,
    }
    for seed, test_acc in zip(seeds, test_accs, strict=True)
  ]


def is_png(path) -> bool:
  return path.read_bytes().startswith(PNG_SIGNATURE)


def two_arm_cnn_records():
  epochs = [1, 2, 3, 4]
  out = []
  for arm, val_acc in (
    ("exadam", [[0.3, 0.6, 0.7, 0.8], [0.3, 0.6, 0.7, 0.8]]),
    ("adam", [[0.2, 0.3, 0.5, 0.6], [0.2, 0.3, 0.5, 0.6]]),
  ):
    out += eval_records(
      arm,
      "epoch",
      epochs,
      {
        "val_acc": val_acc,
        "train_acc": [[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.6]],
        "train_loss": [[2.0] * 4, [1.0] * 4],
        "val_loss": [[2.0] * 4, [2.0] * 4],
      },
    )
    out += final_records(arm, [0.5, 0.7])
  return out


def sweep_records(experiment, scores_by_arm, seeds=(7, 8)):
  """Records whose curves peak at the given per-seed best values.

  ``scores_by_arm[arm][rate]`` holds one best value per seed; each curve
  starts at a poor value, reaches the best value and falls back from it, so
  that the best over training differs from the final value.
  """
  metric = sweep.SELECTION_METRIC[experiment]
  x_key = sweep.X_KEY[experiment]
  poor, worse = (0.1, -0.05) if metric == "val_acc" else (4.0, 0.5)
  out = []
  for arm, by_rate in scores_by_arm.items():
    for rate, bests in by_rate.items():
      values = [[poor, best, best + worse] for best in bests]
      out += eval_records(
        arm, x_key, [0, 1, 2], {metric: values}, seeds=seeds, base_lr=rate
      )
  return out
