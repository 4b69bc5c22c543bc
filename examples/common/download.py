"""Finding data sets on disk, or downloading them once, atomically and verified.

A data set lies at a fixed relative path (e.g. ``tinyshakespeare/input.txt``)
in one of the *data folders* (:func:`data_dirs`), or is downloaded into the
first. Official files on disk are checked once against the published SHA-256.
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
  """A published file a data set can be downloaded as (any ``urllib`` URL)."""

  url: str
  sha256: str
  relative_path: str


def cache_dir() -> pathlib.Path:
  """Returns ``$XDG_CACHE_HOME/exadam_optax`` (or ``~/.cache/exadam_optax``)."""
  xdg_cache_home = os.environ.get("XDG_CACHE_HOME")
  base = pathlib.Path(xdg_cache_home or pathlib.Path.home() / ".cache")
  return base / CACHE_SUBDIR


def data_dirs(data_dir: PathLike | None = None) -> list[pathlib.Path]:
  """The data folders to search: ``data_dir``, ``$EXADAM_DATA_DIR``, cache_dir.

  Skips a None ``data_dir`` (``--data-dir``), an empty variable, duplicates.
  """
  candidates = []
  if data_dir is not None:
    candidates.append(pathlib.Path(data_dir).expanduser())
  env_dir = os.environ.get(DATA_DIR_ENV_VAR)
  if env_dir:
    candidates.append(pathlib.Path(env_dir).expanduser())
  candidates.append(cache_dir())
  return list(dict.fromkeys(candidates))


def find_local(
  relative_paths: Sequence[str], data_dir: PathLike | None = None
) -> pathlib.Path | None:
  """The first of ``relative_paths`` found in a data folder, or None."""
  for folder in data_dirs(data_dir):
    for relative_path in relative_paths:
      path = folder / relative_path
      if path.exists():
        return path
  return None


def sha256_of_file(path: PathLike) -> str:
  """The SHA-256 of a file as 64 lowercase hexadecimal digits."""
  digest = hashlib.sha256()
  with open(path, "rb") as file:
    while chunk := file.read(_CHUNK_BYTES):
      digest.update(chunk)
  return digest.hexdigest()


def verify_sha256(
  path: PathLike, expected_sha256: str, accept_hint: str = ""
) -> None:
  """Raises :class:`ChecksumMismatchError` unless a file has that SHA-256.

  ``accept_hint``: how to use a deliberately different file, for the message.
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

  Size and modification time of passing files are kept in
  ``<cache folder>/verified.json`` (if it cannot be written: hashed each time).
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

  Streamed, with a progress bar, to a temporary file renamed into place only
  if the hash matches (else :class:`ChecksumMismatchError`); any failure
  removes it and the folders created. Returns ``destination``.
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


def _not_found(name, relative_paths, remote, searched, reason):
  """The error for a data set on no data folder, saying how to provide it."""
  looked_at = "\n".join(
    f"  {folder / relative_path}"
    for folder in searched
    for relative_path in relative_paths
  )
  unpacked = [path for path in relative_paths if path != remote.relative_path]
  unpacked_note = (
    f" (or unpacked, as {' or '.join(unpacked)})" if unpacked else ""
  )
  return DatasetNotFoundError(
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

  ``name`` is for messages; ``relative_paths`` are the accepted layouts,
  preferred first: ``remote.relative_path`` and its unpacked forms. Raises
  :class:`DatasetNotFoundError`, saying how to provide the data, if it is not
  found and not downloaded; :class:`ChecksumMismatchError` for a bad download.
  """
  found = find_local(relative_paths, data_dir)
  if found is not None:
    return found
  searched = data_dirs(data_dir)
  details = (name, relative_paths, remote, searched)
  if not download:
    raise _not_found(*details, "Downloading was turned off (download=False).")
  destination = searched[0] / remote.relative_path
  try:
    return download_file(remote.url, destination, remote.sha256)
  except (urllib.error.URLError, OSError) as error:
    reason = (
      f"Downloading it from {remote.url} to {destination} failed: {error}"
    )
    raise _not_found(*details, reason) from error
