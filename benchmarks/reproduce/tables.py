"""Markdown tables of the reproduction, with the spread over seeds.

Every figure of ours is the mean over seeds, followed by ``± sd``, the sample
standard deviation over seeds, when there are at least two seeds. Tables 1 to
3 have the form of the paper's, its numbers (one seed, full-size protocol)
beside ours; the tuned comparison, the sweep, the ablation and the
convergence tables are ours.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.reproduce import convergence as convergence_lib
from benchmarks.reproduce import paper
from benchmarks.reproduce import records as records_lib
from benchmarks.reproduce import sweep as sweep_lib
from benchmarks.reproduce import verdict as verdict_lib
from benchmarks.reproduce.presets import FOCUS_ARM, display_name
from benchmarks.step_cost.report import markdown_table


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
  mean, std = records_lib.mean_and_std(values)
  if math.isnan(std):
    return _number(mean, digits)
  return f"{_number(mean, digits)} ± {_number(std, digits)}"


def _paper_cnn(arm: str, metric: str) -> str:
  """The paper's Table 1/2 value of ``metric`` for ``arm``, or a dash."""
  value = paper.CNN_FINAL.get(arm, {}).get(metric)
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
    train_acc = records_lib.seed_curves(records, arm, "train_acc", "epoch")
    val_acc = records_lib.seed_curves(records, arm, "val_acc", "epoch")
    train_loss = records_lib.seed_curves(records, arm, "train_loss", "epoch")
    val_loss = records_lib.seed_curves(records, arm, "val_loss", "epoch")
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
  return markdown_table(header, rows)


def table2(records: Sequence[dict[str, Any]], arms: Sequence[str]) -> str:
  """Table 2: test accuracy after the last epoch, in percent."""
  rows = []
  for arm in arms:
    test_acc = records_lib.final_values(records, arm, "test_acc")
    rows.append(
      [
        display_name(arm),
        str(test_acc.size),
        mean_sd(test_acc, scale=100),
        _paper_cnn(arm, "test_acc"),
      ]
    )
  return markdown_table(
    ["Optimizer", "Seeds", "Test acc % (ours)", "Test acc % (paper)"], rows
  )


def _paper_gpt_best(arm: str) -> str:
  curve = paper.GPT_CURVES.get(arm)
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
    train = records_lib.seed_curves(records, arm, "train_loss", "step")
    val = records_lib.seed_curves(records, arm, "val_loss", "step")
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
    paper_final = paper.GPT_CURVES.get(arm, {}).get(5000)
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
  return markdown_table(header, rows)


def _fmt(value: float | None, digits: int, scale: float = 1.0) -> str:
  if value is None or not math.isfinite(value):
    return "n/a"
  return f"{value * scale:.{digits}f}"


def _per_seed(
  records: Sequence[dict[str, Any]], arm: str, metric: str, x_key: str
) -> dict[str, np.ndarray]:
  """Each seed's best and final value of ``metric`` (seed order)."""
  curves = records_lib.seed_curves(records, arm, metric, x_key)
  return {
    "best": sweep_lib.best_over_training(curves.values, metric),
    "final": curves.last,
    "seeds": np.asarray(curves.seeds),
  }


def paired_comparisons(
  records: Sequence[dict[str, Any]],
  arms: Sequence[str],
  experiment: str,
  focus: str = FOCUS_ARM,
) -> dict[str, verdict_lib.Comparison]:
  """``focus`` against each other arm on the primary metric, paired by seed
  and Holm-adjusted together (:mod:`benchmarks.reproduce.verdict`); arms with
  fewer than two seeds in common with it, or a diverged run, are left out."""
  if focus not in arms:
    return {}
  values = {
    arm: verdict_lib.validation_values(records, experiment, arm) for arm in arms
  }
  found = []
  for arm in arms:
    shared = set(values[focus]) & set(values[arm])
    finite = all(
      math.isfinite(values[a][seed]) for a in (focus, arm) for seed in shared
    )
    if arm != focus and len(shared) >= 2 and finite:
      found.append(
        verdict_lib.compare(
          focus,
          arm,
          values[focus],
          values[arm],
          metric=sweep_lib.SELECTION_METRIC[experiment],
          margin=verdict_lib.MARGINS[experiment],
        )
      )
  return {c.other: c for c in verdict_lib.adjust(found)} if found else {}


