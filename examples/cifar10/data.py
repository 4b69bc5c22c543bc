"""CIFAR-10 from the official python files, split as in the EXAdam paper."""

from __future__ import annotations

import io
import pathlib
import pickle
import tarfile
import zlib
from collections.abc import Mapping
from typing import IO, Any, NamedTuple

import numpy as np

from examples.common import download as download_lib

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_SHA256 = (
  "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
)
ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
TRAIN_BATCH_NAMES = tuple(f"data_batch_{index}" for index in range(1, 6))
TEST_BATCH_NAME = "test_batch"
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
_PIXELS_PER_IMAGE = 32 * 32 * 3

# numpy's array reconstruction, under its numpy 1 and numpy 2 module names.
_ALLOWED_GLOBALS = frozenset(
  {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
  }
)


_Batches = dict[str, tuple[np.ndarray, np.ndarray]]  # (images, labels) by name


class Cifar10(NamedTuple):
  """Train, validation and test ``uint8`` NHWC RGB images, ``int32`` labels."""

  train_images: np.ndarray
  train_labels: np.ndarray
  val_images: np.ndarray
  val_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray


class Cifar10FormatError(ValueError):
  """Raised when files do not have the official CIFAR-10 python layout."""


class RefusedGlobalError(pickle.UnpicklingError):
  """Raised when a pickle refers to a global that CIFAR-10 batches never use."""


class RestrictedUnpickler(pickle.Unpickler):
  """Unpickles plain data and numpy arrays only: a bad file cannot run code."""

  def __init__(self, file: IO[bytes], *, source: str):
    super().__init__(file, encoding="bytes")
    self._source = source

  def find_class(self, module: str, name: str) -> Any:
    """Returns an allowed global; raises :class:`RefusedGlobalError` else."""
    if (module, name) not in _ALLOWED_GLOBALS:
      raise RefusedGlobalError(
        f"Refused to load the global {module}.{name} from {self._source}: a "
        "CIFAR-10 batch only refers to numpy array reconstruction "
        "(numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype). "
        "The file is not an official CIFAR-10 batch and may be malicious; "
        "replace it with the official files."
      )
    return super().find_class(module, name)


def _read_batch(file: IO[bytes], source: str) -> tuple[np.ndarray, np.ndarray]:
  try:
    batch = RestrictedUnpickler(file, source=source).load()
  except RefusedGlobalError:
    raise
  except (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    LookupError,
    AttributeError,
    OverflowError,
  ) as error:
    raise Cifar10FormatError(
      f"{source} is truncated or not a CIFAR-10 batch pickle: {error}"
    ) from error
  if not isinstance(batch, Mapping):
    raise Cifar10FormatError(
      f"{source} holds a {type(batch).__name__}, not the dict of a batch."
    )
  fields = {
    key.decode("latin1") if isinstance(key, bytes) else key: value
    for key, value in batch.items()
  }
  missing = {"data", "labels"} - fields.keys()
  if missing:
    raise Cifar10FormatError(
      f"{source} lacks the entries {sorted(missing)} of a CIFAR-10 batch; it "
      f"has {sorted(map(str, fields))}."
    )
  data = fields["data"]
  if (
    not isinstance(data, np.ndarray)
    or data.dtype != np.uint8
    or data.ndim != 2
    or data.shape[1] != _PIXELS_PER_IMAGE
  ):
    description = (
      f"{data.dtype} array of shape {data.shape}"
      if isinstance(data, np.ndarray)
      else type(data).__name__
    )
    raise Cifar10FormatError(
      f"{source}: 'data' must be a uint8 array of shape (N, "
      f"{_PIXELS_PER_IMAGE}), got a {description}."
    )
  labels = np.asarray(fields["labels"])
  if labels.size and labels.dtype.kind not in "iu":
    raise Cifar10FormatError(
      f"{source}: 'labels' must be integers, got {labels.dtype} values."
    )
  if labels.shape != (data.shape[0],):
    raise Cifar10FormatError(
      f"{source}: 'labels' must hold one integer per image ({data.shape[0]}),"
      f" got shape {labels.shape}."
    )
  if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
    raise Cifar10FormatError(
      f"{source}: labels must lie in 0..{NUM_CLASSES - 1}, got values from "
      f"{labels.min()} to {labels.max()}."
    )
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # R, G, B planes
  return np.ascontiguousarray(images), labels.astype(np.int32)


