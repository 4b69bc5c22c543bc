"""Joining the processes of a multi-host run, and noticing when one is lost.

A dead or hung process is noticed after ``--heartbeat-timeout H`` seconds by a
watchdog thread (heartbeat counters in JAX's coordination service) or by CPU
collectives, at worst by JAX's own heartbeat at ``2 H``; one line names it and
the process exits with status 1. A C ``SIGABRT`` handler covers JAX's
uncatchable ``abort()`` when the coordinator dies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any

import jax
import jaxlib

COLLECTIVE_TIMEOUT_FLAG = "--xla_cpu_collective_timeout_seconds"
_FLAG_JAXLIB_VERSIONS = ("0.10.",)  # An unknown XLA flag aborts the process.
_ALIVE_PREFIX = "exadam/alive/"
_EXIT_STATUS = 1


class _Watchdog:
  """Shares heartbeat counters (not times: clocks may differ) with others."""

  def __init__(self, timeout: float):
    self.timeout = timeout
    self.process = jax.process_index()
    self.count = jax.process_count()
    self.last_seen = {p: time.monotonic() for p in range(self.count)}
    self.stopped = threading.Event()
    self._counters: dict[int, str] = {}
    self._client = jax._src.distributed.global_state.client

  def suspect(self) -> str:
    """The process silent longest (the coordinator if unknown)."""
    others = [p for p in range(self.count) if p != self.process]
    if not others:
      return "no other process"
    stalest = min(others, key=self.last_seen.get)
    return f"process {stalest}" + (" (the coordinator)" if stalest == 0 else "")

  def run(self) -> None:
    period = max(0.5, self.timeout / 5)
    beat = 0
    while not self.stopped.wait(period):
      beat += 1
      try:
        self._client.key_value_set(
          f"{_ALIVE_PREFIX}{self.process}", str(beat), allow_overwrite=True
        )
        for key, value in self._client.key_value_dir_get(_ALIVE_PREFIX):
          process = int(key.rsplit("/", 1)[-1])
          if self._counters.get(process) != value:
            self._counters[process] = value
            self.last_seen[process] = time.monotonic()
      except Exception:
        if self.stopped.is_set():
          return
        self.last_seen[0] = -float("inf")
        lost(f"lost contact with {self.suspect()}")
      silent = [
        p
        for p, seen in self.last_seen.items()
        if p != self.process and time.monotonic() - seen > self.timeout
      ]
      if silent and not self.stopped.is_set():
        lost(f"{self.suspect()} stopped answering for {self.timeout:g} s")


_watchdog: _Watchdog | None = None
_abort_handler: Any = None  # Keeps the C callback alive.


def lost(reason: str) -> None:
  """Prints why the run cannot go on and ends the process at once."""
  process = jax.process_index() if _watchdog is None else _watchdog.process
  sys.stderr.flush()
  message = (
    f"error: process {process}: {reason}; the run cannot go on. Start every "
    "process again with --resume to continue from the last checkpoint.\n"
  )
  os.write(2, message.encode())
  os._exit(_EXIT_STATUS)  # Skips JAX's shutdown barrier, which waits for it.


def _suspect() -> str:
  return "a peer process" if _watchdog is None else _watchdog.suspect()


def describe_failure(error: Exception) -> str:
  """Why a collective failed, for :func:`lost`."""
  return (
    f"a collective with {_suspect()} failed "
    f"({str(error).splitlines()[0][:120]})"
  )


def is_peer_failure(error: Exception) -> bool:
  """Whether ``error`` is a collective that failed because a peer is gone."""
  return (
    jax.process_count() > 1
    and isinstance(error, jax.errors.JaxRuntimeError)
    and ("Gloo" in str(error) or "peer" in str(error).lower())
  )


def _install_abort_handler() -> None:
  global _abort_handler
  libc = ctypes.CDLL(None)
  handler_type = ctypes.CFUNCTYPE(None, ctypes.c_int)

  def on_abort(signum: int) -> None:
    del signum
    lost(f"JAX's coordination service lost {_suspect()}")

  _abort_handler = handler_type(on_abort)
  libc.signal.restype = ctypes.c_void_p
  libc.signal.argtypes = [ctypes.c_int, handler_type]
  libc.signal(signal.SIGABRT, _abort_handler)


def initialize(config: Any) -> None:
  """Joins this process to the others; must come before any other JAX call.

  ``config`` is a ``RunConfig``; options it leaves None are detected by JAX
  (Cloud TPU, Slurm, Open MPI, Kubernetes).
  """
  global _watchdog
  timeout = config.heartbeat_timeout
  flags = os.environ.get("XLA_FLAGS", "")
  if COLLECTIVE_TIMEOUT_FLAG not in flags and jaxlib.__version__.startswith(
    _FLAG_JAXLIB_VERSIONS
  ):
    os.environ["XLA_FLAGS"] = f"{flags} {COLLECTIVE_TIMEOUT_FLAG}={timeout}"
  jax.distributed.initialize(
    coordinator_address=config.coordinator_address,
    num_processes=config.num_processes,
    process_id=config.process_id,
    heartbeat_timeout_seconds=2 * timeout,
  )
  _install_abort_handler()
  _watchdog = _Watchdog(timeout)
  threading.Thread(
    target=_watchdog.run, name="exadam-watchdog", daemon=True
  ).start()


def finish() -> None:
  """Stops watching the other processes, before they exit one by one."""
  if _watchdog is not None:
    _watchdog.stopped.set()
