"""The paired verdict: tuned arms compared over the same seeds.

Every arm of an experiment runs the same final seeds, and a seed fixes the
initialisation, the data order, dropout and the evaluation batches of every
arm, so each comparison is paired: per seed, the difference of the primary
metric between two arms (``arm - other``, in the metric's units). For each
comparison this module computes, with :mod:`scipy.stats`:

* the mean difference and its 95% confidence interval by Student's t on
  ``n - 1`` degrees of freedom, and by a bootstrap of the paired differences
  (10,000 resamples, percentile interval);
* the paired t-test's two-sided p, and Holm's step-down adjustment of it over
  all the comparisons of the experiment;
* the 90% t interval, whose lying inside ``(-margin, margin)`` is the two
  one-sided tests' verdict of equivalence at 0.05;
* a word: "better" or "worse" (for ``arm``) where the Holm-adjusted p is
  below 0.05; else "equivalent" where the 90% interval lies inside the
  margin; else "unresolved". The half-width of the 95% interval is the
  smallest difference these seeds could have told from none.

The metrics, the margins and the comparisons are declared here, before the
runs: the primary metric is the validation metric at the last evaluation
(MinGPT's loss, the CNN's accuracy); the secondary ones are the best
validation metric during training, the CNN's test accuracy, and the
evaluation at which ``arm`` first reaches ``other``'s final level of the
same seed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from benchmarks.reproduce import convergence
from benchmarks.reproduce import records as records_lib
from benchmarks.reproduce import sweep as sweep_lib
from benchmarks.reproduce.presets import display_name

ALPHA = 0.05
"""The family-wise error rate of each experiment's comparisons."""
RESAMPLES = 10_000
"""Bootstrap resamples of the paired differences."""
BOOTSTRAP_SEED = 0
"""Seed of the bootstrap's resampling, so that the pages are reproducible."""
MARGINS = {"gpt": 0.01, "cnn": 0.02}
"""Equivalence margins of the primary metric: 0.01 of MinGPT's validation
loss, 2.0 points of the CNN's validation accuracy (0.02 as a fraction)."""
CONSTANT_STEP = "exadam-no-dynamic-step-size"
COMPARISONS = (
  ("exadam", "adam"),
  ("exadam", "adamw"),
  (CONSTANT_STEP, "adam"),
  (CONSTANT_STEP, "adamw"),
  ("exadam", CONSTANT_STEP),
  ("adamw", "adam"),
)
"""``(arm, other)`` pairs of each experiment: both forms of EXAdam against
Adam, AdamW and each other, and AdamW against Adam (the same optimizer with
and without weight decay)."""


@dataclasses.dataclass(frozen=True)
class Comparison:
  """One paired comparison of ``arm`` with ``other`` on one metric.

  Attributes:
    arm, other: The arm labels.
    metric: The records' field, e.g. ``"val_loss"``.
    seeds: The seeds both arms ran, ascending.
    differences: Per seed, ``arm``'s value minus ``other``'s.
    mean, sd: Their mean and sample standard deviation.
    t_interval: The 95% Student-t interval of the mean difference.
    bootstrap_interval: The 95% paired-bootstrap interval.
    tost_interval: The 90% Student-t interval (two one-sided tests).
    p: The paired t-test's two-sided p.
    p_holm: ``p`` adjusted by Holm's method over the experiment's
      comparisons (NaN until :func:`adjust` sets it).
    margin: The equivalence margin.
    higher_is_better: Whether larger values of the metric are better.
  """

  arm: str
  other: str
  metric: str
  seeds: tuple[int, ...]
  differences: np.ndarray
  mean: float
  sd: float
  t_interval: tuple[float, float]
  bootstrap_interval: tuple[float, float]
  tost_interval: tuple[float, float]
  p: float
  p_holm: float
  margin: float
  higher_is_better: bool

  @property
  def label(self) -> str:
    """``"EXAdam vs Adam"``: the difference is the first minus the second."""
    return f"{display_name(self.arm)} vs {display_name(self.other)}"

  @property
  def half_width(self) -> float:
    """Half the 95% t interval's width: the smallest detectable difference."""
    low, high = self.t_interval
    return (high - low) / 2

  @property
  def word(self) -> str:
    """``"better"``, ``"worse"``, ``"equivalent"`` or ``"unresolved"``."""
    return verdict_word(
      self.mean,
      self.p_holm,
      self.tost_interval,
      self.margin,
      self.higher_is_better,
    )


def verdict_word(
  mean: float,
  p_holm: float,
  tost_interval: tuple[float, float],
  margin: float,
  higher_is_better: bool,
) -> str:
  """The word for a paired difference; see the module docstring."""
  if p_holm < ALPHA:
    ahead = mean > 0 if higher_is_better else mean < 0
    return "better" if ahead else "worse"
  low, high = tost_interval
  if -margin < low and high < margin:
    return "equivalent"
  return "unresolved"


def paired(
  values: dict[int, float], other: dict[int, float]
) -> tuple[tuple[int, ...], np.ndarray]:
  """The seeds both dicts hold, and ``values - other`` on them.

  Raises:
    ValueError: If fewer than two seeds are shared.
  """
  seeds = tuple(sorted(set(values) & set(other)))
  if len(seeds) < 2:
    raise ValueError(
      f"a paired comparison needs at least two shared seeds, got {seeds}."
    )
  return seeds, np.array([values[s] - other[s] for s in seeds])


