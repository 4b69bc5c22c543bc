"""Markdown tables in the form of the paper's Tables 1 to 3, with seed spread.

Every figure of ours is the mean over seeds, followed by ``± sd``, the sample
standard deviation over seeds, when there are at least two seeds. The paper's
numbers (one seed, full-size protocol) stand beside ours where the paper has
the optimizer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks import repro_convergence, repro_records
from benchmarks.repro_presets import (
  PAPER_CNN_FINAL,
  PAPER_GPT_CURVES,
  display_name,
)

FOCUS_ARM = "exadam"
"""The arm whose speed-up over the others the convergence table reports."""


def _number(value: float, digits: int) -> str:
  if value is None or math.isnan(value):
    return "n/a"
  if math.isinf(value):
    return "inf"
  return f"{value:.{digits}f}"


def mean_sd(
  values: Sequence[float], *, scale: float = 1.0, digits: int = 2
) -> str:
  """``"mean ± sd"`` of ``values * scale``; just the mean for one value.

  A NaN among the values (a diverged run) makes the entry ``"diverged"``.
  """
  values = np.asarray(values, dtype=np.float64) * scale
  if values.size and np.any(np.isnan(values)):
    diverged = int(np.sum(np.isnan(values)))
    return f"diverged ({diverged}/{values.size})"
  mean, std = repro_records.mean_and_std(values)
  if math.isnan(std):
    return _number(mean, digits)
  return f"{_number(mean, digits)} ± {_number(std, digits)}"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = [
    "| " + " | ".join(header) + " |",
    "| " + " | ".join("---" for _ in header) + " |",
  ]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def _paper_cnn(arm: str, metric: str) -> str:
  """The paper's Table 1/2 value of ``metric`` for ``arm``, or a dash."""
  value = PAPER_CNN_FINAL.get(arm, {}).get(metric)
  return "—" if value is None else f"{value:.2f}"


def table1(records: Sequence[dict[str, Any]], arms: Sequence[str]) -> str:
  """Table 1: training and validation accuracy (and loss) at the last epoch.

  Args:
    records: Experiment 1's records.
    arms: Arms to list, in order.

  Returns:
    Markdown; accuracies in percent.
  """
  rows = []
  last_epochs = set()
  for arm in arms:
    train_acc = repro_records.seed_curves(records, arm, "train_acc", "epoch")
    val_acc = repro_records.seed_curves(records, arm, "val_acc", "epoch")
    train_loss = repro_records.seed_curves(records, arm, "train_loss", "epoch")
    val_loss = repro_records.seed_curves(records, arm, "val_loss", "epoch")
    last_epochs.add(int(train_acc.x[-1]))
    rows.append(
      [
        display_name(arm),
        str(len(train_acc.seeds)),
        mean_sd(train_acc.last, scale=100),
        _paper_cnn(arm, "train_acc"),
        mean_sd(val_acc.last, scale=100),
        _paper_cnn(arm, "val_acc"),
        mean_sd(train_loss.last, digits=3),
        mean_sd(val_loss.last, digits=3),
      ]
    )
  epochs = ", ".join(str(epoch) for epoch in sorted(last_epochs))
  header = [
    "Optimizer",
    "Seeds",
    f"Train acc % (ours, epoch {epochs})",
    "Train acc % (paper, epoch 100)",
    "Val acc % (ours)",
    "Val acc % (paper)",
    "Train loss (ours)",
    "Val loss (ours)",
  ]
  return _markdown(header, rows)


def table2(records: Sequence[dict[str, Any]], arms: Sequence[str]) -> str:
  """Table 2: test accuracy after the last epoch, in percent."""
  rows = []
  for arm in arms:
    test_acc = repro_records.final_values(records, arm, "test_acc")
    rows.append(
      [
        display_name(arm),
        str(test_acc.size),
        mean_sd(test_acc, scale=100),
        _paper_cnn(arm, "test_acc"),
      ]
    )
  return _markdown(
    ["Optimizer", "Seeds", "Test acc % (ours)", "Test acc % (paper)"], rows
  )


def _paper_gpt_best(arm: str) -> str:
  curve = PAPER_GPT_CURVES.get(arm)
  if curve is None:
    return "—"
  step, (_, val) = min(
    (
      (step, values)
      for step, values in curve.items()
      if not math.isnan(values[1])
    ),
    key=lambda item: item[1][1],
  )
  return f"{val:.3f} @ {step}"


