"""What crashes leave on disk, made on purpose for the tests.

Damaged checkpoints (array files cut short, metadata missing, any files cut
at random sizes), a full disk
(a size-limited tmpfs filled up) and a folder that cannot be written (a
read-only bind mount: the tests run as root, which ignores permissions).
Mounting needs root; where it is not allowed the test is skipped.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import random
import shutil
import subprocess
from collections.abc import Iterator

import pytest

METADATA_FILES = ("_METADATA", "_CHECKPOINT_METADATA", "metadata")
"""Orbax's metadata files in a step folder: the state's tree, the step's
own, and the progress item's JSON."""


def cut_array_files(step_dir: pathlib.Path) -> None:
  """Cuts every array data file of a checkpoint to half its size.

  As a full disk or an interrupted copy leaves them. Orbax keeps the arrays
  in Tensorstore's OCDBT files, in the ``d/`` folders of the state item.
  """
  files = [path for path in step_dir.rglob("*") if path.parent.name == "d"]
  assert files, f"no array files in {step_dir}"
  for path in files:
    os.truncate(path, path.stat().st_size // 2)


def remove_metadata(step_dir: pathlib.Path) -> None:
  """Deletes every metadata file of a checkpoint."""
  files = [path for path in step_dir.rglob("*") if path.name in METADATA_FILES]
  assert files, f"no metadata in {step_dir}"
  for path in files:
    path.unlink()


STATE_INDEX_FILES = (
  "state/_METADATA",
  "state/_sharding",
  "state/manifest.ocdbt",
  "state/ocdbt.process_0/manifest.ocdbt",
)
"""What Orbax and Tensorstore read first to restore the state: its tree, the
shardings, and the OCDBT manifests that locate the arrays' data."""


def cut_random_files(step_dir: pathlib.Path, rng: random.Random) -> list[str]:
  """Cuts files of a checkpoint, drawn by ``rng``, at random sizes.

  One of :data:`STATE_INDEX_FILES` and up to two other files (metadata, the
  progress item, OCDBT data files...).

  Returns:
    What was cut, as ``path: size -> new size`` (for assertion messages).
  """
  # In an order that does not depend on the data files' random names.
  others = sorted(
    (
      path
      for path in step_dir.rglob("*")
      if path.is_file()
      and str(path.relative_to(step_dir)) not in STATE_INDEX_FILES
    ),
    key=lambda path: (str(path.parent), path.stat().st_size, path.name),
  )
  files = [step_dir / rng.choice(STATE_INDEX_FILES)]
  files += rng.sample(others, rng.randint(0, 2))
  cuts = []
  for path in files:
    size = path.stat().st_size
    new_size = rng.randrange(size)
    os.truncate(path, new_size)
    cuts.append(f"{path.relative_to(step_dir)}: {size} -> {new_size}")
  return cuts


DAMAGE = {"cut_arrays": cut_array_files, "no_metadata": remove_metadata}


def _mount(*args: str) -> None:
  subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def _unmount(path: pathlib.Path) -> None:
  # Lazily, so that a file a failed test left open cannot block it.
  subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


@contextlib.contextmanager
def small_filesystem(path: pathlib.Path, size: str = "32m") -> Iterator[None]:
  """Mounts a tmpfs of ``size`` at ``path`` (skips the test if not allowed)."""
  path.mkdir(parents=True, exist_ok=True)
  if shutil.which("mount") is None:
    pytest.skip("no mount command to make a small file system")
  try:
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
  except subprocess.CalledProcessError as error:
    pytest.skip(f"cannot mount a tmpfs here: {error.stderr.strip()}")
  try:
    yield
  finally:
    _unmount(path)


def fill(filesystem: pathlib.Path) -> pathlib.Path:
  """Fills the file system that holds ``filesystem`` with one file.

  Returns:
    The file; delete it to free the space.
  """
  filler = filesystem / "filler"
  # Unbuffered, so that closing it has nothing left to write.
  with open(filler, "wb", buffering=0) as file:
    with contextlib.suppress(OSError):  # until no space is left
      while True:
        file.write(b"\0" * (1 << 20))
  stats = os.statvfs(filesystem)
  assert stats.f_bavail == 0, "the file system is not full"
  return filler


@contextlib.contextmanager
def read_only(folder: pathlib.Path) -> Iterator[None]:
  """Makes ``folder`` read-only with a bind mount (skips if not allowed)."""
  try:
    _mount("--bind", str(folder), str(folder))
  except subprocess.CalledProcessError as error:
    pytest.skip(f"cannot bind-mount here: {error.stderr.strip()}")
  try:
    _mount("-o", "remount,bind,ro", str(folder))
    yield
  finally:
    _unmount(folder)
