"""The run folder: its layout, ``config.json``, what a failed write raises."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import re
from collections.abc import Collection
from typing import Any

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints-damaged"  # bad checkpoints, and records on a restart


class WriteError(OSError):
  """Raised when the run folder cannot be written (full disk, no permission)."""

  def __init__(self, what: str, error: BaseException):
    number = _os_error_number(error)
    cause = os.strerror(number) if number else one_line(error)
    if number in (errno.ENOSPC, errno.EDQUOT):
      remedy = "free some space"
    elif number in (errno.EACCES, errno.EPERM, errno.EROFS):
      remedy = "make the folder writable"
    else:
      remedy = "fix that"
    super().__init__(
      f"{what}: {cause}. The earlier checkpoints are intact: {remedy}, then "
      "run the same command with --resume to continue from the last one."
    )
    self.errno = number  # maybe None; after OSError's __init__, which resets it


def _os_error_number(error: BaseException) -> int | None:
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno:
      return error.errno
    match = re.search(r"os_error_code='(\d+)'", str(error))  # Tensorstore's
    if match:
      return int(match.group(1))
    error = error.__cause__ or error.__context__
  return None


def one_line(error: BaseException | None, limit: int = 200) -> str:
  """One line about ``error``: its type and its message, shortened."""
  if error is None:
    return "it failed on another process"
  lines = str(error).strip().splitlines() or [""]
  text = re.split(r"\s\[(?:tensorstore_spec|os_error_code|source)", lines[0])[0]
  parts = text.split(": ")
  if len(parts) > 2:  # Tensorstore chains contexts; the first and last say it
    text = f"{parts[0]}: ... {parts[-1]}"
  text = f"{type(error).__name__}: {text}" if text else type(error).__name__
  return text[: limit - 3] + "..." if len(text) > limit else text


def write_atomically(path: pathlib.Path, text: str) -> None:
  """Replaces ``path`` by ``text`` atomically: a crash leaves old or new."""
  temporary = path.with_name(f".{path.name}.tmp")
  try:
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
  except OSError as error:
    raise WriteError(f"Could not write {path}", error) from error


def flatten(config: dict[str, Any]) -> dict[str, Any]:
  """Settings as a flat dict, nested ones under dotted keys (``model.n``)."""
  flat = {}
  for name, value in config.items():
    if isinstance(value, dict):
      flat.update({f"{name}.{key}": item for key, item in value.items()})
    else:
      flat[name] = value
  return flat


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
  """The nested dict of a flat one with dotted keys."""
  nested: dict[str, Any] = {}
  for name, value in flat.items():
    head, _, tail = name.partition(".")
    if tail:
      nested.setdefault(head, {})[tail] = value
    else:
      nested[name] = value
  return nested


def prepare(
  out_dir: pathlib.Path,  # absolute; created if missing
  config: dict[str, Any],  # flattened (see flatten)
  *,
  resume: bool,
  resumable: Collection[str],
  is_writer: bool,  # process 0: writes config.json
) -> None:
  """Checks the run folder against the settings and writes ``config.json``.

  Raises FileExistsError on a run not resumed, ValueError on other settings.
  """
  # Through JSON, so that it compares with the saved file (tuples are lists).
  config = json.loads(json.dumps({**config, "out_dir": str(out_dir)}))
  config_path = out_dir / CONFIG_FILE
  checkpoints = out_dir / CHECKPOINT_DIR
  holds_run = (out_dir / METRICS_FILE).exists() or (
    checkpoints.is_dir()
    and any(p.name.isdigit() for p in checkpoints.iterdir())
  )
  if holds_run and not resume:
    raise FileExistsError(
      f"{out_dir} already holds a training run. Pass --resume to continue "
      "it, or choose another --out-dir."
    )
  if resume and config_path.exists():
    saved = flatten(json.loads(config_path.read_text(encoding="utf-8")))
    details = ", ".join(
      f"{name}: {saved.get(name)!r} -> {config.get(name)!r}"
      for name in sorted(set(saved) | set(config))
      if name not in resumable and saved.get(name) != config.get(name)
    )
    if details:
      raise ValueError(
        f"Cannot resume the run in {out_dir} with different settings "
        f"({details}). Resume with the original settings (see its "
        "config.json), or start a new run in another --out-dir."
      )
  if is_writer:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(
      config_path,
      json.dumps(unflatten(config), indent=2, sort_keys=True) + "\n",
    )
