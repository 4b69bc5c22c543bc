"""benchmarks.reproduce.verdict on data with known answers."""

import math

import numpy as np
import pytest
from scipy import stats

from benchmarks.reproduce import verdict

SEEDS = tuple(range(3000, 3010))


def _values(numbers, seeds=SEEDS):
  return dict(zip(seeds, map(float, numbers), strict=True))


def test_paired_difference_statistics_match_scipy():
  rng = np.random.default_rng(0)
  other = rng.normal(1.8, 0.05, len(SEEDS))
  # A known mean difference of -0.02, and seed effects shared by both arms.
  differences = -0.02 + rng.normal(0.0, 0.004, len(SEEDS))
  arm = other + differences
  got = verdict.compare(
    "exadam",
    "adam",
    _values(arm),
    _values(other),
    metric="val_loss",
    margin=0.01,
  )
  assert got.seeds == SEEDS
  np.testing.assert_allclose(got.differences, differences, rtol=1e-12)
  assert got.mean == pytest.approx(differences.mean())
  assert got.sd == pytest.approx(differences.std(ddof=1))
  assert got.p == pytest.approx(stats.ttest_rel(arm, other).pvalue)
  sem = differences.std(ddof=1) / math.sqrt(len(SEEDS))
  half = stats.t.ppf(0.975, len(SEEDS) - 1) * sem
  np.testing.assert_allclose(
    got.t_interval, (got.mean - half, got.mean + half), rtol=1e-9
  )
  assert got.half_width == pytest.approx(half)
  tost_half = stats.t.ppf(0.95, len(SEEDS) - 1) * sem
  np.testing.assert_allclose(
    got.tost_interval, (got.mean - tost_half, got.mean + tost_half), rtol=1e-9
  )
  # The bootstrap interval of normal differences is close to the t interval.
  low, high = got.bootstrap_interval
  assert low < got.mean < high
  assert abs((high - low) - 2 * half) < 0.35 * 2 * half
  # Only the seeds both arms ran are paired.
  fewer = verdict.compare(
    "exadam",
    "adam",
    _values(arm[:6], SEEDS[:6]),
    _values(other),
    metric="val_loss",
    margin=0.01,
  )
  assert fewer.seeds == SEEDS[:6]


def test_holm_adjustment_by_hand():
  # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04,
  # then non-decreasing: 0.02, 0.03, 0.06, 0.06.
  np.testing.assert_allclose(
    verdict.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02]
  )
  np.testing.assert_allclose(verdict.holm([0.5, 0.6]), [1.0, 1.0])
  np.testing.assert_allclose(verdict.holm([0.02]), [0.02])


def _comparison(differences, metric="val_loss", margin=0.01):
  base = np.linspace(1.0, 2.0, len(differences))
  (got,) = verdict.adjust(
    [
      verdict.compare(
        "exadam",
        "adam",
        _values(base + differences, SEEDS[: len(base)]),
        _values(base, SEEDS[: len(base)]),
        metric=metric,
        margin=margin,
      )
    ]
  )
  return got


def test_words_follow_the_adjusted_p_and_the_margin():
  spread = np.array([1, -1, 2, -2, 0, 1, -1, 2, -2, 0]) * 1e-3
  # A clearly lower loss is better, a clearly higher one worse.
  assert _comparison(-0.05 + spread).word == "better"
  assert _comparison(0.05 + spread).word == "worse"
  # For accuracy, higher is better.
  assert _comparison(0.05 + spread, "val_acc", 0.02).word == "better"
  # Small and precise: the 90% interval lies inside the 0.01 margin.
  small = _comparison(0.001 + spread)
  assert small.p_holm >= verdict.ALPHA
  assert small.word == "equivalent"
  # Noisy: neither a difference nor equivalence can be claimed.
  noisy = _comparison(np.array([1, -1, 3, -2, 0, 2, -3, 1, -1, 2]) * 0.02)
  assert noisy.p_holm >= verdict.ALPHA
  assert noisy.tost_interval[1] > 0.01 or noisy.tost_interval[0] < -0.01
  assert noisy.word == "unresolved"


def test_holm_can_turn_a_nominal_difference_unresolved():
  pattern = np.array([1.2, -0.8, 0.3, -1.5, 0.9, -0.2, 1.4, -1.1, 0.5, -0.7])
  z = (pattern - pattern.mean()) / pattern.std(ddof=1)
  base = np.linspace(1.7, 1.9, len(SEEDS))
  # t = 2.5 on 9 degrees of freedom (p = 0.034) for EXAdam against Adam;
  # the other arms differ from Adam by noise of mean exactly 0.
  arms = {"adam": base, "exadam": base + 0.01 * (z + 2.5 / math.sqrt(10))}
  arms["adamw"] = base + 0.01 * z[::-1]
  arms["exadam-no-dynamic-step-size"] = base + 0.01 * np.roll(z, 3)
  comparisons = verdict.adjust(
    [
      verdict.compare(
        arm,
        other,
        _values(arms[arm]),
        _values(arms[other]),
        metric="val_loss",
        margin=0.001,
      )
      for arm, other in verdict.COMPARISONS
    ]
  )
  first = comparisons[0]
  assert (first.arm, first.other) == ("exadam", "adam")
  assert first.p == pytest.approx(2 * stats.t.sf(2.5, 9))
  assert first.p < verdict.ALPHA <= first.p_holm
  assert first.word == "unresolved"
  assert all(c.p_holm >= c.p for c in comparisons)


def test_experiment_verdict_reads_the_last_evaluation_of_each_seed():
  records = []
  finals = {
    "adam": 1.80,
    "adamw": 1.79,
    "exadam": 1.75,
    "exadam-no-dynamic-step-size": 1.76,
  }
  for arm, final in finals.items():
    for index, seed in enumerate(SEEDS):
      for step, value in ((0, 4.2), (250, 2.5), (500, final + 0.001 * index)):
        records.append(
          {
            "arm": arm,
            "base_lr": 1e-3,
            "seed": seed,
            "kind": "eval",
            "step": step,
            "val_loss": value,
          }
        )
  comparisons = verdict.experiment_verdict(records, "gpt")
  assert [(c.arm, c.other) for c in comparisons] == list(verdict.COMPARISONS)
  exadam_adam = comparisons[0]
  assert exadam_adam.mean == pytest.approx(-0.05)
  assert exadam_adam.word == "better"
  reach = verdict.reach_points(records, "gpt", "exadam", "adam")
  assert set(reach) == set(SEEDS) and set(reach.values()) == {500.0}
  assert verdict.reach_points(records, "gpt", "adam", "exadam") == {
    seed: None for seed in SEEDS
  }


def test_a_comparison_needs_two_shared_seeds():
  with pytest.raises(ValueError, match="at least two shared seeds"):
    verdict.paired({1: 1.0, 2: 2.0}, {2: 1.0, 3: 1.0})
