"""Tests of the presets' learning-rate grids
(``benchmarks/reproduce/presets.py``).
"""

from __future__ import annotations

import pytest

from benchmarks.reproduce.presets import extend_grid, log_grid


def test_log_grid_spacing():
  assert log_grid(-5, -1, per_decade=2) == (
    1e-5,
    3.16e-5,
    1e-4,
    3.16e-4,
    1e-3,
    3.16e-3,
    1e-2,
    3.16e-2,
    0.1,
  )
  assert log_grid(-4, -3) == (1e-4, 2.15e-4, 4.64e-4, 1e-3)
  with pytest.raises(ValueError):
    log_grid(-1, -5)
  with pytest.raises(ValueError, match="1/3 decades"):
    log_grid(-4, -3.5)


@pytest.mark.parametrize("per_decade", [1, 2, 3])
def test_extend_grid_continues_the_log_spacing(per_decade):
  grid = log_grid(-4, -2, per_decade=per_decade)
  whole = log_grid(-8, 2, per_decade=per_decade)
  start = whole.index(grid[0])
  stop = whole.index(grid[-1])
  assert extend_grid(grid, "high") == whole[stop + 1 : stop + 3]
  assert extend_grid(grid, "low") == whole[start - 2 : start]
  assert extend_grid(grid, "high", points=1) == whole[stop + 1 : stop + 2]
  # An extended grid extends further at the same spacing.
  extended = tuple(sorted((*grid, *extend_grid(grid, "high"))))
  assert extend_grid(extended, "high") == whole[stop + 3 : stop + 5]
