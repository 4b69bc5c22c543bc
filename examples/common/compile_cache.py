"""JAX's persistent compilation cache, as the trainers and benchmarks use it.

Every program is cached unless ``$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``
is set (JAX's default skips quick ones, which add up). Unreadable entries are
compiled again and unwritable ones skipped, with one line of warning; entries
of another jaxlib or backend are never loaded (their version is in the key).
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
_FALSE = ("0", "false", "no", "off", "n", "f")  # What JAX reads as false.
_CACHE_WARNING = r"Error (reading|writing) persistent compilation cache entry"


def folder(option: str | None = None) -> pathlib.Path | None:
  """The cache folder asked for, or None if the cache is off.

  First that applies: ``option`` (a folder or ``"off"``), a false
  ``$JAX_ENABLE_COMPILATION_CACHE``, ``$JAX_COMPILATION_CACHE_DIR``, ``jax/``
  in :func:`download.cache_dir`.
  """
  if option is not None:
    return None if option.strip().lower() == OFF else pathlib.Path(option)
  if os.environ.get(ENABLE_ENV_VAR, "").strip().lower() in _FALSE:
    return None
  path = os.environ.get(DIR_ENV_VAR)
  return pathlib.Path(path) if path else download.cache_dir() / "jax"


def enable(option: str | None = None) -> pathlib.Path | None:
  """Turns the cache on or off as :func:`folder` says; returns that folder.

  A folder that cannot be created leaves the cache off, with a warning.
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
    # JAX opens its cache at the first compilation; a process that compiled
    # before (a test calling two trainers) must reopen it.
    compilation_cache.reset_cache()
  jax.config.update("jax_enable_compilation_cache", path is not None)
  if path is None:
    return None
  jax.config.update("jax_compilation_cache_dir", str(path))
  if MIN_TIME_ENV_VAR not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
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
  return path


class _CacheNotice:
  """A showwarning hook: JAX's first cache warning as one line, others dropped.

  JAX warns per program, with the whole exception; other warnings pass on.
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
