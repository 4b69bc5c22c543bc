"""PNG figures like the paper's Figures 1 to 3, with a band over seeds.

Each curve is the mean over seeds; the shaded band spans one sample standard
deviation either side (no band for a single seed). Figures are drawn with
matplotlib's Agg canvas, without pyplot, so nothing needs a display.
Where the run covers the paper's evaluation points (``paper_points=True``),
the paper's single-seed values from its tables are drawn as markers.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmarks.reproduce import paper
from benchmarks.reproduce import records as records_lib
from benchmarks.reproduce.presets import display_name
from benchmarks.reproduce.sweep import Choice

_COLORS = {
  "exadam": "#1f77b4",
  "adam": "#ff7f0e",
  "adamw": "#2ca02c",
  "adadelta": "#d62728",
  "rmsprop": "#9467bd",
  "sgd": "#8c564b",
  "adafactor": "#e377c2",
  "ademamix": "#7f7f7f",
  "signum": "#bcbd22",
  "exadam-no-cross-moment-debiasing": "#17becf",
  "exadam-no-gradient-acceleration": "#d62728",
  "exadam-no-dynamic-step-size": "#393b79",
  "exadam-all-off": "#ff7f0e",  # Adam's color: with all three off it is Adam.
}
_OTHER_COLOR = "#000000"
_DPI = 80


def color_of(arm: str) -> str:
  """A fixed color per arm, the same in every figure."""
  return _COLORS.get(arm, _OTHER_COLOR)


def _new_figure(num_panels: int) -> tuple[Figure, list[Axes]]:
  figure = Figure(
    figsize=(5.2 * num_panels, 3.9), dpi=_DPI, layout="constrained"
  )
  FigureCanvasAgg(figure)
  axes = figure.subplots(1, num_panels, squeeze=False)[0]
  return figure, list(axes)


def _save(figure: Figure, path: pathlib.Path) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(path, format="png")
  return path


def draw_mean_band(
  axes: Axes,
  curves: records_lib.SeedCurves,
  *,
  label: str,
  color: str,
  scale: float = 1.0,
) -> None:
  """Draws the seed mean as a line and mean ± sd as a shaded band."""
  mean = curves.mean * scale
  axes.plot(curves.x, mean, color=color, label=label, linewidth=1.5)
  if len(curves.seeds) > 1:
    std = curves.std * scale
    axes.fill_between(curves.x, mean - std, mean + std, color=color, alpha=0.2)


def _panel(
  axes: Axes,
  records: Sequence[dict[str, Any]],
  arms: Sequence[str],
  metric: str,
  x_key: str,
  *,
  title: str,
  scale: float = 1.0,
  paper: dict[str, dict[int, tuple[float, float]]] | None = None,
  paper_column: int = 0,
) -> None:
  x_max = 0.0
  drawn = []
  for arm in arms:
    curves = records_lib.seed_curves(records, arm, metric, x_key)
    x_max = max(x_max, float(curves.x[-1]))
    drawn.append(curves)
    draw_mean_band(
      axes,
      curves,
      label=f"{display_name(arm)} (n={len(curves.seeds)})",
      color=color_of(arm),
      scale=scale,
    )
  if paper is not None:
    for arm in arms:
      points = [
        (x, values[paper_column])
        for x, values in sorted(paper.get(arm, {}).items())
        if x <= x_max and not math.isnan(values[paper_column])
      ]
      if points:
        xs, ys = zip(*points, strict=True)
        axes.scatter(xs, ys, color=color_of(arm), marker="x", s=22, zorder=3)
  axes.set_title(title)
  axes.set_xlabel("epoch" if x_key == "epoch" else "iteration")
  axes.grid(alpha=0.3)
  limits = _focus_limits(drawn, scale, higher_is_better=metric.endswith("acc"))
  if limits is not None:
    axes.set_ylim(*limits)


FOCUS_FROM = 0.1
"""Curve panels set their y-range from this fraction of the run on."""


def _focus_limits(
  drawn: Sequence[records_lib.SeedCurves],
  scale: float,
  *,
  higher_is_better: bool,
) -> tuple[float, float] | None:
  """A y-range that shows where the curves differ, not just the first drop.

  The far end of the range (the top for a loss, the bottom for an accuracy)
  is the worst mean ± sd from :data:`FOCUS_FROM` of the run on; the near end
  is the best of the whole run. Early values past the far end leave the
  panel.
  """
  x_max = max((float(c.x[-1]) for c in drawn if len(c.x)), default=0.0)
  late, whole = [], []
  for curves in drawn:
    mean, std = curves.mean * scale, curves.std * scale
    for bound in (mean - std, mean + std):
      finite = np.isfinite(bound)
      whole.extend(bound[finite])
      late.extend(bound[finite & (curves.x >= FOCUS_FROM * x_max)])
  if not late:
    return None
  if higher_is_better:
    low, high = min(late), max(whole)
  else:
    low, high = min(whole), max(late)
  pad = 0.05 * (high - low) or 0.05 * abs(high) or 1.0
  return low - pad, high + pad


def figure_cnn(
  records: Sequence[dict[str, Any]],
  arms: Sequence[str],
  split: str,
  path: pathlib.Path,
  *,
  paper_points: bool = False,
) -> pathlib.Path:
  """Figure 1 (``split="train"``) or 2 (``"val"``): loss and accuracy by epoch.

  Args:
    records: Experiment 1's records.
    arms: Arms to draw.
    split: ``"train"`` or ``"val"``.
    path: The PNG file to write.
    paper_points: Mark the paper's Table 1 accuracies (crosses).

  Returns:
    ``path``.
  """
  figure, (loss_axes, acc_axes) = _new_figure(2)
  name = {"train": "Training", "val": "Validation"}[split]
  _panel(
    loss_axes, records, arms, f"{split}_loss", "epoch", title=f"{name} loss"
  )
  _panel(
    acc_axes,
    records,
    arms,
    f"{split}_acc",
    "epoch",
    title=f"{name} accuracy (%)",
    scale=100.0,
    paper=paper.CNN_CURVES if paper_points else None,
    paper_column=0 if split == "train" else 1,
  )
  acc_axes.legend(fontsize=7)
  figure.suptitle(
    f"CIFAR-10 CNN: {name.lower()} performance (mean ± sd over seeds)"
  )
  return _save(figure, path)


def figure_gpt(
  records: Sequence[dict[str, Any]],
  arms: Sequence[str],
  path: pathlib.Path,
  *,
  paper_points: bool = False,
) -> pathlib.Path:
  """Figure 3: MinGPT training and validation loss by iteration.

  Args:
    records: Experiment 2's records.
    arms: Arms to draw.
    path: The PNG file to write.
    paper_points: Mark the paper's Table 3 losses (crosses).

  Returns:
    ``path``.
  """
  figure, (train_axes, val_axes) = _new_figure(2)
  paper_curves = paper.GPT_CURVES if paper_points else None
  _panel(
    train_axes,
    records,
    arms,
    "train_loss",
    "step",
    title="Training loss",
    paper=paper_curves,
    paper_column=0,
  )
  _panel(
    val_axes,
    records,
    arms,
    "val_loss",
    "step",
    title="Validation loss",
    paper=paper_curves,
    paper_column=1,
  )
  val_axes.legend(fontsize=7)
  figure.suptitle("MinGPT on tiny Shakespeare (mean ± sd over seeds)")
  return _save(figure, path)


def figure_sensitivity(
  choices: Sequence[Choice], title: str, path: pathlib.Path
) -> pathlib.Path:
  """The best validation metric against the learning rate, one line per arm.

  Each point is the mean over the sweep seeds, the band one standard
  deviation either side; diverged runs are left out and the selected rate
  is circled. A loss axis spans the bands, but stops at twice the best
  loss, so that a few exploding runs do not flatten every other curve.

  Returns:
    ``path``.
  """
  figure, (axes,) = _new_figure(1)
  is_accuracy = bool(choices) and choices[0].metric.endswith("acc")
  scale = 100.0 if is_accuracy else 1.0
  for choice in choices:
    rates = np.asarray(choice.rates)
    means = np.asarray(choice.means) * scale
    stds = np.asarray(choice.stds) * scale
    finite = np.isfinite(means)
    color = color_of(choice.arm)
    axes.plot(
      rates[finite],
      means[finite],
      marker="o",
      markersize=3,
      color=color,
      label=display_name(choice.arm),
    )
    axes.fill_between(
      rates[finite],
      (means - stds)[finite],
      (means + stds)[finite],
      color=color,
      alpha=0.15,
    )
    if choice.best_lr is not None:
      axes.scatter(
        [choice.best_lr],
        [choice.score(choice.best_lr) * scale],
        s=90,
        facecolors="none",
        edgecolors=color,
      )
  finite = [
    (m * scale, sd * scale)
    for c in choices
    for m, sd in zip(c.means, c.stds, strict=True)
    if np.isfinite(m)
  ]
  if finite and not is_accuracy:
    best = min(m for m, _ in finite)
    low = min(m - sd for m, sd in finite)
    high = min(max(m + sd for m, sd in finite), 2.0 * best)
    pad = 0.05 * (high - low) or 0.05 * best
    axes.set_ylim(low - pad, high + pad)
  axes.set_xscale("log")
  axes.set_xlabel("learning rate (Adafactor: multiplier of its relative step)")
  axes.set_ylabel(
    "best validation accuracy (%)"
    if is_accuracy
    else "best validation loss (axis cut at 2x the best)"
  )
  axes.set_title(title)
  axes.grid(alpha=0.3)
  axes.legend(fontsize=7)
  return _save(figure, path)


def figure_paired_differences(
  comparisons: Sequence[Any], scale: float, xlabel: str, path: pathlib.Path
) -> pathlib.Path:
  """Per comparison (a :class:`~benchmarks.reproduce.verdict.Comparison`),
  each seed's paired difference as a dot, the 95% t interval as a bar and
  the equivalence margin as a grey band around 0."""
  figure = Figure(
    figsize=(7.0, 0.55 * len(comparisons) + 1.4), dpi=_DPI, layout="constrained"
  )
  FigureCanvasAgg(figure)
  axes = figure.subplots()
  margin = comparisons[0].margin * scale
  axes.axvspan(-margin, margin, color="0.88", label="equivalence margin")
  axes.axvline(0.0, color="0.5", linewidth=0.8)
  labels = []
  for y, comparison in enumerate(reversed(comparisons)):
    differences = np.asarray(comparison.differences) * scale
    axes.scatter(
      differences,
      np.full(differences.size, y),
      s=14,
      alpha=0.6,
      color=color_of(comparison.arm),
    )
    low, high = comparison.t_interval
    axes.plot([low * scale, high * scale], [y, y], color="black", linewidth=2)
    axes.plot([comparison.mean * scale], [y], "|", color="black", markersize=14)
    labels.append(comparison.label)
  axes.set_yticks(range(len(labels)), labels)
  axes.set_xlabel(xlabel)
  axes.grid(alpha=0.3, axis="x")
  axes.legend(fontsize=7, loc="lower right")
  return _save(figure, path)
