"""The command line of both trainers, generated from their config dataclass.

Every config field is an option (``--lr``, ``--no-augment``, the model's
``--n-layer``...), with its docstring as help and the ``--preset``'s value as
default. :func:`main` applies :mod:`~examples.common.cpu_setup` and the
compilation cache, runs the trainer, and reports in one line on stderr:

* a bad option: ``error: ...``, exit status 2;
* a run-time error (data not found, run folder in use, divergence...):
  ``error: ...``, exit status 1 (``--debug``, ``EXADAM_DEBUG=1``: traceback);
* SIGTERM or Ctrl-C: a checkpoint is saved at the current step, with where it
  stopped and how to resume; exit status 128 + the signal number;
* a lost peer process: which one, and that ``--resume`` continues from the
  last checkpoint; exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import sys
import traceback
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from examples.common import (
  compile_cache,
  cpu_setup,
  distributed,
  training_run,
)

DEBUG_ENV_VAR = "EXADAM_DEBUG"
RUN_ERRORS = (ValueError, OSError, FloatingPointError, RuntimeError)
"""What a run can raise for reasons of its inputs or environment."""


def parse(
  presets: Mapping[str, Any],
  argv: Sequence[str],
  *,
  prog: str,
  description: str,
) -> Any:
  """``presets[--preset]`` (the first by default) with the options applied.

  ``SystemExit`` for ``--help``; a one-line ``ValueError`` for a bad option.
  """
  import tyro  # Only the command line needs it, not the benchmarks.

  # The preset is read first, as the defaults of every other option.
  preset_parser = argparse.ArgumentParser(
    prog=prog, add_help=False, exit_on_error=False
  )
  preset_parser.add_argument("--preset", choices=list(presets))
  try:
    preset = preset_parser.parse_known_args(argv)[0].preset
  except argparse.ArgumentError as error:
    raise ValueError(f"{error}.") from None
  default = presets[preset or next(iter(presets))]
  config_class = type(default)
  unchecked = _unchecked(config_class)
  box = io.StringIO()
  try:
    with contextlib.redirect_stderr(box):
      parsed = tyro.cli(
        unchecked,
        args=list(argv),
        default=_convert(unchecked, default),
        prog=prog,
        description=f"{description} Presets: {', '.join(presets)}.",
        # --n-layer rather than --model.n-layer.
        config=(tyro.conf.OmitArgPrefixes,),
      )
  except SystemExit as exit_:
    message = _box_message(box.getvalue())
    if exit_.code == 0 or not message:
      sys.stderr.write(box.getvalue())
      raise
    raise ValueError(f"{message} ({prog} --help lists the options)") from None
  sys.stderr.write(box.getvalue())  # tyro's warnings, if any
  return _convert(config_class, parsed)


def _box_message(box: str) -> str:
  """The message of tyro's error box as one line ('' if there is none)."""
  # Title, rule, message, rule, help: boxed (title in the top edge) or plain.
  rules, message = 0, []
  for line in box.splitlines():
    text = line.strip("│|╰╯ ")
    if text.startswith("╭") or (text and set(text) <= set("─-")):
      rules += 1
    elif rules == 1 and text:
      message.append(text)
  return " ".join(message)


def _config_fields(config_class: type) -> dict[str, type]:
  """Fields of ``config_class`` that are configs (the model's), by name."""
  hints = typing.get_type_hints(config_class)
  return {
    field.name: hints[field.name]
    for field in dataclasses.fields(config_class)
    if isinstance(hints[field.name], type)
    and dataclasses.is_dataclass(hints[field.name])
  }


def _unchecked(config_class: type) -> type:
  """``config_class`` and nested configs, without ``__post_init__`` checks."""
  # tyro would box a ValueError; parse() checks by converting, so main()
  # prints it in one line. tyro finds the field docstrings along the MRO.
  namespace: dict[str, Any] = {
    "__doc__": config_class.__doc__,
    "__post_init__": lambda self: None,
  }
  annotations = {
    name: _unchecked(field_class)
    for name, field_class in _config_fields(config_class).items()
  }
  for name, field_class in annotations.items():
    namespace[name] = dataclasses.field(default_factory=field_class)
  namespace["__annotations__"] = annotations
  return dataclasses.dataclass(frozen=True)(
    type(f"Unchecked{config_class.__name__}", (config_class,), namespace)
  )


def _convert(config_class: type, config: Any) -> Any:
  """``config`` (or its unchecked twin) as a checked ``config_class``."""
  nested = _config_fields(config_class)
  return config_class(
    **{
      field.name: (
        _convert(nested[field.name], getattr(config, field.name))
        if field.name in nested
        else getattr(config, field.name)
      )
      for field in dataclasses.fields(config_class)
    }
  )


def main(
  train: Callable[[Any], Any],
  presets: Mapping[str, Any],
  argv: Sequence[str] | None = None,
) -> int:
  """Parses the command line, runs ``train(config)``; returns the exit status.

  0 on success, else as the module docstring lists. The help starts with the
  first line of ``train``'s module docstring; ``argv`` (None: ``sys.argv``)
  excludes the program name.
  """
  module = sys.modules[train.__module__]
  # Run with -m, the module is __main__ and its spec holds the dotted name.
  name = module.__spec__.name if module.__spec__ else module.__name__
  prog = f"python -m {name}"
  description = (module.__doc__ or "").strip().split("\n")[0]
  argv = sys.argv[1:] if argv is None else list(argv)
  debug = "--debug" in argv or os.environ.get(DEBUG_ENV_VAR, "") not in (
    "",
    "0",
  )
  try:
    config = parse(presets, argv, prog=prog, description=description)
  except ValueError as error:
    if debug:
      raise
    print(f"error: {error}", file=sys.stderr)
    return 2
  cpu_setup.configure()
  compile_cache.enable(config.compilation_cache)
  try:
    if config.distributed:
      distributed.initialize(config)
    train(config)
    distributed.finish()
  except training_run.RunStopped as stop:
    distributed.finish()
    print(stop, file=sys.stderr)
    return stop.exit_status
  except KeyboardInterrupt:
    print(
      "error: interrupted before a checkpoint could be saved; --resume "
      "continues from the last one.",
      file=sys.stderr,
    )
    return 130
  except RUN_ERRORS as error:
    if distributed.is_peer_failure(error):
      distributed.lost(distributed.describe_failure(error))
    if debug or config.debug:
      traceback.print_exc()
    else:
      print(f"error: {error}", file=sys.stderr)
    return 1
  return 0
