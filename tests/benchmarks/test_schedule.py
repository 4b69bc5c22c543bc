"""Tests of the round-robin schedule (``benchmarks/reproduce/schedule.py``)."""

from __future__ import annotations

import pytest

from benchmarks.reproduce import schedule


class _FakeGroup:
  def __init__(self, num_chunks, clock, seconds_per_chunk):
    self.num_chunks = num_chunks
    self.clock = clock
    self.seconds = seconds_per_chunk
    self.chunks_done = 0
    self.finished = 0

  def start(self):
    return [{"start": True}]

  def run_chunk(self):
    self.clock.now += self.seconds
    self.chunks_done += 1
    return [{"chunk": self.chunks_done}]

  def finish(self):
    self.finished += 1
    return [{"final": True}]


class _Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_round_robin_stops_every_group_at_the_same_round():
  clock = _Clock()
  groups = [_FakeGroup(10, clock, 5.0), _FakeGroup(10, clock, 5.0)]
  written = []
  outcome = schedule.run_round_robin(
    groups, written.extend, time_budget=45.0, clock=clock, log=lambda _: None
  )
  # Rounds take 10 s; a round plus the finish reserve (12.5 s) must fit:
  # after 30 s a fourth round fits in 45 s, after 40 s a fifth does not.
  assert outcome.rounds_done == 4 and outcome.stopped_early
  assert outcome.rounds_planned == 10
  assert outcome.round_seconds == (10.0,) * 4
  assert outcome.as_dict()["stopped_early"] is True
  assert [g.chunks_done for g in groups] == [4, 4]
  assert [g.finished for g in groups] == [1, 1]
  assert len(written) == 2 + 8 + 2
  full = schedule.run_round_robin(
    [_FakeGroup(2, clock, 1.0)], written.extend, clock=clock, log=lambda _: None
  )
  assert full.rounds_done == 2 and not full.stopped_early
  with pytest.raises(ValueError, match="same number"):
    schedule.run_round_robin(
      [_FakeGroup(2, clock, 1.0), _FakeGroup(3, clock, 1.0)], written.extend
    )
  with pytest.raises(ValueError, match="no groups"):
    schedule.run_round_robin([], written.extend)


def test_seeds_that_fit():
  fit = schedule.seeds_that_fit(
    chunk_seconds=1.0,
    compile_seconds=10.0,
    num_arms=6,
    num_chunks=100,
    time_left=1500.0,
    max_seeds=5,
  )
  # 1440 s left after compiling, 600.15 s per seed.
  assert fit == 2
  assert (
    schedule.seeds_that_fit(
      chunk_seconds=10.0,
      compile_seconds=0.0,
      num_arms=6,
      num_chunks=100,
      time_left=100.0,
      max_seeds=3,
    )
    == 1
  )
  with pytest.raises(ValueError, match="non-negative"):
    schedule.seeds_that_fit(
      chunk_seconds=-1.0,
      compile_seconds=0.0,
      num_arms=1,
      num_chunks=1,
      time_left=1.0,
      max_seeds=1,
    )
