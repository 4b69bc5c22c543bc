"""CIFAR-10 from the official python files, split as in the EXAdam paper.

The data set is read from a data folder (see :mod:`examples.common.download`
for the search order) in either official form:

* ``cifar-10-batches-py/``: the folder that the official archive unpacks to,
  holding ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``;
* ``cifar-10-python.tar.gz``: the official archive itself, checked against its
  published SHA-256 and read member by member without unpacking it.

If neither is found, the archive is downloaded from the CIFAR-10 home page.

The batches are Python pickles. They are read with an unpickler that admits
only the numpy globals needed to rebuild an array, so a tampered file cannot
run code. The paper's split is kept: of the 50,000 training images the first
40,000 train and the last 10,000 validate; the 10,000 test images are the
test set. The training images of the official files are in random order,
so the last 10,000 are a fair sample of all ten classes.
"""

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

# The globals an official batch refers to: numpy's array reconstruction, under
# its numpy 1 and numpy 2 module names.
_ALLOWED_GLOBALS = frozenset(
  {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
  }
)


class Cifar10(NamedTuple):
  """CIFAR-10 split into training, validation and test sets.

  Images are ``uint8`` arrays of shape ``(N, 32, 32, 3)`` (NHWC, RGB); labels
  are ``int32`` arrays of shape ``(N,)`` with values in ``0..9``.
  """

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
  """An unpickler that rebuilds numpy arrays and refuses every other global.

  Plain containers and scalars (dicts, lists, strings, bytes, ints) are pickle
  opcodes and load as usual; any class or function other than numpy's array
  reconstruction is refused before it can be called.
  """

  def __init__(self, file: IO[bytes], *, source: str):
    """Initializes the unpickler.

    Args:
      file: The binary file to read the pickle from.
      source: A name for the file, used in error messages.
    """
    super().__init__(file, encoding="bytes")
    self._source = source

  def find_class(self, module: str, name: str) -> Any:
    """Returns an allowed global.

    Args:
      module: The global's module.
      name: The global's name.

    Returns:
      The global, if it is one of numpy's array reconstruction helpers.

    Raises:
      RefusedGlobalError: If the global is not allowed.
    """
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
  """Reads one pickled batch into images and labels.

  Args:
    file: The binary file holding the pickle.
    source: A name for the file, used in error messages.

  Returns:
    ``(images, labels)``: ``uint8`` ``(N, 32, 32, 3)`` and ``int32`` ``(N,)``.

  Raises:
    RefusedGlobalError: If the pickle refers to a global other than numpy's
      array reconstruction.
    Cifar10FormatError: If the file is not a well-formed batch.
  """
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
      f"{source} holds a {type(batch).__name__}, not the dict of a CIFAR-10 "
      "batch."
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
      f"{source}: 'labels' must be a list of integers, got {labels.dtype} "
      "values."
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
  # Each row holds the red, then green, then blue 32x32 plane.
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels.astype(np.int32)


def _read_folder(
  folder: pathlib.Path,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Reads all batches of an unpacked ``cifar-10-batches-py`` folder.

  Args:
    folder: The folder.

  Returns:
    A dict from batch name to ``(images, labels)``.

  Raises:
    Cifar10FormatError: If a batch file is missing or malformed.
  """
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


def _read_archive(
  archive: pathlib.Path, sha256: str | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Reads all batches straight from the official archive, unpacking nothing.

  Only the regular-file members named ``cifar-10-batches-py/<batch>`` are
  read; nothing is written to disk, so member paths cannot escape.

  Args:
    archive: The ``cifar-10-python.tar.gz`` file.
    sha256: Its expected SHA-256, checked before it is opened (once per
      file version); None skips the check.

  Returns:
    A dict from batch name to ``(images, labels)``.

  Raises:
    download_lib.ChecksumMismatchError: If the archive's SHA-256 differs.
    Cifar10FormatError: If the archive is corrupt or lacks a batch.
  """
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


def _concatenate(
  parts: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
  """Concatenates ``(images, labels)`` pairs."""
  return (
    np.concatenate([images for images, _ in parts]),
    np.concatenate([labels for _, labels in parts]),
  )


def _check_val_size(val_size: int, num_examples: int | None = None) -> None:
  """Raises ValueError unless ``val_size`` is an integer in ``[0, N)``.

  Args:
    val_size: The requested validation set size.
    num_examples: The number of training examples ``N``, or None to check only
      that ``val_size`` is a non-negative integer.
  """
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
  """Splits off the last ``val_size`` examples as the validation set.

  Args:
    images: Training images, shape ``(N, ...)``.
    labels: Training labels, shape ``(N,)``.
    val_size: How many examples to hold out, ``0 <= val_size < N``.

  Returns:
    ``(train_images, train_labels, val_images, val_labels)``: the first
    ``N - val_size`` and the last ``val_size`` examples.

  Raises:
    ValueError: If ``val_size`` is not an integer in ``[0, N)``.
  """
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
  """Full batches in an epoch.

  Raises:
    ValueError: If the training set is smaller than one batch.
  """
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

  The data folders are searched in the order of
  :func:`examples.common.download.data_dirs`; in each, an unpacked
  ``cifar-10-batches-py/`` folder is preferred to a ``cifar-10-python.tar.gz``
  archive. If none holds either, the archive is downloaded into the first
  data folder (when ``download`` is true).

  Args:
    data_dir: An explicit data folder (the ``--data-dir`` option), or None.
    download: Whether to download the archive when it is not found.
    val_size: How many of the 50,000 training images, taken from the end, form
      the validation set; the paper uses 10,000.
    verify: Whether to check an archive found on disk against its SHA-256
      (a downloaded one is always checked). An unpacked folder is checked
      for the official layout only: the data set's publishers give no
      checksums for the unpacked files.
    url: Where to download the archive from.
    archive_sha256: The archive's expected SHA-256, checked after a download
      and before an archive is read.

  Returns:
    A :class:`Cifar10` with ``uint8`` NHWC images and ``int32`` labels.

  Raises:
    examples.common.download.DatasetNotFoundError: If the data set is neither
      found nor downloadable.
    examples.common.download.ChecksumMismatchError: If the archive is not the
      official one.
    Cifar10FormatError: If the files are not in the official layout.
    RefusedGlobalError: If a batch refers to a global other than numpy's
      array reconstruction (a tampered file); a ``pickle.UnpicklingError``.
    ValueError: If ``val_size`` is out of range.
  """
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
  train_images, train_labels = _concatenate(
    [batches[name] for name in TRAIN_BATCH_NAMES]
  )
  test_images, test_labels = batches[TEST_BATCH_NAME]
  train_images, train_labels, val_images, val_labels = split_train_val(
    train_images, train_labels, val_size
  )
  return Cifar10(
    train_images=train_images,
    train_labels=train_labels,
    val_images=val_images,
    val_labels=val_labels,
    test_images=test_images,
    test_labels=test_labels,
  )
