"""Fixtures shared by the tests: small data files in the official formats."""

from __future__ import annotations

import hashlib
import io
import pathlib
import pickle
import tarfile
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import pytest

CIFAR10_IMAGES_PER_BATCH = 6
CIFAR_IMAGES_PER_FILE_TRAINING = 8
"""Images per file of the ``cifar_dir`` fixture."""
CIFAR10_BATCH_NAMES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")

Cifar10Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


class _Python2StylePickler(pickle._Pickler):
  """Pickles ``bytes`` and ``str`` as Python 2 strings, like the official files.

  Python 3 pickles ``bytes`` at protocol 2 through ``_codecs.encode`` and
  ``str`` as unicode; the official CIFAR-10 files, written by Python 2, hold
  both (keys, numpy's dtype codes, pixel buffers) as plain ``BINSTRING``s,
  which ``encoding="bytes"`` loads as ``bytes``.
  """

  dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

  def save_python2_string(self, obj: bytes | str) -> None:
    data = obj.encode("latin1") if isinstance(obj, str) else obj
    if len(data) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
    else:
      self.write(pickle.BINSTRING + len(data).to_bytes(4, "little") + data)
    self.memoize(obj)

  dispatch[bytes] = save_python2_string
  dispatch[str] = save_python2_string


def _python2_style_pickle(obj: object) -> bytes:
  """Returns ``obj`` pickled as Python 2 with numpy 1 did it, at protocol 2.

  Strings become Python 2 strings, and numpy's array reconstruction is named
  by its numpy 1 module, ``numpy.core.multiarray``, as in the official files.
  """
  buffer = io.BytesIO()
  _Python2StylePickler(buffer, protocol=2).dump(obj)
  return buffer.getvalue().replace(
    b"cnumpy._core.multiarray\n_reconstruct\n",
    b"cnumpy.core.multiarray\n_reconstruct\n",
  )


def _cifar10_batch_dict(
  images: np.ndarray, labels: np.ndarray, *, bytes_keys: bool = True
) -> dict:
  """Returns a batch dict in the official layout (R, G, B planes per row)."""
  data = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(
    len(images), 3072
  )
  fields = {
    "batch_label": "fake batch",
    "labels": labels.tolist(),
    "data": data,
  }
  if bytes_keys:
    return {
      key.encode(): value.encode() if isinstance(value, str) else value
      for key, value in fields.items()
    }
  return fields


def _write_cifar10_folder(
  root: pathlib.Path, arrays: Cifar10Arrays, *, bytes_keys: bool = True
) -> pathlib.Path:
  """Writes ``root/cifar-10-batches-py`` with one pickle per batch.

  Args:
    root: The data folder.
    arrays: Batch name to ``(images NHWC uint8, labels)``.
    bytes_keys: Write Python 2 style pickles with ``bytes`` keys (like the
      official files), else protocol 4 pickles with ``str`` keys.

  Returns:
    The ``cifar-10-batches-py`` folder.
  """
  folder = root / "cifar-10-batches-py"
  folder.mkdir(parents=True)
  for name, (images, labels) in arrays.items():
    batch = _cifar10_batch_dict(images, labels, bytes_keys=bytes_keys)
    content = (
      _python2_style_pickle(batch)
      if bytes_keys
      else pickle.dumps(batch, protocol=4)
    )
    (folder / name).write_bytes(content)
  (folder / "batches.meta").write_bytes(
    _python2_style_pickle({b"num_cases_per_batch": CIFAR10_IMAGES_PER_BATCH})
  )
  return folder


def _write_cifar10_archive(
  path: pathlib.Path, arrays: Cifar10Arrays, *, skip: tuple[str, ...] = ()
) -> str:
  """Writes a ``cifar-10-python.tar.gz`` like the official one.

  Args:
    path: The archive to write.
    arrays: Batch name to ``(images NHWC uint8, labels)``.
    skip: Batch names to leave out.

  Returns:
    The archive's SHA-256.
  """
  path.parent.mkdir(parents=True, exist_ok=True)
  with tarfile.open(path, "w:gz") as tar:
    members = {
      name: _python2_style_pickle(_cifar10_batch_dict(*arrays[name]))
      for name in arrays
      if name not in skip
    }
    members["readme.html"] = b"<html></html>"
    for name, content in members.items():
      info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
      info.size = len(content)
      tar.addfile(info, io.BytesIO(content))
  return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cifar10_arrays() -> Cifar10Arrays:
  """Random images and labels for the five training batches and the test one."""
  rng = np.random.default_rng(0)
  return {
    name: (
      rng.integers(
        0, 256, (CIFAR10_IMAGES_PER_BATCH, 32, 32, 3), dtype=np.uint8
      ),
      rng.integers(0, 10, CIFAR10_IMAGES_PER_BATCH),
    )
    for name in CIFAR10_BATCH_NAMES
  }


@pytest.fixture
def isolated_data_env(
  tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> pathlib.Path:
  """Unsets EXADAM_DATA_DIR and points the cache folder into ``tmp_path``.

  Returns:
    The cache data folder (not created).
  """
  monkeypatch.delenv("EXADAM_DATA_DIR", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
  return tmp_path / "xdg_cache" / "exadam_optax"


@pytest.fixture
def python2_style_pickle() -> Callable[[object], bytes]:
  """Pickles like Python 2 at protocol 2, as the official CIFAR-10 files."""
  return _python2_style_pickle


@pytest.fixture
def cifar10_batch_dict() -> Callable[..., dict]:
  """Builds a CIFAR-10 batch dict from NHWC images and labels."""
  return _cifar10_batch_dict


@pytest.fixture
def write_cifar10_folder() -> Callable[..., pathlib.Path]:
  """Writes ``<root>/cifar-10-batches-py``; see :func:`_write_cifar10_folder`."""
  return _write_cifar10_folder


@pytest.fixture
def write_cifar10_archive() -> Callable[..., str]:
  """Writes a CIFAR-10 tar.gz; see :func:`_write_cifar10_archive`."""
  return _write_cifar10_archive


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> pathlib.Path:
  """A data folder with a tiny ``cifar-10-batches-py`` in the official layout."""
  root = tmp_path_factory.mktemp("cifar_data")
  folder = root / "cifar-10-batches-py"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for name in CIFAR10_BATCH_NAMES:
    batch = {
      "data": rng.integers(
        0, 256, (CIFAR_IMAGES_PER_FILE_TRAINING, 3 * 32 * 32), dtype=np.uint8
      ),
      "labels": rng.integers(0, 10, CIFAR_IMAGES_PER_FILE_TRAINING).tolist(),
    }
    (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
  return root
