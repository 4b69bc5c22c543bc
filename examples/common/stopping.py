"""Stopping a run cleanly on SIGTERM or Ctrl-C.

SIGTERM is what schedulers send before preemption. While a
:class:`StopSignals` is installed, the first such signal only sets
:attr:`StopSignals.requested`; the training loop then saves a checkpoint at
the current step and ends, and the trainer raises :class:`RunStopped`, which
the command line reports with exit status 128 + the signal's number.
Resuming continues exactly where the run stopped. A second signal stops at
once (``KeyboardInterrupt``), losing what the last checkpoint lacks.
"""

from __future__ import annotations

import pathlib
import signal
import threading
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunStopped(Exception):
  """Raised after a stop signal, once the checkpoint at the current step exists.

  Attributes:
    signal_name: ``"SIGTERM"`` or ``"SIGINT"``.
    exit_status: 128 + the signal's number, as a shell reports it.
    step: The step of the checkpoint.
    out_dir: The run folder.
  """

  def __init__(self, signum: int, step: int, out_dir: pathlib.Path):
    self.signal_name = signal.Signals(signum).name
    self.exit_status = 128 + signum
    self.step = step
    self.out_dir = out_dir
    super().__init__(
      f"{self.signal_name}: stopped at step {step} and saved a checkpoint in "
      f"{out_dir}; run the same command with --resume to continue."
    )


class StopSignals:
  """Notes SIGTERM and Ctrl-C instead of letting them end the process.

  A context manager: it installs its handlers on entry (in the main thread
  only, where Python delivers signals) and puts the previous ones back on
  exit.

  Args:
    announce: Called with a line saying that a signal arrived.
  """

  def __init__(self, announce: Callable[[str], None]):
    self._announce = announce
    self._received: int | None = None  # on this process
    self.signal: int | None = None
    """The signal that stops the run, once every process knows of it."""
    self._saved_handlers: dict[int, Any] = {}

  def __enter__(self) -> StopSignals:
    if threading.current_thread() is threading.main_thread():
      for signum in _STOP_SIGNALS:
        self._saved_handlers[signum] = signal.signal(signum, self._on_signal)
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._saved_handlers.items():
      signal.signal(signum, handler)
    self._saved_handlers.clear()

  def _on_signal(self, signum: int, frame) -> None:
    del frame
    if self._received is not None:
      raise KeyboardInterrupt
    self._received = signum
    if jax.process_count() == 1:
      self.signal = signum
    self._announce(
      f"{signal.Signals(signum).name} received: saving a checkpoint at the "
      "current step (send it again to stop at once)."
    )

  @property
  def requested(self) -> bool:
    """Whether a stop signal arrived (on any process, as of the last exchange)."""
    return self.signal is not None

  def exchange(self) -> None:
    """Shares a signal that arrived on one process with every process.

    In a multi-process run every process must call it at the same points (the
    trainers do where metrics are fetched), so that all see the request at
    the same step; in a single process a signal counts at once.
    """
    if jax.process_count() > 1 and self.signal is None:
      flags = multihost_utils.process_allgather(np.int32(self._received or 0))
      if flags.any():
        self.signal = int(flags[flags > 0][0])
