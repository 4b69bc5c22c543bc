"""Tests of the convergence metric (``benchmarks/reproduce/convergence.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.reproduce import convergence


def test_first_reach_interpolates_accuracy_and_loss():
  x = np.array([1.0, 2.0, 3.0])
  accuracy = convergence.first_reach(
    x, np.array([0.1, 0.3, 0.5]), 0.4, higher_is_better=True
  )
  assert accuracy == convergence.Reach(3.0, 2.5)
  loss = convergence.first_reach(
    x, np.array([4.0, 3.0, 1.0]), 2.5, higher_is_better=False
  )
  assert loss.first_eval == 3.0
  assert loss.crossing == pytest.approx(2.25)


def test_first_reach_edge_cases():
  x = np.array([0.0, 50.0, 100.0])
  never = convergence.first_reach(
    x, np.array([3.0, 2.9, np.nan]), 2.0, higher_is_better=False
  )
  assert never == convergence.Reach(None, None)
  at_once = convergence.first_reach(
    x, np.array([0.9, 0.95, 0.97]), 0.5, higher_is_better=True
  )
  assert at_once == convergence.Reach(0.0, 0.0, censored=True)
  with pytest.raises(ValueError, match="ascending"):
    convergence.first_reach(
      np.array([2.0, 1.0]), np.array([0.0, 1.0]), 0.5, higher_is_better=True
    )


def test_speedup():
  assert convergence.speedup(2.0, 4.0) == pytest.approx(0.5)
  assert convergence.speedup(5.0, 4.0) == pytest.approx(-0.25)
  assert convergence.speedup(None, 4.0) is None
  assert convergence.speedup(2.0, None) is None


def test_speedup_bounds_follow_censored_crossings():
  reach = convergence.Reach
  exact, censored = reach(3.0, 2.5), reach(1.0, 1.0, censored=True)
  assert convergence.speedup_bound(exact, exact) == "="
  assert convergence.speedup_bound(censored, exact) == ">="
  assert convergence.speedup_bound(exact, censored) == "<="
  assert convergence.speedup_bound(censored, censored) == "?"