def paired_cell(comparison: verdict_lib.Comparison, scale: float) -> str:
  """``mean (low to high), p: word`` of a paired difference."""
  low, high = comparison.t_interval
  return (
    f"{comparison.mean * scale:+.3g} ({low * scale:+.3g} to "
    f"{high * scale:+.3g}), p {comparison.p_holm:.2g}: {comparison.word}"
  )


def compared_table(
  records: Sequence[dict[str, Any]],
  arms: Sequence[str],
  experiment: str,
  rates: dict[str, float],
  focus: str = FOCUS_ARM,
) -> tuple[str, dict[str, verdict_lib.Comparison]]:
  """Each arm at its rate: best and final validation metric (and test
  accuracy for the CNN), and the focus arm's paired difference from it.

  Args:
    records: The runs at the compared rates (one rate per arm).
    arms: Arms to list, in order.
    experiment: ``"cnn"`` or ``"gpt"``.
    rates: The learning rate of each arm.
    focus: The arm the others are compared with.

  Returns:
    The markdown table and, per arm compared with ``focus``, the
    :class:`~benchmarks.reproduce.verdict.Comparison` of the final
    validation metric (see :func:`paired_comparisons`).
  """
  metric = sweep_lib.SELECTION_METRIC[experiment]
  x_key = sweep_lib.X_KEY[experiment]
  scale, digits = (100.0, 2) if experiment == "cnn" else (1.0, 3)
  values = {arm: _per_seed(records, arm, metric, x_key) for arm in arms}
  if experiment == "cnn":
    for arm in arms:
      values[arm]["test"] = records_lib.final_values(records, arm, "test_acc")
  compared = (
    ("best", "final", "test") if experiment == "cnn" else ("best", "final")
  )
  comparisons = paired_comparisons(records, arms, experiment, focus)
  rows = []
  for arm in arms:
    row = [
      display_name(arm),
      f"{rates[arm]:.3g}",
      str(len(values[arm]["seeds"])),
    ]
    row += [
      mean_sd(values[arm][k], scale=scale, digits=digits) for k in compared
    ]
    row.append(
      paired_cell(comparisons[arm], scale) if arm in comparisons else "—"
    )
    rows.append(row)
  name = "val acc %" if experiment == "cnn" else "val loss"
  header = [
    "Optimizer",
    "lr",
    "Seeds",
    f"Best {name}",
    f"Final {name}",
    *(["Test acc %"] if experiment == "cnn" else []),
    f"{display_name(focus)} minus it, final {name} (95% CI), Holm p: verdict",
  ]
  return markdown_table(header, rows), comparisons


def sweep_table(choices: Sequence[sweep_lib.Choice]) -> str:
  """Per arm and rate, the seed mean (± sd) of the best validation metric;
  the selected rate in bold, and a flag where it lies at an edge."""
  rates = sorted({rate for choice in choices for rate in choice.rates})
  scale, digits = (
    (100.0, 1) if choices and choices[0].metric.endswith("acc") else (1.0, 3)
  )
  rows = []
  for choice in choices:
    cells = []
    for rate in rates:
      if rate not in choice.rates:
        cells.append("")
        continue
      index = choice.rates.index(rate)
      mean, std = choice.means[index], choice.stds[index]
      text = (
        "diverged" if not math.isfinite(mean) else _fmt(mean, digits, scale)
      )
      if math.isfinite(mean) and std > 0:
        text += f" ± {_fmt(std, digits, scale)}"
      cells.append(f"**{text}**" if rate == choice.best_lr else text)
    selected = "none" if choice.best_lr is None else f"{choice.best_lr:g}"
    if choice.at_edge:
      selected += " (edge of grid)"
    rows.append([display_name(choice.arm), *cells, selected])
  return markdown_table(
    ["Optimizer", *(f"{rate:g}" for rate in rates), "Selected"], rows
  )


