"""The command line of both trainers, generated from their config dataclass.

``--preset NAME`` picks the preset the other options start from; every field
of the config is an option (``--lr``, ``--batch-size``, ``--no-augment``, the
model's ``--n-layer``...), with its docstring as help. :func:`main` then runs
the trainer and turns what can go wrong into one line on standard error:

* a bad option: ``error: ...``, exit status 2;
* an error at run time (data not found, run folder in use, divergence...):
  ``error: ...``, exit status 1; ``--debug`` (or ``EXADAM_DEBUG=1``) shows
  the traceback instead;
* SIGTERM or Ctrl-C: the run saves a checkpoint at the current step, prints
  where it stopped and how to resume, and exits with 128 + the signal number;
* a lost peer in a multi-process run: which process was lost, and that
  ``--resume`` continues from the last checkpoint; exit status 1.

Before training it applies the CPU settings of :mod:`examples.common.cpu_setup`
and turns on JAX's persistent compilation cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from examples.common import cpu_setup, distributed, download, training_run

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
    ValueError: If a value is out of range.
  """
  import tyro  # Only the command line needs it, not the benchmarks.

  preset_parser = argparse.ArgumentParser(prog=prog, add_help=False)
  preset_parser.add_argument("--preset", choices=list(presets))
  known, _ = preset_parser.parse_known_args(argv)
  default = presets[known.preset or next(iter(presets))]
  config_class = type(default)
  parsed = tyro.cli(
    _with_deferred_checks(config_class),
    args=list(argv),
    default=default,
    prog=prog,
    description=f"{description} Presets: {', '.join(presets)}.",
    config=(tyro.conf.OmitArgPrefixes,),
  )
  if hasattr(parsed, _DEFERRED_ERROR):
    raise getattr(parsed, _DEFERRED_ERROR)
  return config_class(
    **{
      field.name: getattr(parsed, field.name)
      for field in dataclasses.fields(parsed)
    }
  )


_DEFERRED_ERROR = "_deferred_error"


def _with_deferred_checks(config_class: type) -> type:
  """``config_class`` with its ``__post_init__`` checks deferred.

  tyro reports a ``ValueError`` from the constructor in a box of its own;
  deferring it lets :func:`main` print it as one line like every other error.
  """

  class Deferred(config_class):
    def __post_init__(self) -> None:
      try:
        super().__post_init__()
      except ValueError as error:
        object.__setattr__(self, _DEFERRED_ERROR, error)

  Deferred.__name__ = Deferred.__qualname__ = config_class.__name__
  Deferred.__doc__ = config_class.__doc__
  return Deferred


def _enable_compilation_cache() -> None:
  """Turns on JAX's persistent compilation cache (unless configured already).

  Compiling a training step takes seconds to tens of seconds on the CPU; with
  the cache a second run of the same model and settings loads the compiled
  program from disk. The folder is ``$JAX_COMPILATION_CACHE_DIR`` if set, else
  ``jax/`` in the data cache folder.
  """
  import jax

  folder = os.environ.get("JAX_COMPILATION_CACHE_DIR")
  jax.config.update(
    "jax_compilation_cache_dir", folder or str(download.cache_dir() / "jax")
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
  _enable_compilation_cache()
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