def table3(records: Sequence[dict[str, Any]], arms: Sequence[str]) -> str:
  """Table 3: training and validation loss at the last iteration, and the
  best validation loss with the iteration where the seed-mean curve has it."""
  rows = []
  last_steps = set()
  for arm in arms:
    train = repro_records.seed_curves(records, arm, "train_loss", "step")
    val = repro_records.seed_curves(records, arm, "val_loss", "step")
    last_steps.add(int(train.x[-1]))
    mean_val = val.mean
    if np.all(np.isnan(mean_val)):
      best = "diverged"
    else:
      index = int(np.nanargmin(mean_val))
      per_seed_best = np.min(val.values, axis=1)
      best = (
        f"{mean_val[index]:.3f} @ {int(val.x[index])} "
        f"(per seed {mean_sd(per_seed_best, digits=3)})"
      )
    paper_final = PAPER_GPT_CURVES.get(arm, {}).get(5000)
    rows.append(
      [
        display_name(arm),
        str(len(train.seeds)),
        mean_sd(train.last, digits=3),
        "—" if paper_final is None else f"{paper_final[0]:.3f}",
        mean_sd(val.last, digits=3),
        "—" if paper_final is None else f"{paper_final[1]:.3f}",
        best,
        _paper_gpt_best(arm),
      ]
    )
  steps = ", ".join(str(step) for step in sorted(last_steps))
  header = [
    "Optimizer",
    "Seeds",
    f"Train loss (ours, iter {steps})",
    "Train loss (paper, iter 5000)",
    "Val loss (ours)",
    "Val loss (paper)",
    "Best val loss @ iter (ours, seed mean)",
    "Best val loss @ iter (paper)",
  ]
  return _markdown(header, rows)


@dataclasses.dataclass(frozen=True)
class ConvergenceRow:
  """Convergence of one arm to the common target.

  Attributes:
    arm: The arm.
    reach: Where its seed-mean validation curve reaches the target.
    per_seed_crossings: Each seed's interpolated crossing (None: never).
    focus_speedup: The focus arm's speed-up over this arm (crossings).
    bound: How the true speed-up relates to ``focus_speedup`` (see
      :func:`benchmarks.repro_convergence.speedup_bound`).
  """

  arm: str
  reach: repro_convergence.Reach
  per_seed_crossings: tuple[float | None, ...]
  focus_speedup: float | None
  bound: str = "="


@dataclasses.dataclass(frozen=True)
class Convergence:
  """The convergence comparison of one experiment.

  Attributes:
    metric: The validation metric (``"val_acc"`` or ``"val_loss"``).
    x_key: ``"epoch"`` or ``"step"``.
    reference: The arm whose final seed-mean metric is the target.
    target: The target value.
    rows: One row per arm.
  """

  metric: str
  x_key: str
  reference: str
  target: float
  rows: tuple[ConvergenceRow, ...]

  def speedup_over(self, arm: str) -> float | None:
    """The focus arm's speed-up over ``arm`` (None if not computable)."""
    for row in self.rows:
      if row.arm == arm:
        return row.focus_speedup
    return None


def convergence(
  records: Sequence[dict[str, Any]],
  arms: Sequence[str],
  *,
  metric: str,
  x_key: str,
  reference: str,
  focus: str = FOCUS_ARM,
) -> Convergence:
  """Measures every arm's time to reach the reference's final metric.

  Args:
    records: One experiment's records.
    arms: Arms to compare.
    metric: ``"val_acc"`` (higher is better) or ``"val_loss"``.
    x_key: ``"epoch"`` or ``"step"``.
    reference: The arm whose final seed-mean value is the target.
    focus: The arm whose speed-up over the others is reported.

  Returns:
    The comparison (see :mod:`benchmarks.repro_convergence` for the rule).

  Raises:
    ValueError: If ``reference`` is not among ``arms``.
  """
  if reference not in arms:
    raise ValueError(
      f"The reference arm {reference!r} is not among the arms {list(arms)}."
    )
  higher_is_better = metric.endswith("acc")
  curves = {
    arm: repro_records.seed_curves(records, arm, metric, x_key) for arm in arms
  }
  target = float(curves[reference].mean[-1])

  def reach_of(y: np.ndarray, x: np.ndarray) -> repro_convergence.Reach:
    return repro_convergence.first_reach(
      x, y, target, higher_is_better=higher_is_better
    )

  reaches = {
    arm: reach_of(curve.mean, curve.x) for arm, curve in curves.items()
  }
  focus_reach = reaches.get(focus, repro_convergence.Reach(None, None))
  rows = tuple(
    ConvergenceRow(
      arm=arm,
      reach=reaches[arm],
      per_seed_crossings=tuple(
        reach_of(row, curves[arm].x).crossing for row in curves[arm].values
      ),
      focus_speedup=None
      if arm == focus
      else repro_convergence.speedup(
        focus_reach.crossing, reaches[arm].crossing
      ),
      bound=repro_convergence.speedup_bound(focus_reach, reaches[arm]),
    )
    for arm in arms
  )
  return Convergence(metric, x_key, reference, target, rows)


