"""JAX's persistent compilation cache, as the trainers and benchmarks use it.

Compiling a training step takes 10-25 s on the CPU. With the cache a second
run of the same model and settings loads the compiled programs from disk
instead: every program is cached, however quickly it compiled (JAX's default
skips those under a second, which together still cost seconds at start;
``$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``, if set, is kept).

The folder, first match wins:

* the trainers' ``--compilation-cache DIR`` option (``off`` turns the cache
  off);
* ``$JAX_COMPILATION_CACHE_DIR``, JAX's own variable;
* ``jax/`` in the cache folder, ``~/.cache/exadam_optax/jax``
  (:func:`examples.common.download.cache_dir`).

``JAX_ENABLE_COMPILATION_CACHE=0``, also JAX's own, turns it off unless the
option names a folder.

A cache never stops a run. An entry that cannot be read (truncated, garbage,
written halfway) is compiled again, and one that cannot be written is
skipped; JAX warns for each, which :func:`enable` turns into a single line on
standard error. Entries of another jaxlib, or another backend version, are
never loaded: their version is part of the key, so they are simply not found.
"""

from __future__ import annotations

import os
import pathlib
import re
import sys
import warnings

from examples.common import download

DIR_ENV_VAR = "JAX_COMPILATION_CACHE_DIR"
ENABLE_ENV_VAR = "JAX_ENABLE_COMPILATION_CACHE"
MIN_TIME_ENV_VAR = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"
OFF = "off"
"""The option's value that turns the cache off."""
_FALSE = ("0", "false", "no", "off", "n", "f")
"""What JAX reads as false in a boolean variable."""

_CACHE_WARNING = r"Error (reading|writing) persistent compilation cache entry"
"""The start of JAX's warning for an entry it could not read or write."""


def folder(option: str | None = None) -> pathlib.Path | None:
  """The cache folder that ``option`` and the environment ask for.

  Args:
    option: The ``--compilation-cache`` option: a folder, ``"off"``, or None
      for the environment's choice.

  Returns:
    The folder, or None if the cache is off.
  """
  if option is not None:
    return None if option.strip().lower() == OFF else pathlib.Path(option)
  if os.environ.get(ENABLE_ENV_VAR, "").strip().lower() in _FALSE:
    return None
  path = os.environ.get(DIR_ENV_VAR)
  return pathlib.Path(path) if path else download.cache_dir() / "jax"


def enable(option: str | None = None) -> pathlib.Path | None:
  """Turns JAX's persistent compilation cache on (or off) for this process.

  Call it before the first compilation. A folder that cannot be created
  leaves the cache off, with one line saying so.

  Args:
    option: As for :func:`folder`.

  Returns:
    The cache folder, or None if the cache is off.
  """
  import jax
  from jax.experimental.compilation_cache import compilation_cache

  path = folder(option)
  if path is not None:
    try:
      path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
      print(
        f"warning: compilation cache off: cannot create {path} "
        f"({error.strerror or error}).",
        file=sys.stderr,
      )
      path = None
  wanted = (path is not None, None if path is None else str(path))
  if wanted != (
    jax.config.jax_enable_compilation_cache,
    jax.config.jax_compilation_cache_dir,
  ):
    # JAX opens its cache, or decides it has none, at the first compilation;
    # a process that compiled before (a test calling two trainers) reopens it.
    compilation_cache.reset_cache()
  jax.config.update("jax_enable_compilation_cache", path is not None)
  if path is None:
    return None
  jax.config.update("jax_compilation_cache_dir", str(path))
  if MIN_TIME_ENV_VAR not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  _one_line_for_cache_errors(path)
  return path


class _CacheNotice:
  """A ``warnings.showwarning`` that prints JAX's cache warnings as one line.

  JAX warns once per program whose entry it could not read or write, with
  the whole exception; a corrupt cache would print dozens. The first becomes
  one line, the rest are dropped, and other warnings go to the previous hook.
  """

  def __init__(self, path: pathlib.Path, previous) -> None:
    self.path = path
    self.previous = previous
    self.printed = False

  def __call__(self, message, category, filename, lineno, file=None, line=None):
    text = str(message)
    if re.match(_CACHE_WARNING, text) is None:
      return self.previous(message, category, filename, lineno, file, line)
    if not self.printed:
      self.printed = True
      print(_notice(self.path, text), file=sys.stderr, flush=True)
    return None


def _notice(path: pathlib.Path, text: str) -> str:
  """The line for JAX's warning ``text`` about the cache at ``path``."""
  reason = text.split("': ", 1)[-1].splitlines()[0] if "': " in text else ""
  reason = f" ({reason})" if reason else ""
  if text.startswith("Error reading"):
    return (
      f"warning: ignoring unreadable entries of the compilation cache {path}"
      f"{reason}; they are compiled again (deleting the folder clears them)."
    )
  return (
    f"warning: cannot write to the compilation cache {path}{reason}; "
    "compiled programs are not kept."
  )


def _one_line_for_cache_errors(path: pathlib.Path) -> None:
  """Routes JAX's cache warnings to one line per process (:class:`_CacheNotice`)."""
  # Shown every time, whatever the filters say (an "error" filter would turn
  # a recoverable cache miss into a failed compilation): the hook dedupes.
  warnings.filterwarnings(
    "always", message=_CACHE_WARNING, category=UserWarning
  )
  hook = warnings.showwarning
  if isinstance(hook, _CacheNotice):
    hook.path = path
  else:
    warnings.showwarning = _CacheNotice(path, hook)