@dataclasses.dataclass(frozen=True)
class Speed:
  """When one arm's runs first reach the common target.

  Attributes:
    arm: The arm.
    crossings: Per seed (in seed order), the interpolated evaluation point
      where its validation curve first reaches the target (None: never).
    speedups: Per seed, the focus arm's ``1 - t_focus / t_arm`` against this
      arm on the same seed (None where either never reaches the target).
    censored: Per seed, whether the crossing is only an upper bound (the
      first evaluation already reached the target).
  """

  arm: str
  crossings: tuple[float | None, ...]
  speedups: tuple[float | None, ...]
  censored: tuple[bool, ...]


def convergence_speed(
  records: Sequence[dict[str, Any]],
  arms: Sequence[str],
  experiment: str,
  reference: str,
  focus: str = FOCUS_ARM,
) -> tuple[float, list[Speed]]:
  """Every arm's time to reach the reference arm's final validation level.

  The target is the reference arm's final validation metric, averaged over
  seeds. Seeds are shared by all arms (same initialisation, same data
  order), so the focus arm's speed-up is taken seed by seed.

  Returns:
    ``(target, speeds)``.

  Raises:
    ValueError: If ``reference`` is not among ``arms``.
  """
  if reference not in arms:
    raise ValueError(
      f"The reference arm {reference!r} is not among {list(arms)}."
    )
  metric = sweep_lib.SELECTION_METRIC[experiment]
  x_key = sweep_lib.X_KEY[experiment]
  curves = {
    arm: records_lib.seed_curves(records, arm, metric, x_key) for arm in arms
  }
  target = float(curves[reference].mean[-1])
  higher = sweep_lib.higher_is_better(metric)
  reaches = {
    arm: {
      seed: convergence_lib.first_reach(
        curve.x, row, target, higher_is_better=higher
      )
      for seed, row in zip(curve.seeds, curve.values, strict=True)
    }
    for arm, curve in curves.items()
  }
  speeds = []
  for arm in arms:
    seeds = curves[arm].seeds
    focus_reach = reaches.get(focus, {})
    speeds.append(
      Speed(
        arm=arm,
        crossings=tuple(reaches[arm][seed].crossing for seed in seeds),
        speedups=tuple(
          convergence_lib.speedup(
            focus_reach[seed].crossing if seed in focus_reach else None,
            reaches[arm][seed].crossing,
          )
          for seed in seeds
        ),
        censored=tuple(reaches[arm][seed].censored for seed in seeds),
      )
    )
  return target, speeds


def convergence_table(
  target: float,
  speeds: Sequence[Speed],
  experiment: str,
  reference: str,
  focus: str = FOCUS_ARM,
) -> str:
  """Markdown of :func:`convergence_speed`, the target stated above it."""
  metric = sweep_lib.SELECTION_METRIC[experiment]
  scale = 100.0 if metric.endswith("acc") else 1.0
  relation = ">=" if metric.endswith("acc") else "<="
  what = "epoch" if experiment == "cnn" else "iteration"
  intro = (
    f"Target: {metric} {relation} {target * scale:.3f}"
    f"{'%' if scale == 100 else ''}, the final seed-mean value of "
    f"{display_name(reference)}. Crossings are interpolated between "
    "evaluations; a ≤ marks seeds that reached it at their first evaluation, "
    "whose crossing is only an upper bound. The speed-up is "
    f"1 - t({display_name(focus)}) / t(other), taken seed by seed (same "
    "initialisation and data order), mean ± sd over the seeds where both "
    "reach the target."
  )
  rows = []
  for speed in speeds:
    reached = [c for c in speed.crossings if c is not None]
    crossing = (
      f"never (0/{len(speed.crossings)})"
      if not reached
      else f"{mean_sd(reached, digits=1)} ({len(reached)}/{len(speed.crossings)} seeds)"
    )
    if any(speed.censored):
      crossing = "≤ " + crossing
    if speed.arm == focus:
      gain = "—"
    else:
      paired = [s for s in speed.speedups if s is not None]
      gain = (
        "n/a"
        if not paired
        else f"{mean_sd(np.asarray(paired) * 100, digits=1)}% ({len(paired)} seeds)"
      )
    rows.append([display_name(speed.arm), crossing, gain])
  header = [
    "Optimizer",
    f"{what.capitalize()} reaching the target (mean ± sd)",
    f"{display_name(focus)} speed-up",
  ]
  return intro + "\n\n" + markdown_table(header, rows)
