"""Fixtures of the benchmark tests: a tiny CIFAR-10 folder, a clean data
environment, and the smoke preset's command line."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from examples.cifar10 import data as cifar_data

CIFAR_IMAGES_PER_FILE = 16
"""80 training images: the smoke preset's 16 for validation and 32 of the
rest for training (two batches of 16); 16 test images."""


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
