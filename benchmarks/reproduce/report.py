"""The report of a reproduction folder: ``tables.md`` and the PNG figures.

It is built from the metrics files and ``run_info.json`` alone, so it can be
rebuilt at any time (``python -m benchmarks.reproduce --report-only --out
DIR``), also from the partial files of a run that was stopped.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from benchmarks.reproduce import plots, sweep, tables
from benchmarks.reproduce import records as records_lib
from benchmarks.reproduce.presets import (
  ABLATION_REFERENCE,
  CNN,
  CONSTANT_STEP,
  FOCUS_ARM,
  display_name,
  reference_arm,
)

RUN_INFO_FILE = "run_info.json"
TABLES_FILE = "tables.md"
FIGURES_DIR = "figures"
SWEEP_STAGE = "sweep"
"""File-name prefix of the sweep stage's metrics in ``--mode sweep``."""

_TITLES = {CNN: "Experiment 1: CIFAR-10 CNN", "gpt": "Experiment 2: MinGPT"}


def read_run_info(out_dir: pathlib.Path) -> dict[str, Any]:
  """Reads ``run_info.json`` of a reproduction folder.

  Raises:
    FileNotFoundError: If the folder holds no ``run_info.json``.
  """
  path = out_dir / RUN_INFO_FILE
  if not path.is_file():
    raise FileNotFoundError(
      f"{path} does not exist: {out_dir} is not a reproduction folder (run "
      "python -m benchmarks.reproduce with --out there first)."
    )
  return json.loads(path.read_text(encoding="utf-8"))


def write_run_info(out_dir: pathlib.Path, info: dict[str, Any]) -> None:
  """Writes ``run_info.json`` atomically."""
  out_dir.mkdir(parents=True, exist_ok=True)
  temporary = out_dir / (RUN_INFO_FILE + ".tmp")
  temporary.write_text(
    json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8"
  )
  temporary.replace(out_dir / RUN_INFO_FILE)


def _scale_note(info: dict[str, Any], experiment: str) -> str:
  entry = info["experiments"][experiment]
  outcome = entry.get("outcome")
  lines = [f"Preset `{info['preset']}`, mode `{info['mode']}`."]
  if outcome is not None:
    done, planned = outcome["rounds_done"], outcome["rounds_planned"]
    unit = "epochs" if experiment == CNN else "evaluation intervals"
    if outcome["stopped_early"]:
      lines.append(
        f"**Stopped by the time budget after {done} of {planned} {unit}**; "
        "every arm trained equally long."
      )
    else:
      lines.append(
        f"All {planned} {unit} of the protocol completed in "
        f"{outcome['total_seconds'] / 60:.1f} minutes."
      )
  return " ".join(lines)


def _curves_figures(
  records: list[dict[str, Any]],
  arms: list[str],
  experiment: str,
  figures: pathlib.Path,
  prefix: str,
  paper_points: bool,
) -> list[str]:
  lines = []
  if experiment == CNN:
    for split, number in (("train", 1), ("val", 2)):
      name = f"{prefix}figure{number}_cnn_{split}.png"
      plots.figure_cnn(
        records, arms, split, figures / name, paper_points=paper_points
      )
      lines += [f"![Figure {number}]({FIGURES_DIR}/{name})", ""]
  else:
    name = f"{prefix}figure3_gpt.png"
    plots.figure_gpt(records, arms, figures / name, paper_points=paper_points)
    lines += [f"![Figure 3]({FIGURES_DIR}/{name})", ""]
  return lines


def _convergence_lines(
  records: list[dict[str, Any]],
  arms: list[str],
  experiment: str,
  reference: str,
) -> list[str]:
  lines = ["### Convergence speed", ""]
  if reference not in arms or FOCUS_ARM not in arms:
    return [*lines, f"Needs the arms {reference!r} and {FOCUS_ARM!r}.", ""]
  target, speeds = tables.convergence_speed(
    records, arms, experiment, reference
  )
  return [
    *lines,
    tables.convergence_table(target, speeds, experiment, reference),
    "",
  ]


def _best_at(records, arms, experiment) -> list[str]:
  """Where each arm's seed-mean validation curve is best, against its end."""
  metric = sweep.SELECTION_METRIC[experiment]
  x_key = sweep.X_KEY[experiment]
  scale, digits = (100.0, 2) if experiment == CNN else (1.0, 3)
  rows = []
  for arm in arms:
    curves = records_lib.seed_curves(records, arm, metric, x_key)
    mean = curves.mean
    index = (
      int(np.nanargmax(mean))
      if sweep.higher_is_better(metric)
      else int(np.nanargmin(mean))
    )
    rows.append(
      [
        display_name(arm),
        f"{mean[index] * scale:.{digits}f} @ {int(curves.x[index])}",
        f"{mean[-1] * scale:.{digits}f} @ {int(curves.x[-1])}",
      ]
    )
  what = "epoch" if experiment == CNN else "iteration"
  return [
    tables.markdown_table(
      ["Optimizer", f"Best seed-mean {metric} @ {what}", f"Last @ {what}"],
      rows,
    ),
    "",
  ]


