"""Finding data sets on disk, or downloading them once, atomically and verified.

A data set is looked for under several *data folders*, in this order:

1. the ``data_dir`` argument (the ``--data-dir`` option of the example scripts);
2. the folder named by the environment variable ``EXADAM_DATA_DIR``;
3. the cache folder ``$XDG_CACHE_HOME/exadam_optax`` (``~/.cache/exadam_optax``
   when ``XDG_CACHE_HOME`` is unset).

Inside a data folder each data set has a fixed relative layout (for example
``tinyshakespeare/input.txt``). When no folder holds it, it is downloaded into
the first folder of that list: the file is streamed to a temporary file beside
its final name, its SHA-256 is checked, and only then is it renamed into place
with :func:`os.replace`, so a half-written or corrupt file never appears under
the final name; a failed download removes the folders it created.

Official files found on disk are checked against their published SHA-256
once: :func:`verify_once` remembers, in the cache folder, the size,
modification time and digest of each file it has verified.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import secrets
import urllib.error
import urllib.request
from collections.abc import Sequence

import tqdm

DATA_DIR_ENV_VAR = "EXADAM_DATA_DIR"
CACHE_SUBDIR = "exadam_optax"
VERIFIED_FILE = "verified.json"
DOWNLOAD_TIMEOUT_SECONDS = 60.0
_CHUNK_BYTES = 1 << 20

PathLike = str | os.PathLike


class DatasetNotFoundError(FileNotFoundError):
  """Raised when a data set is on no data folder and cannot be downloaded."""


class ChecksumMismatchError(ValueError):
  """Raised when a file's SHA-256 differs from the published one."""


@dataclasses.dataclass(frozen=True)
class RemoteFile:
  """A published file that a data set can be downloaded as.

  Attributes:
    url: Where to download it from (any scheme ``urllib`` opens, including
      ``file://``).
    sha256: Its published SHA-256, as 64 hexadecimal digits.
    relative_path: Where it belongs inside a data folder, e.g.
      ``"cifar-10-python.tar.gz"``.
  """

  url: str
  sha256: str
  relative_path: str


def cache_dir() -> pathlib.Path:
  """Returns the cache data folder, ``$XDG_CACHE_HOME/exadam_optax``.

  Returns:
    ``$XDG_CACHE_HOME/exadam_optax`` if ``XDG_CACHE_HOME`` is set and not
    empty, else ``~/.cache/exadam_optax``.
  """
  xdg_cache_home = os.environ.get("XDG_CACHE_HOME")
  base = (
    pathlib.Path(xdg_cache_home)
    if xdg_cache_home
    else pathlib.Path.home() / ".cache"
  )
  return base / CACHE_SUBDIR


def data_dirs(data_dir: PathLike | None = None) -> list[pathlib.Path]:
  """Returns the data folders to search, highest priority first.

  Args:
    data_dir: An explicit data folder (the ``--data-dir`` option), or None.

  Returns:
    ``data_dir`` (if given), then ``$EXADAM_DATA_DIR`` (if set and not empty),
    then :func:`cache_dir`, without duplicates.
  """
  candidates = []
  if data_dir is not None:
    candidates.append(pathlib.Path(data_dir).expanduser())
  env_dir = os.environ.get(DATA_DIR_ENV_VAR)
  if env_dir:
    candidates.append(pathlib.Path(env_dir).expanduser())
  candidates.append(cache_dir())
  unique = []
  for candidate in candidates:
    if candidate not in unique:
      unique.append(candidate)
  return unique


def find_local(
  relative_paths: Sequence[str], data_dir: PathLike | None = None
) -> pathlib.Path | None:
  """Returns the first existing ``folder / relative_path``, or None.

  Folders are tried in the order of :func:`data_dirs`; within one folder the
  relative paths are tried in the given order.

  Args:
    relative_paths: The accepted layouts of the data set inside a data folder,
      preferred first.
    data_dir: An explicit data folder, or None.

  Returns:
    The path found, or None if no data folder holds any of the layouts.
  """
  for folder in data_dirs(data_dir):
    for relative_path in relative_paths:
      path = folder / relative_path
      if path.exists():
        return path
  return None


