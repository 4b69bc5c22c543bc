"""Keeps what Orbax prints about a failed operation off the terminal.

A failed restore or save closes Orbax's event loop with reads and writes under
way, which repeat the error in hundreds of lines: absl and asyncio log records,
``sys.unraisablehook`` and warnings of coroutines never awaited.
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

_STEP_METADATA_NOTES = (  # the metadata file holds the save time: not needed
  "Metadata file does not exist",
  "Failed to read Metadata file",
  "Failed to json parse Metadata file",
)
_ORBAX_DIR = str(pathlib.Path(ocp.__file__).parent)


def _is_leftover(unraisable) -> bool:
  """Whether an unraisable exception comes from a failed Orbax operation."""
  error = unraisable.exc_value
  if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
    return True  # a Tensorstore callback after Orbax closed its loop
  code = getattr(unraisable.object, "cr_code", None)  # a closed coroutine
  return code is not None and code.co_filename.startswith(_ORBAX_DIR)


def _release_leftovers(error: BaseException) -> None:
  """Clears ``error``'s frames and waits until its pending tasks are freed."""
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
  deadline = time.monotonic() + 10.0  # seconds, for Tensorstore to let go
  gc.collect()
  while any(ref() is not None for ref in pending):
    if time.monotonic() > deadline:
      return
    time.sleep(0.01)
    gc.collect()


@contextlib.contextmanager
def quiet_orbax() -> Iterator[None]:
  """Silences Orbax, asyncio and Tensorstore about an operation that fails.

  Holds back log records (let through on success) and waits out the leftovers.
  """
  held: list[logging.LogRecord] = []

  def hold(record: logging.LogRecord) -> bool:
    held.append(record)
    return False

  loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
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
        yield  # the except lets KeyboardInterrupt (a 2nd Ctrl-C) stop at once
      except (Exception, asyncio.CancelledError) as error:
        _release_leftovers(error)
        raise
  finally:
    sys.unraisablehook = previous_hook
    for logger in loggers:
      logger.removeFilter(hold)
  for record in held:
    if not record.getMessage().startswith(_STEP_METADATA_NOTES):
      logging.getLogger(record.name).handle(record)
