"""The ``metrics.jsonl`` file of a training run: one JSON object per line.

A run appends one record per evaluation. A checkpoint remembers how many
records existed when it was written; resuming from it first truncates the file
to that many records, so that evaluations done after the checkpoint (and
repeated after resuming) are neither lost nor duplicated.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

METRICS_FILE_NAME = "metrics.jsonl"


class MetricsLog:
  """Appends records to, reads and truncates a JSON-lines file.

  Args:
    path: The file; its folder must exist.
    writable: Whether this process writes the file. In a multi-process run
      only process 0 should; the others keep the records in memory only.

  Raises:
    ValueError: If an existing file has a line that is not a JSON object.
  """

  def __init__(self, path: str | os.PathLike, *, writable: bool = True):
    self.path = pathlib.Path(path)
    self.writable = writable
    self._records: list[dict[str, Any]] = self._read()

  def _read(self) -> list[dict[str, Any]]:
    if not self.path.exists():
      return []
    records = []
    with open(self.path, encoding="utf-8") as file:
      for number, line in enumerate(file, start=1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except json.JSONDecodeError as error:
          raise ValueError(
            f"{self.path}, line {number}, is not JSON ({error}); the metrics "
            "file is damaged. Delete that line, or start a new run in another "
            "--out-dir."
          ) from error
        if not isinstance(record, dict):
          raise ValueError(f"{self.path}, line {number}, is not a JSON object.")
        records.append(record)
    return records

  @property
  def records(self) -> list[dict[str, Any]]:
    """A copy of all records, oldest first."""
    return [dict(record) for record in self._records]

  def __len__(self) -> int:
    return len(self._records)

  def append(self, record: dict[str, Any]) -> None:
    """Adds a record and, if writable, appends it to the file at once.

    Args:
      record: A JSON-serialisable dict (NaN and infinities are written as
        ``NaN``/``Infinity``, which Python's ``json`` reads back).
    """
    line = json.dumps(record, sort_keys=True)
    self._records.append(json.loads(line))
    if self.writable:
      with open(self.path, "a", encoding="utf-8") as file:
        file.write(line + "\n")
        file.flush()

  def truncate(self, num_records: int) -> None:
    """Keeps only the first ``num_records`` records (rewriting the file).

    The file is replaced atomically: a crash leaves the old or the new
    content, never a mix.

    Args:
      num_records: How many records to keep.

    Raises:
      ValueError: If there are fewer than ``num_records`` records, i.e. the
        file lost records that a checkpoint counted.
    """
    if num_records > len(self._records):
      raise ValueError(
        f"{self.path} holds {len(self._records)} records but the checkpoint "
        f"counted {num_records}: the metrics file was truncated or replaced. "
        "Restore it, or start a new run in another --out-dir."
      )
    if num_records == len(self._records):
      return
    del self._records[num_records:]
    if self.writable:
      temporary = self.path.with_name(self.path.name + ".tmp")
      with open(temporary, "w", encoding="utf-8") as file:
        for record in self._records:
          file.write(json.dumps(record, sort_keys=True) + "\n")
      os.replace(temporary, self.path)