def _experiment_section(
  out_dir: pathlib.Path,
  info: dict[str, Any],
  experiment: str,
  figures: pathlib.Path,
) -> list[str]:
  path = records_lib.metrics_path(out_dir, experiment)
  entry = info["experiments"][experiment]
  lines = [f"## {_TITLES[experiment]}", "", _scale_note(info, experiment), ""]
  mode = info["mode"]
  if mode == "sweep":
    lines += _sweep_lines(out_dir, experiment, figures)
  if not path.is_file():
    return lines
  records = records_lib.read_records(path)
  arms = records_lib.arms_in_order(records)
  if not any(r.get("kind") == records_lib.EVAL for r in records):
    return [*lines, "No evaluation recorded yet.", ""]
  prefix = {"ablation": "ablation_", "sweep": "tuned_"}.get(mode, "")
  if mode in ("sweep", "ablation"):
    rates = {
      arm: records_lib.learning_rates_of(records, arm)[0] for arm in arms
    }
    table, _ = tables.compared_table(records, arms, experiment, rates)
    title = (
      "Each optimizer at its own best learning rate"
      if mode == "sweep"
      else f"EXAdam's components at its tuned rate ({rates[FOCUS_ARM]:g})"
    )
    lines += [
      f"### {title}",
      "",
      f"Seeds {entry['seeds']}. The last column pairs the runs by seed: "
      "the mean difference, its 95% t interval, the paired t-test's p "
      "adjusted by Holm's method over the column, and the word it gives "
      "(benchmarks/reproduce/verdict.py).",
      "",
      table,
      "",
      *_best_at(records, arms, experiment),
    ]
  else:
    if experiment == CNN:
      lines += [
        "### Table 1: accuracy at the last epoch",
        "",
        tables.table1(records, arms),
        "",
      ]
      if any(r.get("kind") == records_lib.FINAL for r in records):
        lines += [
          "### Table 2: test accuracy",
          "",
          tables.table2(records, arms),
          "",
        ]
    else:
      lines += [
        "### Table 3: loss at the last iteration",
        "",
        tables.table3(records, arms),
        "",
      ]
  reference = ABLATION_REFERENCE if mode == "ablation" else reference_arm(arms)
  lines += _convergence_lines(records, arms, experiment, reference)
  paper_points = info["preset"] == "paper" and mode == "compare"
  lines += _curves_figures(
    records, arms, experiment, figures, prefix, paper_points
  )
  return lines


def _sweep_lines(
  out_dir: pathlib.Path, experiment: str, figures: pathlib.Path
) -> list[str]:
  path = records_lib.metrics_path(out_dir, experiment, SWEEP_STAGE)
  if not path.is_file():
    return []
  choices = sweep.choose(records_lib.read_records(path), experiment)
  name = f"sensitivity_{experiment}.png"
  plots.figure_sensitivity(
    choices, f"{_TITLES[experiment]}: learning-rate sensitivity", figures / name
  )
  advice = []
  reference = reference_arm([choice.arm for choice in choices])
  for arm in (FOCUS_ARM, CONSTANT_STEP.label):
    grid, refined = sweep.transfer_ratio(choices, arm, reference)
    if grid is not None:
      advice.append(
        f"- {display_name(arm)}'s best rate / {display_name(reference)}'s: "
        f"{grid:.3g} on the grid"
        + ("" if refined is None else f", {refined:.3g} from parabolas fitted")
        + " through each optimum and its neighbours."
      )
  metric = sweep.SELECTION_METRIC[experiment]
  return [
    "### Learning-rate sweep",
    "",
    f"Best {metric} over training, mean ± sd over the sweep seeds (which are "
    "not the final seeds); the selected rate in bold.",
    "",
    tables.sweep_table(choices),
    "",
    f"![Learning-rate sensitivity]({FIGURES_DIR}/{name})",
    "",
    "### Learning-rate transfer",
    "",
    *(advice or ["- Needs EXAdam and Adam (or AdamW) in the sweep."]),
    "",
  ]


def write_report(out_dir: pathlib.Path) -> pathlib.Path:
  """Writes ``tables.md`` and the figures of a reproduction folder.

  Args:
    out_dir: The folder ``python -m benchmarks.reproduce`` wrote.

  Returns:
    The path of ``tables.md``.

  Raises:
    FileNotFoundError: If the folder holds no ``run_info.json``.
  """
  out_dir = pathlib.Path(out_dir)
  info = read_run_info(out_dir)
  figures = out_dir / FIGURES_DIR
  lines = [
    f"# Reproduction: preset `{info['preset']}`, mode `{info['mode']}`",
    "",
    "Ours: mean ± sample standard deviation over seeds. Paper: one seed, "
    "full-size protocol (100 epochs / 5,000 iterations), lr 1e-4.",
    "",
    f"Command: `{info['command']}`",
    "",
  ]
  for experiment in info["experiments"]:
    lines += _experiment_section(out_dir, info, experiment, figures)
  path = out_dir / TABLES_FILE
  path.write_text("\n".join(lines), encoding="utf-8")
  return path