def _read_folder(folder: pathlib.Path) -> _Batches:
  batches = {}
  for name in (*TRAIN_BATCH_NAMES, TEST_BATCH_NAME):
    path = folder / name
    if not path.is_file():
      raise Cifar10FormatError(
        f"{path} is missing: an unpacked CIFAR-10 folder must hold "
        f"{', '.join(TRAIN_BATCH_NAMES)} and {TEST_BATCH_NAME}. Unpack the "
        f"official {ARCHIVE_NAME} again, or remove the folder so that the "
        "archive is used."
      )
    with open(path, "rb") as file:
      batches[name] = _read_batch(file, str(path))
  return batches


def _read_archive(archive: pathlib.Path, sha256: str | None) -> _Batches:
  """Reads batches in memory (no member path escapes); checks any ``sha256``."""
  if sha256 is not None:
    download_lib.verify_once(
      archive,
      sha256,
      accept_hint="To use a deliberately different archive, turn the check "
      "off with --no-verify-data.",
    )
  wanted = {
    f"{FOLDER_NAME}/{name}": name
    for name in (*TRAIN_BATCH_NAMES, TEST_BATCH_NAME)
  }
  batches = {}
  try:
    with tarfile.open(archive, "r:gz") as tar:
      for member in tar:
        name = wanted.get(member.name)
        if name is None or not member.isfile():
          continue
        with tar.extractfile(member) as member_file:
          content = io.BytesIO(member_file.read())
        batches[name] = _read_batch(content, f"{archive}:{member.name}")
  except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
    raise Cifar10FormatError(
      f"{archive} is not a readable tar.gz archive: {error}. Delete it and "
      "download it again."
    ) from error
  missing = sorted(set(wanted) - {f"{FOLDER_NAME}/{name}" for name in batches})
  if missing:
    raise Cifar10FormatError(
      f"{archive} lacks the members {missing} of the official CIFAR-10 archive."
    )
  return batches


def _check_val_size(val_size: int, num_examples: int | None = None) -> None:
  upper = "N" if num_examples is None else str(num_examples)
  if (
    isinstance(val_size, bool)
    or not isinstance(val_size, int | np.integer)
    or val_size < 0
    or (num_examples is not None and val_size >= num_examples)
  ):
    raise ValueError(
      f"val_size must be an integer in [0, {upper}), N being the number of "
      f"training images, got {val_size!r}."
    )


def split_train_val(
  images: np.ndarray, labels: np.ndarray, val_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Splits off the last ``val_size`` (random-order) examples to validate."""
  _check_val_size(val_size, len(images))
  cut = len(images) - int(val_size)
  return images[:cut], labels[:cut], images[cut:], labels[cut:]


def limit_train_images(dataset: Cifar10, max_images: int | None) -> Cifar10:
  """The data set with at most the first ``max_images`` training images."""
  if max_images is None:
    return dataset
  return dataset._replace(
    train_images=dataset.train_images[:max_images],
    train_labels=dataset.train_labels[:max_images],
  )


def steps_per_epoch(num_train: int, batch_size: int) -> int:
  """Full batches in an epoch; ValueError if there are none."""
  steps = num_train // batch_size
  if steps == 0:
    raise ValueError(
      f"The training set has {num_train} images, fewer than one batch of "
      f"{batch_size}; lower --batch-size or --val-size."
    )
  return steps


def load_cifar10(
  data_dir: download_lib.PathLike | None = None,
  *,
  download: bool = True,
  val_size: int = 10_000,
  verify: bool = True,
  url: str = CIFAR10_URL,
  archive_sha256: str = CIFAR10_SHA256,
) -> Cifar10:
  """Loads CIFAR-10 in the paper's train / validation / test split.

  Reads ``cifar-10-batches-py/``, else the archive (not unpacked), from the
  first data folder holding one (:func:`examples.common.download.data_dirs`),
  else downloads it into the first. ``verify`` checks a found archive's SHA-256
  (downloads always are); unpacked files, lacking checksums, only for layout."""
  _check_val_size(val_size)
  location = download_lib.fetch(
    "CIFAR-10",
    (FOLDER_NAME, ARCHIVE_NAME),
    download_lib.RemoteFile(url, archive_sha256, ARCHIVE_NAME),
    data_dir,
    download=download,
  )
  batches = (
    _read_folder(location)
    if location.is_dir()
    else _read_archive(location, archive_sha256 if verify else None)
  )
  train = [batches[name] for name in TRAIN_BATCH_NAMES]
  train_images = np.concatenate([images for images, _ in train])
  train_labels = np.concatenate([labels for _, labels in train])
  return Cifar10(
    *split_train_val(train_images, train_labels, val_size),
    *batches[TEST_BATCH_NAME],
  )
