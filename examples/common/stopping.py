"""Stopping a run cleanly on SIGTERM (a scheduler's preemption) or Ctrl-C."""

from __future__ import annotations

import pathlib
import signal
import threading
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


class RunStopped(Exception):
  """Raised after a stop signal, once the checkpoint at this step exists."""

  def __init__(self, signum: int, step: int, out_dir: pathlib.Path):
    self.signal_name = signal.Signals(signum).name  # "SIGTERM" or "SIGINT"
    self.exit_status = 128 + signum  # as a shell reports it
    self.step = step  # of the checkpoint
    self.out_dir = out_dir
    super().__init__(
      f"{self.signal_name}: stopped at step {step} and saved a checkpoint in "
      f"{out_dir}; run the same command with --resume to continue."
    )


class StopSignals:
  """A context manager that notes SIGTERM and Ctrl-C instead of exiting."""

  def __init__(
    self,
    announce: Callable[[str], None],
    action: str = "saving a checkpoint at the current step",
  ):
    self._announce = announce  # called with a line saying a signal arrived
    self._action = action  # what that line says happens before the stop
    self._received: int | None = None  # on this process
    self.signal: int | None = None  # once every process knows of it
    self._saved_handlers: dict[int, Any] = {}

  def __enter__(self) -> StopSignals:  # Python signals the main thread only
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._saved_handlers[signum] = signal.signal(signum, self._on_signal)
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._saved_handlers.items():
      signal.signal(signum, handler)
    self._saved_handlers.clear()

  def _on_signal(self, signum: int, frame) -> None:
    del frame
    if self._received is not None:
      raise KeyboardInterrupt  # a second signal stops at once
    self._received = signum
    if jax.process_count() == 1:
      self.signal = signum
    self._announce(
      f"{signal.Signals(signum).name} received: {self._action} (send it "
      "again to stop at once)."
    )

  @property
  def requested(self) -> bool:
    """Whether every process knows of a stop signal."""
    return self.signal is not None

  def exchange(self) -> None:
    """Shares a signal with every process (all call it at the same steps)."""
    if jax.process_count() > 1 and self.signal is None:
      flags = multihost_utils.process_allgather(np.int32(self._received or 0))
      if flags.any():
        self.signal = int(flags[flags > 0][0])
