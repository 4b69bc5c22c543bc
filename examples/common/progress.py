"""A tqdm progress bar that shows the loss and the training throughput."""

from __future__ import annotations

import time

import tqdm


class ProgressBar:
  """Counts training steps and shows loss and examples (or tokens) per second.

  Args:
    total: Total number of steps of the run.
    initial: Steps already done (when resuming).
    unit: What one example is called in the throughput, e.g. ``"img"`` or
      ``"tok"``.
    enabled: Whether to draw the bar at all.
    verbose: Whether :meth:`write` prints (False on all but one process of a
      multi-process run).
  """

  def __init__(
    self,
    total: int,
    initial: int,
    unit: str,
    *,
    enabled: bool,
    verbose: bool = True,
  ):
    self._unit = unit
    self._verbose = verbose
    self._bar = tqdm.tqdm(
      total=total,
      initial=initial,
      unit="step",
      disable=not enabled,
      dynamic_ncols=True,
    )
    self._last_time = time.perf_counter()

  def update(
    self, steps: int, examples: int, loss: float, **extra: str
  ) -> float:
    """Advances the bar and shows the latest loss and throughput.

    Args:
      steps: Steps done since the last update.
      examples: Examples (or tokens) those steps processed.
      loss: The latest training loss.
      **extra: More fields to show, already formatted.

    Returns:
      The throughput in examples (or tokens) per second since the last update.
    """
    now = time.perf_counter()
    throughput = examples / max(now - self._last_time, 1e-9)
    self._last_time = now
    self._bar.set_postfix(
      loss=f"{loss:.4f}",
      **{f"{self._unit}/s": f"{throughput:,.0f}"},
      **extra,
      refresh=False,
    )
    self._bar.update(steps)
    return throughput

  def restart_clock(self) -> None:
    """Excludes the time since the last update (e.g. an evaluation) from the
    next throughput."""
    self._last_time = time.perf_counter()

  def write(self, message: str) -> None:
    """Prints a line without breaking the bar (if verbose)."""
    if self._verbose:
      self._bar.write(message)

  def close(self) -> None:
    """Closes the bar."""
    self._bar.close()
