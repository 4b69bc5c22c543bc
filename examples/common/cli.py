"""The command line of both trainers, generated from their config dataclass.

``--preset NAME`` picks the preset the other options start from; every field
of the config is an option (``--lr``, ``--batch-size``, ``--no-augment``, the
model's ``--n-layer``...), with its docstring as help and the preset's value
as default (tyro does both). :func:`main` then runs the trainer and turns
what can go wrong into one line on standard error:

* a bad option: ``error: ...``, exit status 2;
* an error at run time (data not found, run folder in use, divergence...):
  ``error: ...``, exit status 1; ``--debug`` (or ``EXADAM_DEBUG=1``) shows
  the traceback instead;
* SIGTERM or Ctrl-C: the run saves a checkpoint at the current step, prints
  where it stopped and how to resume, and exits with 128 + the signal number;
* a lost peer in a multi-process run: which process was lost, and that
  ``--resume`` continues from the last checkpoint; exit status 1.

Before training it applies the CPU settings of :mod:`examples.common.cpu_setup`
and turns on JAX's persistent compilation cache
(:mod:`examples.common.compile_cache`, ``--compilation-cache``).
"""

from __future__ import annotations

import argparse
import dataclasses
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
  """The config the command line asks for.

  Args:
    presets: The trainer's presets by name; the first is the default.
    argv: The arguments, without the program name.
    prog: The program's name in the help.
    description: The first lines of the help.

  Returns:
    ``presets[--preset]`` with the other options applied.

  Raises:
    SystemExit: For ``--help`` and for options that cannot be parsed.
    ValueError: If a value is out of range (the config's ``__post_init__``).
  """
  import tyro  # Only the command line needs it, not the benchmarks.

  # The preset is read first, as the defaults of every other option.
  preset_parser = argparse.ArgumentParser(prog=prog, add_help=False)
  preset_parser.add_argument("--preset", choices=list(presets))
  preset = preset_parser.parse_known_args(argv)[0].preset
  default = presets[preset or next(iter(presets))]
  config_class = type(default)
  unchecked = _unchecked(config_class)
  parsed = tyro.cli(
    unchecked,
    args=list(argv),
    default=_convert(unchecked, default),
    prog=prog,
    description=f"{description} Presets: {', '.join(presets)}.",
    # --n-layer rather than --model.n-layer.
    config=(tyro.conf.OmitArgPrefixes,),
  )
  return _convert(config_class, parsed)


def _config_fields(config_class: type) -> dict[str, type]:
  """The fields of ``config_class`` that are configs themselves (the model's),
  with their classes."""
  hints = typing.get_type_hints(config_class)
  return {
    field.name: hints[field.name]
    for field in dataclasses.fields(config_class)
    if isinstance(hints[field.name], type)
    and dataclasses.is_dataclass(hints[field.name])
  }


def _unchecked(config_class: type) -> type:
  """``config_class`` without the ``__post_init__`` checks, its own and those
  of the configs in its fields (the model's).

  tyro reports a ``ValueError`` from a class it builds in a box of its own;
  :func:`parse` converts what tyro parsed into ``config_class`` itself, so
  that :func:`main` prints the error as one line like every other. The help
  still comes from ``config_class``'s docstrings: tyro looks them up along
  the MRO.
  """
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
  """A ``config_class`` with the values of ``config``, a config of it or of
  its :func:`_unchecked` class; the configs in its fields are converted (and
  so checked) first."""
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
  argv: Sequence[str] | None,
  *,
  prog: str,
  description: str,
) -> int:
  """Parses the command line, runs ``train(config)``; returns the exit status.

  Args:
    train: The trainer's ``train`` function.
    presets: Its presets; see :func:`parse`.
    argv: The arguments (without the program name); None reads ``sys.argv``.
    prog: The program's name in the help.
    description: The first lines of the help.

  Returns:
    0 on success, 1 for a run-time error, 2 for a bad option, 128 + the
    signal number if a signal stopped the run.
  """
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
