"""Choosing each optimizer's learning rate from the sweep stage's runs.

Every run of the sweep is scored by its best validation metric over training
(validation accuracy for the CNN, validation loss for MinGPT: the checkpoint
a user would keep); a rate's score is the mean over the sweep seeds, and each
arm gets the rate with the best score. A rate at either end of the arm's grid
may hide a better one outside it, so the sweep extends the grid there and
runs again until the choice is inside (:func:`edges_to_extend`). The sweep
seeds are not the seeds of the final comparison, so the reported numbers are
not the maximum of noisy runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.reproduce import records as records_lib
from benchmarks.reproduce.presets import CNN, GPT

SELECTION_METRIC = {CNN: "val_acc", GPT: "val_loss"}
"""The validation metric each experiment is tuned and judged on."""
X_KEY = {CNN: "epoch", GPT: "step"}
"""The evaluation axis of each experiment."""


def higher_is_better(metric: str) -> bool:
  """Accuracies are maximised, losses minimised."""
  return metric.endswith("acc")


def best_over_training(values: np.ndarray, metric: str) -> np.ndarray:
  """Per row (seed), the best value over the evaluations.

  A row with a NaN or infinite value (a run that diverged) scores NaN.
  """
  best = values.max(axis=1) if higher_is_better(metric) else values.min(axis=1)
  return np.where(np.all(np.isfinite(values), axis=1), best, np.nan)


@dataclasses.dataclass(frozen=True)
class Choice:
  """The learning rate a sweep selects for one arm.

  Attributes:
    arm: The arm.
    metric: The selection metric.
    rates: The rates tried, ascending.
    means: Per rate, the seed mean of the best validation metric (NaN if a
      run diverged).
    stds: Per rate, the sample standard deviation over sweep seeds (0 for
      one seed).
    best_lr: The rate with the best mean (None if every run diverged).
  """

  arm: str
  metric: str
  rates: tuple[float, ...]
  means: tuple[float, ...]
  stds: tuple[float, ...]
  best_lr: float | None

  @property
  def at_edge(self) -> str | None:
    """``"low"`` or ``"high"`` if the choice is an end of the grid, else None."""
    if self.best_lr is None or len(self.rates) < 2:
      return None
    if self.best_lr == self.rates[0]:
      return "low"
    if self.best_lr == self.rates[-1]:
      return "high"
    return None

  def score(self, rate: float) -> float:
    """The mean score at ``rate``."""
    return self.means[self.rates.index(rate)]

  def refined_lr(self) -> float | None:
    """The optimum of a parabola through the best rate and its neighbours.

    Fitted to the mean scores against log10 of the rate, so that the
    transfer ratio between optimizers is not limited to the grid's spacing.

    Returns:
      The vertex of the parabola, or None at an edge or if the three points
      do not form a proper optimum.
    """
    if self.best_lr is None or self.at_edge is not None:
      return None
    index = self.rates.index(self.best_lr)
    xs = np.log10(self.rates[index - 1 : index + 2])
    ys = np.asarray(self.means[index - 1 : index + 2])
    if not np.all(np.isfinite(ys)):
      return None
    curvature, slope, _ = np.polyfit(xs, ys, 2)
    proper = curvature < 0 if higher_is_better(self.metric) else curvature > 0
    if not proper:
      return None
    return float(10.0 ** (-slope / (2.0 * curvature)))


def choose(records: Sequence[dict[str, Any]], experiment: str) -> list[Choice]:
  """Selects each arm's learning rate from one experiment's sweep records.

  Returns:
    One choice per arm, in record order.
  """
  metric = SELECTION_METRIC[experiment]
  choices = []
  for arm in records_lib.arms_in_order(records):
    rates = tuple(records_lib.learning_rates_of(records, arm))
    means, stds = [], []
    for rate in rates:
      curves = records_lib.seed_curves(
        records, arm, metric, X_KEY[experiment], rate
      )
      scores = best_over_training(curves.values, metric)
      mean, std = records_lib.mean_and_std(scores)
      means.append(mean)
      stds.append(0.0 if math.isnan(std) and scores.size == 1 else std)
    finite = [i for i, mean in enumerate(means) if math.isfinite(mean)]
    pick = max if higher_is_better(metric) else min
    best = pick(finite, key=lambda i: means[i]) if finite else None
    choices.append(
      Choice(
        arm=arm,
        metric=metric,
        rates=rates,
        means=tuple(means),
        stds=tuple(stds),
        best_lr=None if best is None else rates[best],
      )
    )
  return choices


def edges_to_extend(choices: Sequence[Choice]) -> dict[str, str]:
  """Arms whose choice sits at an end of their grid, and which end."""
  return {
    choice.arm: choice.at_edge
    for choice in choices
    if choice.at_edge is not None
  }


def transfer_ratio(
  choices: Sequence[Choice], numerator: str, denominator: str
) -> tuple[float | None, float | None]:
  """``best_lr(numerator) / best_lr(denominator)``, on the grid and refined.

  Returns:
    ``(grid ratio, refined ratio)``; each is None where it is undefined.
  """
  by_arm = {choice.arm: choice for choice in choices}
  top, bottom = by_arm.get(numerator), by_arm.get(denominator)
  if top is None or bottom is None or None in (top.best_lr, bottom.best_lr):
    return None, None
  grid = top.best_lr / bottom.best_lr
  refined_top, refined_bottom = top.refined_lr(), bottom.refined_lr()
  refined = (
    None
    if refined_top is None or refined_bottom is None
    else refined_top / refined_bottom
  )
  return grid, refined