def _speedup_text(row: ConvergenceRow) -> str:
  if row.focus_speedup is None:
    return "n/a"
  if row.bound == "?":
    return "n/a (both reached at the first evaluation)"
  prefix = {"=": "", ">=": "≥ ", "<=": "≤ "}[row.bound]
  return f"{prefix}{100 * row.focus_speedup:.1f}%"


def _crossing_text(reach: repro_convergence.Reach) -> str:
  if reach.crossing is None:
    return "never"
  return f"{'≤ ' if reach.censored else ''}{reach.crossing:.2f}"


def _crossings(values: Sequence[float | None]) -> str:
  reached = [value for value in values if value is not None]
  if not reached:
    return f"never (0/{len(values)})"
  return f"{mean_sd(reached, digits=1)} ({len(reached)}/{len(values)} seeds)"


def convergence_table(result: Convergence, focus: str = FOCUS_ARM) -> str:
  """Markdown of :func:`convergence`, with the target stated above it."""
  scale = 100.0 if result.metric.endswith("acc") else 1.0
  unit = "%" if scale == 100.0 else ""
  relation = ">=" if result.metric.endswith("acc") else "<="
  what = "epoch" if result.x_key == "epoch" else "iteration"
  intro = (
    f"Target: {result.metric} {relation} {result.target * scale:.3f}{unit}, "
    f"the final seed-mean value of {display_name(result.reference)}. "
    "A ≤ marks a curve that reached it at its first evaluation: its crossing "
    "is an upper bound, and speed-ups involving it are bounds."
  )
  rows = [
    [
      display_name(row.arm),
      "never" if row.reach.first_eval is None else f"{row.reach.first_eval:g}",
      _crossing_text(row.reach),
      _crossings(row.per_seed_crossings),
      "—" if row.arm == focus else _speedup_text(row),
    ]
    for row in result.rows
  ]
  header = [
    "Optimizer",
    f"First {what} reaching (seed mean)",
    f"Interpolated {what}",
    f"Per-seed interpolated {what}",
    f"{display_name(focus)} speed-up (1 - t_{focus} / t)",
  ]
  return intro + "\n\n" + _markdown(header, rows)


@dataclasses.dataclass(frozen=True)
class SweepChoice:
  """The learning rate a sweep selects for one arm.

  Attributes:
    arm: The arm.
    scores: Per learning rate, the seed-mean final validation loss (NaN for
      a diverged run).
    best_lr: The rate with the lowest score (None if every run diverged).
    at_edge: Whether ``best_lr`` is the smallest or largest rate tried (the
      optimum may lie outside the grid).
  """

  arm: str
  scores: dict[float, float]
  best_lr: float | None
  at_edge: bool


def sweep_choices(
  records: Sequence[dict[str, Any]], x_key: str
) -> list[SweepChoice]:
  """Selects each arm's learning rate by its final validation loss.

  Args:
    records: The sweep stage's records of one experiment.
    x_key: ``"epoch"`` or ``"step"``.

  Returns:
    One choice per arm, in record order.
  """
  choices = []
  for arm in repro_records.arms_in_order(records):
    rates = repro_records.learning_rates_of(records, arm)
    scores = {
      rate: float(
        repro_records.seed_curves(
          records, arm, "val_loss", x_key, rate
        ).last.mean()
      )
      for rate in rates
    }
    finite = {
      rate: score for rate, score in scores.items() if math.isfinite(score)
    }
    best = min(finite, key=finite.get) if finite else None
    choices.append(
      SweepChoice(
        arm=arm,
        scores=scores,
        best_lr=best,
        at_edge=best is not None
        and len(rates) > 1
        and best in (rates[0], rates[-1]),
      )
    )
  return choices


def sweep_table(choices: Sequence[SweepChoice]) -> str:
  """Markdown: final validation loss per arm and learning rate; the selected
  rate in bold, and a flag where it lies at the edge of the grid."""
  rates = sorted({rate for choice in choices for rate in choice.scores})
  rows = []
  for choice in choices:
    cells = []
    for rate in rates:
      if rate not in choice.scores:
        cells.append("")
        continue
      score = choice.scores[rate]
      text = "diverged" if not math.isfinite(score) else f"{score:.3f}"
      cells.append(f"**{text}**" if rate == choice.best_lr else text)
    selected = "none" if choice.best_lr is None else f"{choice.best_lr:g}"
    if choice.at_edge:
      selected += " (edge of grid)"
    rows.append([display_name(choice.arm), *cells, selected])
  header = ["Optimizer", *(f"{rate:g}" for rate in rates), "Selected"]
  return _markdown(header, rows)
