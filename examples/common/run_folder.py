"""The run folder: its layout, ``config.json``, and what a failed write raises.

A run lives in one folder, which holds

* ``config.json``: the run's settings (the resolved run folder included);
* ``metrics.jsonl``: one JSON record per evaluation, oldest first (see
  :mod:`examples.common.metrics_log`);
* ``checkpoints/<step>/``: the latest few Orbax checkpoints (see
  :mod:`examples.common.checkpoints`);
* ``checkpoints-damaged/``: checkpoints that did not restore, moved out of
  Orbax's folder (never deleted), and the records of a run started again
  with ``--restart-if-damaged``.

:func:`prepare` refuses a folder that holds a run unless resuming, and then
checks that the settings which shape the computation are unchanged. Every
write that fails raises :class:`WriteError`, whose message says what to do.
"""

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
DAMAGED_DIR = "checkpoints-damaged"
"""Where checkpoints that did not restore are moved (outside Orbax's folder)."""


class WriteError(OSError):
  """Raised when the run folder cannot be written (a full disk, no permission).

  Whatever was written before stays usable: a checkpoint that fails to save
  leaves only Orbax's temporary folder, which the next start removes.

  Attributes:
    errno: The operating system's error number, or None if unknown.
  """

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
    self.errno = number  # after OSError's constructor, which sets it to None


def _os_error_number(error: BaseException) -> int | None:
  """The OS error number behind ``error``, from it or what it was raised from.

  Tensorstore reports a failed write as a ``ValueError`` whose message ends
  with ``[os_error_code='28']``; Python's own writes raise ``OSError``.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno:
      return error.errno
    match = re.search(r"os_error_code='(\d+)'", str(error))
    if match:
      return int(match.group(1))
    error = error.__cause__ or error.__context__
  return None


def one_line(error: BaseException | None, limit: int = 200) -> str:
  """One line about ``error``: its type and its message, shortened.

  Tensorstore's messages carry the whole JSON spec of the array after the
  reason (``... [tensorstore_spec='{...}']``), which is cut off.
  """
  if error is None:
    return "it failed on another process"
  lines = str(error).strip().splitlines() or [""]
  text = re.split(r"\s\[(?:tensorstore_spec|os_error_code|source)", lines[0])[0]
  # Tensorstore chains its contexts ("OUT_OF_RANGE: Error opening ...: Error
  # reading ...: Requested byte range ..."); the first and last say it.
  parts = text.split(": ")
  if len(parts) > 2:
    text = f"{parts[0]}: ... {parts[-1]}"
  text = f"{type(error).__name__}: {text}" if text else type(error).__name__
  if len(text) > limit:
    text = text[: limit - 3] + "..."
  return text


def write_atomically(path: pathlib.Path, text: str) -> None:
  """Replaces ``path`` by ``text`` at once: a crash leaves the old or new file.

  Raises:
    WriteError: If the file cannot be written.
  """
  temporary = path.with_name(f".{path.name}.tmp")
  try:
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
  except OSError as error:
    raise WriteError(f"Could not write {path}", error) from error


def flatten(config: dict[str, Any]) -> dict[str, Any]:
  """Settings as a flat dict, nested ones under dotted keys (``model.n_layer``)."""
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
  out_dir: pathlib.Path,
  config: dict[str, Any],
  *,
  resume: bool,
  resumable: Collection[str],
  is_writer: bool,
) -> None:
  """Checks the run folder against the settings and writes ``config.json``.

  Args:
    out_dir: The run folder (absolute); created if missing.
    config: The settings, flattened (see :func:`flatten`).
    resume: Whether the run continues the one in ``out_dir``.
    resumable: Settings that may differ from the saved ones when resuming.
    is_writer: Whether this process writes ``config.json`` (process 0).

  Raises:
    FileExistsError: If not resuming and ``out_dir`` already holds a run.
    ValueError: If resuming with settings that differ from the saved ones.
    WriteError: If ``config.json`` cannot be written.
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
    changed = sorted(
      name
      for name in set(saved) | set(config)
      if name not in resumable and saved.get(name) != config.get(name)
    )
    if changed:
      details = ", ".join(
        f"{name}: {saved.get(name)!r} -> {config.get(name)!r}"
        for name in changed
      )
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
