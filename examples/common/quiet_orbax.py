"""Keeps what Orbax prints about a failed operation off the terminal.

When one array of a restore or save fails, Orbax ends its event loop at once
and raises, and leaves the reads and writes still under way behind. What they
print only repeats the error raised, which the caller reports in one line, yet
it comes by three ways, each hundreds of lines:

* log records of absl (Orbax's traceback of every failed thread) and asyncio
  ("Task exception was never retrieved", "Task was destroyed but it is
  pending");
* ``sys.unraisablehook``: "Exception ignored in: <coroutine object ...>" for
  every Orbax coroutine closed while pending, and Tensorstore callbacks that
  find the event loop closed;
* warnings that a coroutine "was never awaited".

:func:`quiet_orbax` stops all three for one operation and puts the previous
handlers back afterwards. After a failure it first waits until the leftovers
are gone, so that none of them reaches the terminal later.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import pathlib
import sys
import time
import traceback
import warnings
import weakref
from collections.abc import Iterator

import orbax.checkpoint as ocp

_NOISY_LOGGERS = ("absl", "asyncio")
"""Orbax logs through absl; asyncio reports tasks whose error was not read."""

_STEP_METADATA_NOTES = (
  "Metadata file does not exist",
  "Failed to read Metadata file",
  "Failed to json parse Metadata file",
)
"""Orbax's notes on a step's own metadata file, which only holds the save
time: the restore itself says whether the step is intact."""

_ORBAX_DIR = str(pathlib.Path(ocp.__file__).parent)
_LEFTOVER_TIMEOUT = 10.0
"""Seconds to wait for the reads and writes a failed operation left behind."""


class _HoldRecords(logging.Filter):
  """Keeps the records that reach a logger instead of letting them through."""

  def __init__(self):
    super().__init__()
    self.held: list[logging.LogRecord] = []

  def filter(self, record: logging.LogRecord) -> bool:
    self.held.append(record)
    return False


def _is_leftover(unraisable) -> bool:
  """Whether an unraisable exception comes from a failed Orbax operation."""
  error = unraisable.exc_value
  if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
    return True  # a Tensorstore callback after Orbax closed its loop
  # An Orbax coroutine closed while pending turns GeneratorExit into its
  # own error ("Encountered error while reading array index ...").
  code = getattr(unraisable.object, "cr_code", None)
  return code is not None and code.co_filename.startswith(_ORBAX_DIR)


def _release_leftovers(error: BaseException) -> None:
  """Waits until the tasks that the failed operation left pending are freed.

  Orbax closes its event loop without cancelling them. They are freed, and
  their coroutines closed, once nothing refers to them: not the frames of
  ``error``'s traceback (whose variables are cleared; the traceback itself
  still prints), and not Tensorstore, once its read or write completes.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    traceback.clear_frames(error.__traceback__)
    error = error.__cause__ or error.__context__
  pending = [
    weakref.ref(task)
    for task in gc.get_objects()
    if isinstance(task, asyncio.Task) and task.get_loop().is_closed()
  ]
  deadline = time.monotonic() + _LEFTOVER_TIMEOUT
  gc.collect()
  while any(ref() is not None for ref in pending):
    if time.monotonic() > deadline:
      return
    time.sleep(0.01)
    gc.collect()


@contextlib.contextmanager
def quiet_orbax() -> Iterator[None]:
  """Silences Orbax, asyncio and Tensorstore about an operation that fails.

  Log records of absl and asyncio are held back: if the operation fails they
  are dropped, else let through (but for Orbax's notes on a step's metadata
  file). Unraisable exceptions of Orbax's coroutines and callbacks and
  warnings of coroutines never awaited are dropped; any other unraisable
  exception reaches the previous hook. Everything is put back on exit.
  """
  hold = _HoldRecords()
  loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
  previous_hook = sys.unraisablehook

  def unraisable_hook(unraisable) -> None:
    if not _is_leftover(unraisable):
      previous_hook(unraisable)

  for logger in loggers:
    logger.addFilter(hold)
  sys.unraisablehook = unraisable_hook
  try:
    with warnings.catch_warnings():
      warnings.filterwarnings(
        "ignore", r"coroutine '.*' was never awaited", RuntimeWarning
      )
      try:
        yield
      # Not on a second Ctrl-C (KeyboardInterrupt), which must stop at once.
      except (Exception, asyncio.CancelledError) as error:
        _release_leftovers(error)
        raise
  finally:
    sys.unraisablehook = previous_hook
    for logger in loggers:
      logger.removeFilter(hold)
  for record in hold.held:
    if not record.getMessage().startswith(_STEP_METADATA_NOTES):
      logging.getLogger(record.name).handle(record)
