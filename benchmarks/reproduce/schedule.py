"""Runs the groups of an experiment round-robin, within an optional time budget.

A *group* holds the runs of one arm (see :class:`~benchmarks.reproduce.cnn.CNNRunGroup`
and :class:`~benchmarks.reproduce.gpt.GPTRunGroup`) and advances them one *chunk*
at a time (an epoch, or the iterations between two evaluations). Every round
advances every group by one chunk, so that when the time budget runs out all
arms have trained equally long and the tables compare like with like. Each
chunk's records are written as soon as they exist.

Before a round starts, the schedule checks that the round, timed like the
last one, plus the final evaluation fits in the remaining budget; if not, it
stops there and finishes every group (the CNN's test evaluation).

Groups restored from checkpoints (see :mod:`benchmarks.reproduce.resume`) may
stand at different chunks; each round advances only the groups that are
behind, so they all catch up before the next round.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

FINISH_FRACTION = 0.25
"""Time reserved for the final evaluation, as a fraction of a round."""


class RunGroup(Protocol):
  """What the schedule needs of a group of runs."""

  @property
  def num_chunks(self) -> int: ...

  chunks_done: int

  def start(self) -> list[dict[str, Any]]: ...

  def run_chunk(self) -> list[dict[str, Any]]: ...

  def finish(self) -> list[dict[str, Any]]: ...


@dataclasses.dataclass(frozen=True)
class Outcome:
  """How far a schedule got.

  Attributes:
    rounds_done: Chunks every group completed (in this process and before).
    rounds_planned: Chunks of the full protocol.
    stopped_early: Whether the time budget cut the protocol short.
    round_seconds: Wall time of each round this process ran (the first
      includes compilation).
    total_seconds: Wall time of the whole schedule, earlier processes'
      included.
  """

  rounds_done: int
  rounds_planned: int
  stopped_early: bool
  round_seconds: tuple[float, ...]
  total_seconds: float

  def as_dict(self) -> dict[str, Any]:
    """A JSON-serialisable dict."""
    return dataclasses.asdict(self)


def run_round_robin(
  groups: Sequence[RunGroup],
  write: Callable[[Iterable[dict[str, Any]]], None],
  *,
  time_budget: float | None = None,
  clock: Callable[[], float] = time.monotonic,
  log: Callable[[str], None] = print,
  after_chunk: Callable[[Any, float], None] | None = None,
  elapsed: float = 0.0,
) -> Outcome:
  """Trains every group chunk by chunk, writing records as they come.

  Args:
    groups: The groups; all must have the same number of chunks. A group
      with no chunk done first writes its ``start()`` records.
    write: Called with each batch of records.
    time_budget: Seconds the schedule may take, or None for no limit.
    clock: The time source (seconds).
    log: Receives one progress line per round.
    after_chunk: Called as ``after_chunk(group, seconds used)`` after each
      chunk's records are written (to save a checkpoint).
    elapsed: Seconds the schedule already used before (when resuming).

  Returns:
    How far the schedule got.

  Raises:
    ValueError: If there are no groups, they differ in length, or the budget
      is not positive.
  """
  if not groups:
    raise ValueError("Nothing to run: no groups.")
  lengths = {group.num_chunks for group in groups}
  if len(lengths) != 1:
    raise ValueError(
      f"All groups must have the same number of chunks, got {sorted(lengths)}."
    )
  if time_budget is not None and not time_budget > 0:
    raise ValueError(f"time_budget must be positive, got {time_budget!r}.")
  planned = lengths.pop()
  start = clock() - elapsed
  for group in groups:
    if group.chunks_done == 0:
      write(group.start())
  round_seconds: list[float] = []
  stopped_early = False
  for round_index in range(min(group.chunks_done for group in groups), planned):
    if time_budget is not None and round_seconds:
      needed = round_seconds[-1] * (1.0 + FINISH_FRACTION)
      if clock() - start + needed > time_budget:
        stopped_early = True
        log(
          f"time budget: stopping after {round_index} of {planned} rounds "
          f"({clock() - start:.0f} s of {time_budget:.0f} s used)"
        )
        break
    round_start = clock()
    for group in groups:
      if group.chunks_done == round_index:
        write(group.run_chunk())
        if after_chunk is not None:
          after_chunk(group, clock() - start)
    round_seconds.append(clock() - round_start)
    log(
      f"round {round_index + 1}/{planned}: {round_seconds[-1]:.1f} s "
      f"(total {clock() - start:.0f} s)"
    )
  for group in groups:
    write(group.finish())
  return Outcome(
    rounds_done=min(group.chunks_done for group in groups),
    rounds_planned=planned,
    stopped_early=stopped_early,
    round_seconds=tuple(round_seconds),
    total_seconds=clock() - start,
  )


def seeds_that_fit(
  *,
  chunk_seconds: float,
  compile_seconds: float,
  num_arms: int,
  num_chunks: int,
  time_left: float,
  max_seeds: int,
) -> int:
  """How many seeds per arm fit in the time left, at least 1.

  Assumes every arm costs what the measured one does and that the cost of a
  chunk grows linearly with the number of runs (conservative on an
  accelerator, where runs in one ``vmap`` share the device).

  Args:
    chunk_seconds: Time of one chunk of one run, compiled.
    compile_seconds: Compilation time of one arm's program.
    num_arms: Arms in the experiment.
    num_chunks: Chunks of the protocol.
    time_left: Seconds available.
    max_seeds: The most seeds wanted.

  Returns:
    The number of seeds, between 1 and ``max_seeds``.

  Raises:
    ValueError: If a time is negative or a count below 1.
  """
  if (
    min(chunk_seconds, compile_seconds) < 0
    or min(num_arms, num_chunks, max_seeds) < 1
  ):
    raise ValueError(
      "seeds_that_fit needs non-negative times and counts >= 1, got "
      f"chunk_seconds={chunk_seconds}, compile_seconds={compile_seconds}, "
      f"num_arms={num_arms}, num_chunks={num_chunks}, max_seeds={max_seeds}."
    )
  per_seed = (
    chunk_seconds * num_arms * num_chunks * (1.0 + FINISH_FRACTION / num_chunks)
  )
  available = time_left - compile_seconds * num_arms
  if per_seed <= 0:
    return max_seeds
  return max(1, min(max_seeds, math.floor(available / per_seed)))
