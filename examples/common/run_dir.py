"""The output folder of a training run and its ``config.json``.

A run's folder holds ``config.json`` (the run's settings), ``metrics.jsonl``
(see :mod:`examples.common.metrics`) and ``checkpoints/``. A new run refuses a
folder that already holds a run; resuming checks that the settings which
shape the computation are those the run started with.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Collection
from typing import Any

from examples.common import metrics as metrics_lib

CONFIG_FILE_NAME = "config.json"
CHECKPOINT_DIR_NAME = "checkpoints"


def _has_checkpoints(directory: pathlib.Path) -> bool:
  return directory.is_dir() and any(
    entry.name.isdigit() for entry in directory.iterdir()
  )


def prepare_run_dir(
  out_dir: str | os.PathLike,
  config: dict[str, Any],
  *,
  resume: bool,
  may_change_on_resume: Collection[str],
  writable: bool = True,
) -> pathlib.Path:
  """Creates or checks a run's folder and writes its ``config.json``.

  Args:
    out_dir: The run's folder.
    config: The run's settings, JSON-serialisable.
    resume: Whether the run continues the one in ``out_dir``.
    may_change_on_resume: Settings that may differ from the saved
      ``config.json`` when resuming (e.g. the number of epochs, or where the
      data lives); every other difference is an error.
    writable: Whether this process writes files (process 0 of a multi-process
      run).

  Returns:
    The folder, as an absolute path.

  Raises:
    FileExistsError: If not resuming and ``out_dir`` already holds a run.
    ValueError: If resuming with settings that differ from the saved ones.
  """
  folder = pathlib.Path(out_dir).expanduser().absolute()
  config_path = folder / CONFIG_FILE_NAME
  holds_run = (folder / metrics_lib.METRICS_FILE_NAME).exists() or (
    _has_checkpoints(folder / CHECKPOINT_DIR_NAME)
  )
  if holds_run and not resume:
    raise FileExistsError(
      f"{folder} already holds a training run. Pass --resume to continue it, "
      "or choose another --out-dir."
    )
  if resume and config_path.exists():
    saved = json.loads(config_path.read_text(encoding="utf-8"))
    changed = sorted(
      name
      for name in set(saved) | set(config)
      if name not in may_change_on_resume
      and saved.get(name) != config.get(name)
    )
    if changed:
      details = ", ".join(
        f"{name}: {saved.get(name)!r} -> {config.get(name)!r}"
        for name in changed
      )
      raise ValueError(
        f"Cannot resume the run in {folder} with different settings ({details})."
        " Resume with the original settings (see its config.json), or start a "
        "new run in another --out-dir."
      )
  if writable:
    folder.mkdir(parents=True, exist_ok=True)
    temporary = config_path.with_name(CONFIG_FILE_NAME + ".tmp")
    temporary.write_text(
      json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    os.replace(temporary, config_path)
  return folder
