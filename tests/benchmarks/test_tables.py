"""Tests of the tables (``benchmarks/reproduce/tables.py``): the paper's
tables, convergence speed and the tuned comparisons, on synthetic records.
"""

from __future__ import annotations

import math

import pytest

from benchmarks.reproduce import tables
from tests.benchmarks.conftest import (
  eval_records,
  final_records,
  two_arm_cnn_records,
)


def test_tables_1_and_2_show_mean_sd_and_paper_numbers():
  evals = two_arm_cnn_records()
  table1 = tables.table1(evals, ["exadam", "adam"])
  assert (
    "| EXAdam | 2 | 50.00 ± 14.14 | 97.72 | 80.00 ± 0.00 | 90.98 |" in table1
  )
  assert "epoch 4" in table1
  table2 = tables.table2(evals, ["exadam", "adam"])
  assert "| Adam | 2 | 60.00 ± 14.14 | 89.66 |" in table2


def test_table3_reports_best_validation_loss_and_where():
  evals = []
  for arm, val in (("exadam", [4.0, 1.5, 1.8]), ("adam", [4.0, 2.0, 1.6])):
    evals += eval_records(
      arm,
      "step",
      [0, 500, 1000],
      {"val_loss": [val, val], "train_loss": [[4.0, 1.0, 0.5]] * 2},
    )
  table = tables.table3(evals, ["exadam", "adam"])
  assert "1.500 @ 500" in table
  assert "1.497 @ 2000" in table  # the paper's best for EXAdam
  assert "1.600 @ 1000" in table


def test_mean_sd_formats_seeds_and_divergence():
  assert tables.mean_sd([0.5, 0.7], scale=100) == "60.00 ± 14.14"
  assert tables.mean_sd([1.23456], digits=3) == "1.235"
  assert tables.mean_sd([1.0, math.nan, math.nan]) == "diverged (2/3)"


def _speed_records():
  """Target 0.625 (Adam's final seed mean); Adam's seed 1 never reaches it."""
  curves = {
    "exadam": [
      [0.25, 0.5, 0.75, 0.875],  # crosses at 2.5
      [0.5, 0.75, 0.875, 0.875],  # 1.5
      [0.5, 0.75, 0.75, 0.75],  # 1.5
    ],
    "adam": [
      [0.125, 0.25, 0.5, 0.75],  # 3.5
      [0.125, 0.25, 0.375, 0.5],  # never
      [0.25, 0.375, 0.5, 0.625],  # 4.0
    ],
  }
  return [
    r
    for arm, values in curves.items()
    for r in eval_records(
      arm, "epoch", [1, 2, 3, 4], {"val_acc": values}, seeds=(0, 1, 2)
    )
  ]


def test_convergence_speed_pairs_the_seeds():
  target, speeds = tables.convergence_speed(
    _speed_records(), ["exadam", "adam"], "cnn", reference="adam"
  )
  assert target == 0.625
  by_arm = {speed.arm: speed for speed in speeds}
  assert by_arm["exadam"].crossings == pytest.approx((2.5, 1.5, 1.5))
  adam = by_arm["adam"]
  assert adam.crossings[0] == pytest.approx(3.5)
  assert adam.crossings[1] is None
  assert adam.crossings[2] == pytest.approx(4.0)
  # Seed by seed, not from mean crossings (1 - 1.83 / 3.75 = 0.51).
  assert adam.speedups[0] == pytest.approx(1 - 2.5 / 3.5)
  assert adam.speedups[1] is None
  assert adam.speedups[2] == pytest.approx(1 - 1.5 / 4.0)
  assert by_arm["exadam"].speedups == pytest.approx((0.0, 0.0, 0.0))
  assert adam.censored == (False, False, False)
  table = tables.convergence_table(target, speeds, "cnn", "adam")
  assert "Target: val_acc >= 62.500%" in table
  paired = tables.mean_sd(
    [100 * (1 - 2.5 / 3.5), 100 * (1 - 1.5 / 4.0)], digits=1
  )
  assert f"| Adam | 3.8 ± 0.4 (2/3 seeds) | {paired}% (2 seeds) |" in table
  assert "| EXAdam | 1.8 ± 0.6 (3/3 seeds) | — |" in table
  with pytest.raises(ValueError, match="reference"):
    tables.convergence_speed(_speed_records(), ["exadam"], "cnn", "adam")