def sha256_of_file(path: PathLike) -> str:
  """Returns the SHA-256 of a file's bytes as 64 lowercase hexadecimal digits.

  Args:
    path: The file to hash; it is read in chunks, never whole.

  Returns:
    The hexadecimal digest.
  """
  digest = hashlib.sha256()
  with open(path, "rb") as file:
    while chunk := file.read(_CHUNK_BYTES):
      digest.update(chunk)
  return digest.hexdigest()


def verify_sha256(
  path: PathLike, expected_sha256: str, accept_hint: str = ""
) -> None:
  """Checks that a file has the expected SHA-256.

  Args:
    path: The file to check.
    expected_sha256: The expected digest, 64 hexadecimal digits.
    accept_hint: How to use a deliberately different file, for the message.

  Raises:
    ChecksumMismatchError: If the digests differ.
  """
  actual = sha256_of_file(path)
  if actual != expected_sha256.lower():
    raise ChecksumMismatchError(
      f"{path} has SHA-256 {actual}, but {expected_sha256.lower()} was "
      "expected: the file is corrupt, truncated or not the published one. "
      f"Delete it and download it again. {accept_hint}".rstrip()
    )


def verify_once(
  path: PathLike, expected_sha256: str, accept_hint: str = ""
) -> None:
  """:func:`verify_sha256`, skipped for a file version already verified.

  A file counts as verified while its size and modification time are those
  recorded in ``<cache folder>/verified.json`` when it last passed. The
  record is only an optimisation: if the cache folder cannot be written, the
  file is simply hashed every time.

  Raises:
    ChecksumMismatchError: If the digests differ.
  """
  path = pathlib.Path(path).absolute()
  stat = path.stat()
  key = str(path)
  version = [stat.st_size, stat.st_mtime_ns, expected_sha256.lower()]
  record_path = cache_dir() / VERIFIED_FILE
  try:
    verified = json.loads(record_path.read_text(encoding="utf-8"))
  except (OSError, ValueError):
    verified = {}
  if verified.get(key) == version:
    return
  verify_sha256(path, expected_sha256, accept_hint)
  verified[key] = version
  try:
    record_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = record_path.with_name(
      f".{VERIFIED_FILE}.{secrets.token_hex(4)}"
    )
    temporary.write_text(json.dumps(verified, indent=1), encoding="utf-8")
    os.replace(temporary, record_path)
  except OSError:
    pass


def download_file(url: str, destination: PathLike, sha256: str) -> pathlib.Path:
  """Downloads ``url`` to ``destination`` atomically, checking its SHA-256.

  The bytes are streamed (with a progress bar) to a temporary file in the
  destination's folder, hashed on the way, and renamed to ``destination`` with
  :func:`os.replace` only if the hash matches. On any failure the temporary
  file is removed and ``destination`` is left untouched.

  Args:
    url: The source; any scheme ``urllib.request.urlopen`` supports.
    destination: The final path; its parent folders are created.
    sha256: The expected SHA-256 of the file, 64 hexadecimal digits.

  Returns:
    ``destination`` as a path.

  Raises:
    ChecksumMismatchError: If the downloaded bytes have another SHA-256.
    urllib.error.URLError, OSError: If the source cannot be read or the
      destination cannot be written.
  """
  destination = pathlib.Path(destination)
  created = [
    folder
    for folder in (destination.parent, *destination.parent.parents)
    if not folder.exists()
  ]
  destination.parent.mkdir(parents=True, exist_ok=True)
  temporary_path = destination.with_name(
    f".{destination.name}.{secrets.token_hex(8)}.part"
  )
  try:
    temporary_file = open(temporary_path, "xb")
  except BaseException:
    _remove_empty(created)
    raise
  try:
    with (
      temporary_file,
      urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response,
    ):
      digest = hashlib.sha256()
      content_length = response.headers.get("Content-Length")
      with tqdm.tqdm(
        total=int(content_length) if content_length else None,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"Downloading {destination.name}",
      ) as progress:
        while chunk := response.read(_CHUNK_BYTES):
          temporary_file.write(chunk)
          digest.update(chunk)
          progress.update(len(chunk))
      temporary_file.flush()
      os.fsync(temporary_file.fileno())
    actual = digest.hexdigest()
    if actual != sha256.lower():
      raise ChecksumMismatchError(
        f"The file downloaded from {url} has SHA-256 {actual}, but "
        f"{sha256.lower()} was expected; it was discarded. The download was "
        "corrupted or the file at that address changed."
      )
    os.replace(temporary_path, destination)
  except BaseException:
    temporary_path.unlink(missing_ok=True)
    _remove_empty(created)
    raise
  return destination


