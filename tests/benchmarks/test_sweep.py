"""Tests of the learning-rate selection (``benchmarks/reproduce/sweep.py``),
on synthetic records.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from benchmarks.reproduce import sweep, tables
from tests.benchmarks.conftest import eval_records, sweep_records


def test_choose_takes_the_best_accuracy_over_training_averaged_over_seeds():
  evals = sweep_records(
    "cnn",
    {
      # Seed means 0.55, 0.6, 0.5: 1e-3 is chosen although seed 7 at 1e-4
      # is the single best run.
      "adam": {1e-4: [0.7, 0.4], 1e-3: [0.6, 0.6], 1e-2: [0.5, 0.5]},
      "sgd": {1e-3: [0.3, 0.3], 1e-2: [0.4, 0.5]},
    },
  )
  # The best epoch counts, not the last: 1e-4 peaks at 0.9 and ends at 0.2.
  for rate, curve in ((1e-4, [0.1, 0.9, 0.2]), (1e-3, [0.1, 0.6, 0.6])):
    evals += eval_records(
      "rmsprop", "epoch", [0, 1, 2], {"val_acc": [curve] * 2}, base_lr=rate
    )
  adam, sgd, rmsprop = sweep.choose(evals, "cnn")
  assert rmsprop.best_lr == 1e-4 and rmsprop.means == pytest.approx((0.9, 0.6))
  assert adam.arm == "adam" and adam.metric == "val_acc"
  assert adam.rates == (1e-4, 1e-3, 1e-2)
  assert adam.means == pytest.approx((0.55, 0.6, 0.5))
  assert adam.stds == pytest.approx((math.sqrt(0.045), 0.0, 0.0))
  assert adam.best_lr == 1e-3 and adam.at_edge is None
  assert adam.score(1e-2) == pytest.approx(0.5)
  assert sgd.best_lr == 1e-2 and sgd.at_edge == "high"
  assert sweep.edges_to_extend([adam, sgd]) == {"sgd": "high"}


def test_choose_takes_the_lowest_loss_and_treats_divergence_as_nan():
  evals = sweep_records(
    "gpt",
    {
      "adam": {1e-4: [1.5, 1.5], 1e-3: [1.6, 1.6], 1e-2: [1.7, 1.7]},
      # A diverged seed at 1e-3 rules the rate out, although its other seed
      # is the best run.
      "sgd": {1e-4: [2.5, 2.5], 1e-3: [math.nan, 1.0], 1e-2: [2.0, 2.0]},
      "signum": {1e-3: [math.inf, math.nan]},
    },
  )
  # The lowest loss over training counts, not the last: 1e-3 ends lowest.
  for rate, curve in ((1e-4, [4.0, 1.2, 3.0]), (1e-3, [4.0, 1.5, 1.5])):
    evals += eval_records(
      "adamw", "step", [0, 1, 2], {"val_loss": [curve] * 2}, base_lr=rate
    )
  choices = {choice.arm: choice for choice in sweep.choose(evals, "gpt")}
  assert choices["adamw"].best_lr == 1e-4
  assert choices["adamw"].means == pytest.approx((1.2, 1.5))
  assert choices["adam"].metric == "val_loss"
  assert choices["adam"].best_lr == 1e-4 and choices["adam"].at_edge == "low"
  sgd = choices["sgd"]
  assert math.isnan(sgd.means[1]) and sgd.best_lr == 1e-2
  assert sgd.at_edge == "high"
  signum = choices["signum"]
  assert signum.best_lr is None and signum.at_edge is None
  assert math.isnan(signum.means[0])
  assert sweep.edges_to_extend(list(choices.values())) == {
    "adam": "low",
    "sgd": "high",
    "adamw": "low",
  }
  table = tables.sweep_table(
    [choices[arm] for arm in ("adam", "sgd", "signum")]
  )
  assert "| 0.0001 | 0.001 | 0.01 | Selected |" in table
  assert "| Adam | **1.500** | 1.600 | 1.700 | 0.0001 (edge of grid) |" in table
  assert "| SGD with momentum | 2.500 | diverged | **2.000** |" in table
  assert "| Signum |  | diverged |  | none |" in table


def test_best_over_training():
  values = np.array([[0.1, 0.5, 0.3], [0.1, math.nan, 0.9]])
  np.testing.assert_array_equal(
    sweep.best_over_training(values, "val_acc"), [0.5, math.nan]
  )
  np.testing.assert_array_equal(
    sweep.best_over_training(values, "val_loss"), [0.1, math.nan]
  )


def _choice(means, metric="val_acc", rates=(1e-4, 1e-3, 1e-2)):
  """A choice as :func:`sweep.choose` makes it from these seed means."""
  finite = [i for i, m in enumerate(means) if math.isfinite(m)]
  pick = max if metric.endswith("acc") else min
  best = rates[pick(finite, key=lambda i: means[i])] if finite else None
  return sweep.Choice(
    arm="exadam",
    metric=metric,
    rates=rates,
    means=tuple(means),
    stds=(0.0,) * len(rates),
    best_lr=best,
  )


def test_refined_lr_is_the_vertex_of_the_parabola_through_the_optimum():
  rates = (1e-5, 1e-4, 1e-3, 1e-2)
  exponents = np.log10(rates)
  # Parabolas in log10(rate) peaking (accuracy) or bottoming out (loss) at
  # 10**-3.3, between the grid points.
  accuracy = _choice(0.9 - (exponents + 3.3) ** 2, rates=rates)
  assert accuracy.best_lr == 1e-3
  assert accuracy.refined_lr() == pytest.approx(10**-3.3, rel=1e-9)
  loss = _choice(1.5 + 2 * (exponents + 3.3) ** 2, "val_loss", rates)
  assert loss.refined_lr() == pytest.approx(10**-3.3, rel=1e-9)
  # Only the best point and its neighbours count.
  skewed = list(loss.means)
  skewed[0] = 100.0
  assert _choice(skewed, "val_loss", rates).refined_lr() == pytest.approx(
    10**-3.3, rel=1e-9
  )


def test_refined_lr_is_none_at_an_edge_or_next_to_a_diverged_rate():
  assert _choice([0.3, 0.5, 0.7]).refined_lr() is None  # the high edge
  assert _choice([0.7, 0.5, 0.3]).refined_lr() is None  # the low edge
  assert _choice([math.nan, 0.6, 0.5]).refined_lr() is None  # diverged
  assert _choice([math.nan] * 3).refined_lr() is None  # no choice at all


def test_transfer_ratio_on_the_grid_and_refined():
  def peak_at(exponent, rates):
    return _choice(0.9 - (np.log10(rates) - exponent) ** 2, rates=rates)

  exadam = peak_at(-3.2, (1e-4, 1e-3, 1e-2))  # grid 1e-3, refined 10**-3.2
  adam = dataclasses.replace(peak_at(-1.9, (1e-3, 1e-2, 1e-1)), arm="adam")
  assert adam.best_lr == 1e-2
  grid, refined = sweep.transfer_ratio([exadam, adam], "exadam", "adam")
  assert grid == pytest.approx(0.1)
  assert refined == pytest.approx(10 ** (-3.2 + 1.9), rel=1e-9)
  at_edge = dataclasses.replace(
    _choice([0.3, 0.5, 0.7], rates=(1e-3, 1e-2, 1e-1)), arm="adam"
  )
  grid, refined = sweep.transfer_ratio([exadam, at_edge], "exadam", "adam")
  assert grid == pytest.approx(0.01) and refined is None
  assert sweep.transfer_ratio([exadam], "exadam", "adam") == (None, None)
  diverged = dataclasses.replace(_choice([math.nan] * 3), arm="adam")
  assert sweep.transfer_ratio([exadam, diverged], "exadam", "adam") == (
    None,
    None,
  )
