"""A run's ``metrics.jsonl``: one JSON record per evaluation, oldest first.

Records are appended as they are made. Resuming truncates the file to the
records that the restored checkpoint counted (those written after it will be
computed again), replacing the file atomically. A process killed while
appending a record leaves a last line cut short, without its newline: it is
dropped on reading, and said so once. Damage anywhere else is an error.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import time
from typing import Any

from examples.common.run_folder import WriteError, write_atomically


class MetricsLog:
  """The records of ``metrics.jsonl``, as read and as appended since.

  Args:
    path: The file; it may be missing (no records yet).
    is_writer: Whether this process writes the file (process 0); the others
      keep the records in memory only.

  Attributes:
    torn_line: The last line dropped on reading because a killed write cut
      it short, or None.

  Raises:
    ValueError: If a line other than a torn last one is not a JSON object.
  """

  def __init__(self, path: pathlib.Path, *, is_writer: bool):
    self.path = path
    self._is_writer = is_writer
    self.records: list[dict[str, Any]] = []
    self.torn_line: str | None = None
    # A file without its final newline must be rewritten before appending.
    self._rewrite = False
    if path.exists():
      self._read()

  def _read(self) -> None:
    text = self.path.read_text(encoding="utf-8")
    lines = text.splitlines()
    self._rewrite = bool(text) and not text.endswith("\n")
    for number, line in enumerate(lines, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as error:
        if self._rewrite and number == len(lines):
          self.torn_line = line
          break
        raise ValueError(
          f"{self.path}, line {number}, is not JSON ({error}); the metrics "
          "file is damaged. Delete that line, or start a new run in another "
          "--out-dir."
        ) from error
      if not isinstance(record, dict):
        raise ValueError(f"{self.path}, line {number}, is not a JSON object.")
      self.records.append(record)

  def truncate(self, count: int) -> None:
    """Keeps the first ``count`` records, rewriting the file if needed.

    Raises:
      ValueError: If the file holds fewer than ``count`` records.
      WriteError: If the file cannot be written.
    """
    if count > len(self.records):
      raise ValueError(
        f"{self.path} holds {len(self.records)} records but the checkpoint "
        f"counted {count}: the metrics file was truncated or replaced. "
        "Restore it, or start a new run in another --out-dir."
      )
    if (
      count < len(self.records)
      or self._rewrite
      or self.torn_line is not None
      or not self.path.exists()
    ):
      del self.records[count:]
      if self._is_writer:
        write_atomically(
          self.path,
          "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records),
        )
      self._rewrite, self.torn_line = False, None

  def append(self, record: dict[str, Any]) -> None:
    """Appends ``record`` (as JSON, with sorted keys).

    Raises:
      WriteError: If the file cannot be written.
    """
    line = json.dumps(record, sort_keys=True)
    self.records.append(json.loads(line))
    if self._is_writer:
      try:
        with open(self.path, "a", encoding="utf-8") as file:
          file.write(line + "\n")
      except OSError as error:
        raise WriteError(f"Could not write {self.path}", error) from error

  def keep_aside(self, folder: pathlib.Path) -> pathlib.Path | None:
    """Copies the file to ``folder/metrics-<UTC time>.jsonl``.

    Returns:
      The copy, or None if there are no records or this process does not
      write the file.

    Raises:
      WriteError: If the copy cannot be written.
    """
    if not (self._is_writer and self.records):
      return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = folder / f"metrics-{stamp}.jsonl"
    try:
      kept.parent.mkdir(parents=True, exist_ok=True)
      shutil.copyfile(self.path, kept)
    except OSError as error:
      raise WriteError(f"Could not write {kept}", error) from error
    return kept


def format_record(record: dict[str, Any]) -> str:
  """A record as one line for the terminal: ``step 200, val_loss 1.2345, ...``."""
  return ", ".join(_format(key, value) for key, value in record.items())


def _format(key: str, value: Any) -> str:
  if not isinstance(value, float):
    return f"{key} {value}"
  if key.endswith("per_second"):
    return f"{key} {value:,.0f}"
  if key.endswith(("loss", "acc")):
    return f"{key} {value:.4f}"
  return f"{key} {value:.4g}"