def test_convergence_table_marks_targets_reached_at_the_first_epoch():
  evals = eval_records(
    "exadam", "epoch", [1, 2], {"val_acc": [[0.7, 0.8], [0.7, 0.8]]}
  )
  evals += eval_records(
    "adam", "epoch", [1, 2], {"val_acc": [[0.2, 0.6], [0.2, 0.6]]}
  )
  target, speeds = tables.convergence_speed(
    evals, ["exadam", "adam"], "cnn", reference="adam"
  )
  assert speeds[0].censored == (True, True)
  table = tables.convergence_table(target, speeds, "cnn", "adam")
  assert "| EXAdam | ≤ 1.0 ± 0.0 (2/2 seeds) | — |" in table
  assert "| 50.0 ± 0.0% (2 seeds) |" in table


def test_convergence_speed_of_losses_for_gpt():
  evals = eval_records(
    "exadam", "step", [0, 10, 20], {"val_loss": [[4.0, 2.0, 1.0]]}, seeds=(5,)
  )
  evals += eval_records(
    "adam", "step", [0, 10, 20], {"val_loss": [[4.0, 3.0, 2.0]]}, seeds=(5,)
  )
  target, speeds = tables.convergence_speed(
    evals, ["exadam", "adam"], "gpt", reference="adam"
  )
  assert target == 2.0
  assert speeds[0].crossings == (10.0,) and speeds[1].crossings == (20.0,)
  assert speeds[1].speedups == (0.5,)
  assert "Target: val_loss <= 2.000," in tables.convergence_table(
    target, speeds, "gpt", "adam"
  )


def test_compared_table_for_the_cnn():
  evals = []
  for arm, rate, curves, tests in (
    ("exadam", 1e-4, [[0.5, 0.8, 0.7], [0.5, 0.82, 0.8]], [0.8, 0.82]),
    ("adam", 1e-3, [[0.5, 0.7, 0.6], [0.5, 0.72, 0.7]], [0.7, 0.72]),
    ("sgd", 1e-2, [[0.5, 0.9, 0.6], [0.5, 0.6, 0.6]], [0.9, 0.5]),
  ):
    evals += eval_records(
      arm, "epoch", [1, 2, 3], {"val_acc": curves}, base_lr=rate
    )
    evals += final_records(arm, tests, base_lr=rate)
  rates = {"exadam": 1e-4, "adam": 1e-3, "sgd": 1e-2}
  table, comparisons = tables.compared_table(
    evals, ["exadam", "adam", "sgd"], "cnn", rates
  )
  assert table.splitlines()[0] == (
    "| Optimizer | lr | Seeds | Best val acc % | Final val acc % | "
    "Test acc % | EXAdam minus it, final val acc % (95% CI), Holm p: "
    "verdict |"
  )
  assert (
    "| EXAdam | 0.0001 | 2 | 81.00 ± 1.41 | 75.00 ± 7.07 | 81.00 ± 1.41 | — |"
    in table
  )
  # Final validation accuracy 70 and 80 against 60 and 70: 10 points on
  # both seeds, no spread (but rounding), so p is about 0: better.
  (adam_row,) = [row for row in table.splitlines() if row.startswith("| Adam")]
  assert adam_row.startswith(
    "| Adam | 0.001 | 2 | 71.00 ± 1.41 | 65.00 ± 7.07 | 71.00 ± 1.41 | "
    "+10 (+10 to +10), p "
  )
  assert adam_row.endswith(": better |")
  assert comparisons["adam"].p_holm < 1e-10
  # Against SGD, +10 and +20 points: two seeds cannot tell.
  assert set(comparisons) == {"adam", "sgd"}
  sgd = comparisons["sgd"]
  assert sgd.mean == pytest.approx(0.15)
  assert sgd.word == "unresolved"
  assert f"+15 ({sgd.t_interval[0] * 100:+.3g} to" in table


def test_compared_table_for_mingpt_pairs_the_final_loss():
  evals = eval_records(
    "exadam", "step", [0, 5], {"val_loss": [[4.0, 1.5], [4.0, 1.6]]}
  )
  evals += eval_records(
    "adam", "step", [0, 5], {"val_loss": [[4.0, 1.8], [4.0, 1.9]]}, base_lr=1e-3
  )
  table, comparisons = tables.compared_table(
    evals, ["exadam", "adam"], "gpt", {"exadam": 1e-4, "adam": 1e-3}
  )
  assert "| Best val loss | Final val loss | EXAdam minus it" in table
  assert "Test acc" not in table
  (adam_row,) = [row for row in table.splitlines() if row.startswith("| Adam")]
  assert adam_row.startswith(
    "| Adam | 0.001 | 2 | 1.850 ± 0.071 | 1.850 ± 0.071 | -0.3 (-0.3 to -0.3), p "
  )
  assert adam_row.endswith(": better |")
  assert comparisons["adam"].mean == pytest.approx(-0.3)