def compare(
  arm: str,
  other: str,
  values: dict[int, float],
  other_values: dict[int, float],
  *,
  metric: str,
  margin: float,
) -> Comparison:
  """Compares two arms' per-seed values (``{seed: value}``), paired by seed."""
  seeds, differences = paired(values, other_values)
  n = differences.size
  mean = float(differences.mean())
  sd = float(differences.std(ddof=1))
  # Differences equal to rounding (as in constructed examples) have no
  # spread: the t-test would divide rounding noise by itself.
  constant = np.ptp(differences) <= 1e-12 * np.abs(differences).max()
  sem = 0.0 if constant else sd / math.sqrt(n)

  def t_interval(confidence: float) -> tuple[float, float]:
    if sem == 0.0:
      return mean, mean
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return float(low), float(high)

  if sem == 0.0:
    p = 1.0 if mean == 0.0 else 0.0
    bootstrap = (mean, mean)
  else:
    p = float(stats.ttest_1samp(differences, 0.0).pvalue)
    result = stats.bootstrap(
      (differences,),
      np.mean,
      n_resamples=RESAMPLES,
      confidence_level=1 - ALPHA,
      method="percentile",
      rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    interval = result.confidence_interval
    bootstrap = (float(interval.low), float(interval.high))
  return Comparison(
    arm=arm,
    other=other,
    metric=metric,
    seeds=seeds,
    differences=differences,
    mean=mean,
    sd=sd,
    t_interval=t_interval(1 - ALPHA),
    bootstrap_interval=bootstrap,
    tost_interval=t_interval(1 - 2 * ALPHA),
    p=p,
    p_holm=math.nan,
    margin=margin,
    higher_is_better=sweep_lib.higher_is_better(metric),
  )


def holm(pvalues: Sequence[float]) -> np.ndarray:
  """Holm's step-down adjustment: the k-th smallest of m p-values is
  multiplied by ``m - k + 1``, made non-decreasing in that order, capped at 1.
  """
  pvalues = np.asarray(pvalues, dtype=np.float64)
  order = np.argsort(pvalues, kind="stable")
  m = pvalues.size
  scaled = pvalues[order] * (m - np.arange(m))
  adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
  result = np.empty(m)
  result[order] = adjusted
  return result


def adjust(comparisons: Sequence[Comparison]) -> list[Comparison]:
  """The comparisons with ``p_holm`` set over all of them."""
  adjusted = holm([c.p for c in comparisons])
  return [
    dataclasses.replace(c, p_holm=float(p))
    for c, p in zip(comparisons, adjusted, strict=True)
  ]


def validation_values(
  records: Sequence[dict[str, Any]],
  experiment: str,
  arm: str,
  *,
  best: bool = False,
) -> dict[int, float]:
  """Per seed, ``arm``'s validation metric at its last evaluation (the
  primary metric), or with ``best`` its best during training."""
  metric = sweep_lib.SELECTION_METRIC[experiment]
  curves = records_lib.seed_curves(
    records, arm, metric, sweep_lib.X_KEY[experiment]
  )
  values = (
    sweep_lib.best_over_training(curves.values, metric) if best else curves.last
  )
  return dict(zip(curves.seeds, map(float, values), strict=True))


def test_accuracy_values(
  records: Sequence[dict[str, Any]], arm: str
) -> dict[int, float]:
  """Per seed, the CNN's test accuracy after training."""
  found = {
    int(r["seed"]): float(r["test_acc"])
    for r in records
    if r.get("kind") == records_lib.FINAL and r["arm"] == arm
  }
  return found


def reach_points(
  records: Sequence[dict[str, Any]], experiment: str, arm: str, other: str
) -> dict[int, float | None]:
  """Per shared seed, the first evaluation at which ``arm`` reaches
  ``other``'s final validation metric of the same seed (None: never)."""
  metric = sweep_lib.SELECTION_METRIC[experiment]
  x_key = sweep_lib.X_KEY[experiment]
  curves = records_lib.seed_curves(records, arm, metric, x_key)
  targets = validation_values(records, experiment, other)
  points = {}
  for seed, values in zip(curves.seeds, curves.values, strict=True):
    if seed in targets:
      points[seed] = convergence.first_reach(
        curves.x,
        values,
        targets[seed],
        higher_is_better=sweep_lib.higher_is_better(metric),
      ).first_eval
  return points


def experiment_verdict(
  records: Sequence[dict[str, Any]], experiment: str
) -> list[Comparison]:
  """The primary comparisons of one experiment, Holm-adjusted together.

  Comparisons of arms that did not run are left out.
  """
  arms = set(records_lib.arms_in_order(records))
  metric = sweep_lib.SELECTION_METRIC[experiment]
  values = {arm: validation_values(records, experiment, arm) for arm in arms}
  return adjust(
    [
      compare(
        arm,
        other,
        values[arm],
        values[other],
        metric=metric,
        margin=MARGINS[experiment],
      )
      for arm, other in COMPARISONS
      if arm in arms and other in arms
    ]
  )
