"""A run's ``metrics.jsonl``: one JSON record per evaluation, oldest first."""

from __future__ import annotations

import json
import pathlib
import shutil
import time
from typing import Any

from examples.common.run_folder import WriteError, write_atomically


def parse_json_lines(
  text: str, path: pathlib.Path, *, any_last_line: bool = False
) -> tuple[list[dict[str, Any]], str | None]:
  """Parses JSON lines of objects; returns them and a torn last line or None.

  A non-JSON last line without its newline (a killed append) is torn.
  """
  lines = text.splitlines()
  torn_allowed = any_last_line or (bool(text) and not text.endswith("\n"))
  records = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as error:
      if torn_allowed and number == len(lines):
        return records, line
      raise ValueError(
        f"{path}, line {number}, is not JSON ({error}); the file is damaged. "
        "Delete that line, or start again in another output folder."
      ) from error
    if not isinstance(record, dict):
      raise ValueError(f"{path}, line {number}, is not a JSON object.")
    records.append(record)
  return records, None


class MetricsLog:
  """The records of ``metrics.jsonl``, if any; only the writer writes it."""

  def __init__(self, path: pathlib.Path, *, is_writer: bool):
    self.path = path
    self._is_writer = is_writer
    self.records: list[dict[str, Any]] = []
    self.torn_line: str | None = None  # dropped on reading
    self._rewrite = False  # no final newline: rewrite before appending
    if path.exists():
      text = path.read_text(encoding="utf-8")
      self._rewrite = bool(text) and not text.endswith("\n")
      self.records, self.torn_line = parse_json_lines(text, path)

  def truncate(self, count: int) -> None:
    """Keeps the first ``count`` records, rewriting the file atomically."""
    if count > len(self.records):
      raise ValueError(
        f"{self.path} holds {len(self.records)} records but the checkpoint "
        f"counted {count}: the metrics file was truncated or replaced. "
        "Restore it, or start a new run in another --out-dir."
      )
    if count < len(self.records) or self._rewrite or not self.path.exists():
      del self.records[count:]  # a torn last line implies _rewrite: dropped
      if self._is_writer:
        lines = [json.dumps(r, sort_keys=True) + "\n" for r in self.records]
        write_atomically(self.path, "".join(lines))
      self._rewrite, self.torn_line = False, None

  def append(self, record: dict[str, Any]) -> None:
    """Appends ``record`` (as JSON, with sorted keys)."""
    line = json.dumps(record, sort_keys=True)
    self.records.append(json.loads(line))
    if self._is_writer:
      try:
        with open(self.path, "a", encoding="utf-8") as file:
          file.write(line + "\n")
      except OSError as error:
        raise WriteError(f"Could not write {self.path}", error) from error

  def keep_aside(self, folder: pathlib.Path) -> pathlib.Path | None:
    """Copies the file into ``folder``; None if no records or not the writer."""
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
  """A record as one line: ``step 200, val_loss 1.2345, ...``."""
  return ", ".join(_format(key, value) for key, value in record.items())


def _format(key: str, value: Any) -> str:
  if not isinstance(value, float):
    return f"{key} {value}"
  if key.endswith("per_second"):
    return f"{key} {value:,.0f}"
  if key.endswith(("loss", "acc")):
    return f"{key} {value:.4f}"
  return f"{key} {value:.4g}"