def _remove_empty(folders: Sequence[pathlib.Path]) -> None:
  """Removes the folders a failed download created, innermost first."""
  for folder in folders:
    try:
      folder.rmdir()
    except OSError:
      return


def _not_found_message(
  name: str,
  relative_paths: Sequence[str],
  remote: RemoteFile,
  searched: Sequence[pathlib.Path],
  reason: str,
) -> str:
  """Returns the explanation for a :class:`DatasetNotFoundError`."""
  looked_at = "\n".join(
    f"  {folder / relative_path}"
    for folder in searched
    for relative_path in relative_paths
  )
  unpacked = [path for path in relative_paths if path != remote.relative_path]
  unpacked_note = (
    f" (or unpacked, as {' or '.join(unpacked)})" if unpacked else ""
  )
  return (
    f"{name} was not found. Looked for:\n{looked_at}\n{reason}\n"
    f"To provide it, download {remote.url} (SHA-256 {remote.sha256}) and "
    f"save it in a data folder as {remote.relative_path}{unpacked_note}; then "
    "pass that folder with --data-dir DIR (data_dir=DIR), or set the "
    f"environment variable {DATA_DIR_ENV_VAR}=DIR, or use the cache folder "
    f"{cache_dir()}."
  )


def fetch(
  name: str,
  relative_paths: Sequence[str],
  remote: RemoteFile,
  data_dir: PathLike | None = None,
  *,
  download: bool = True,
) -> pathlib.Path:
  """Finds a data set in the data folders, or downloads it into the first one.

  Args:
    name: The data set's name, for messages (e.g. ``"CIFAR-10"``).
    relative_paths: The accepted layouts inside a data folder, preferred
      first; ``remote.relative_path`` should be one of them, and messages call
      the others its unpacked forms.
    remote: Where to download the data set from, and where it goes.
    data_dir: An explicit data folder, or None; see :func:`data_dirs`.
    download: Whether to download the data set when no folder holds it.

  Returns:
    The path of the data set: an existing ``folder / relative_path``, or the
    freshly downloaded ``data_dirs(data_dir)[0] / remote.relative_path``.

  Raises:
    DatasetNotFoundError: If no data folder holds the data set and it may not
      or cannot be downloaded (no network, unreachable address, unwritable
      folder). The message lists every path looked at and how to provide it.
    ChecksumMismatchError: If the downloaded file is not the published one.
  """
  found = find_local(relative_paths, data_dir)
  if found is not None:
    return found
  searched = data_dirs(data_dir)
  if not download:
    raise DatasetNotFoundError(
      _not_found_message(
        name,
        relative_paths,
        remote,
        searched,
        "Downloading was turned off (download=False).",
      )
    )
  destination = searched[0] / remote.relative_path
  try:
    return download_file(remote.url, destination, remote.sha256)
  except (urllib.error.URLError, OSError) as error:
    raise DatasetNotFoundError(
      _not_found_message(
        name,
        relative_paths,
        remote,
        searched,
        f"Downloading it from {remote.url} to {destination} failed: {error}",
      )
    ) from error
