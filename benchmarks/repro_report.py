"""The report of a reproduction folder: ``tables.md`` and the PNG figures.

It is built from the metrics files and ``run_info.json`` alone, so it can be
rebuilt at any time (``python -m benchmarks.reproduce --report-only --out
DIR``), also from the partial files of a run that was stopped.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from benchmarks import repro_plots, repro_records, repro_tables
from benchmarks.repro_presets import (
  ABLATION_REFERENCE,
  CNN,
  GPT,
  REFERENCE_OPTIMIZER,
)

RUN_INFO_FILE = "run_info.json"
TABLES_FILE = "tables.md"
FIGURES_DIR = "figures"
SWEEP_STAGE = "sweep"
"""File-name prefix of the sweep stage's metrics in ``--mode sweep``."""

_X_KEY = {CNN: "epoch", GPT: "step"}
_TARGET_METRIC = {CNN: "val_acc", GPT: "val_loss"}
_TITLES = {CNN: "Experiment 1: CIFAR-10 CNN", GPT: "Experiment 2: MinGPT"}


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
      lines.append(f"All {planned} {unit} of the protocol completed.")
  return " ".join(lines)


def _experiment_section(
  out_dir: pathlib.Path,
  info: dict[str, Any],
  experiment: str,
  figures: pathlib.Path,
) -> list[str]:
  """Tables and figures of one experiment; the section's markdown lines."""
  path = repro_records.metrics_path(out_dir, experiment)
  if not path.is_file():
    return []
  records = repro_records.read_records(path)
  arms = repro_records.arms_in_order(records)
  if not any(r.get("kind") == repro_records.EVAL for r in records):
    return [f"## {_TITLES[experiment]}", "", "No evaluation recorded yet.", ""]
  mode = info["mode"]
  paper_points = info["preset"] == "paper" and mode != "ablation"
  prefix = "ablation_" if mode == "ablation" else ""
  lines = [f"## {_TITLES[experiment]}", "", _scale_note(info, experiment), ""]
  if mode == "sweep":
    lines += _sweep_section(out_dir, experiment, figures)
  if experiment == CNN:
    has_final = any(r.get("kind") == repro_records.FINAL for r in records)
    lines += [
      "### Table 1: accuracy at the last epoch",
      "",
      repro_tables.table1(records, arms),
      "",
    ]
    if has_final:
      lines += [
        "### Table 2: test accuracy",
        "",
        repro_tables.table2(records, arms),
        "",
      ]
    for split, number in (("train", 1), ("val", 2)):
      name = f"{prefix}figure{number}_cnn_{split}.png"
      repro_plots.figure_cnn(
        records, arms, split, figures / name, paper_points=paper_points
      )
      lines += [f"![Figure {number}]({FIGURES_DIR}/{name})", ""]
  else:
    lines += [
      "### Table 3: loss at the last iteration",
      "",
      repro_tables.table3(records, arms),
      "",
    ]
    name = f"{prefix}figure3_gpt.png"
    repro_plots.figure_gpt(
      records, arms, figures / name, paper_points=paper_points
    )
    lines += [f"![Figure 3]({FIGURES_DIR}/{name})", ""]
  reference = ABLATION_REFERENCE if mode == "ablation" else REFERENCE_OPTIMIZER
  lines += ["### Convergence speed", ""]
  if reference in arms and repro_tables.FOCUS_ARM in arms:
    result = repro_tables.convergence(
      records,
      arms,
      metric=_TARGET_METRIC[experiment],
      x_key=_X_KEY[experiment],
      reference=reference,
    )
    lines += [repro_tables.convergence_table(result), ""]
  else:
    lines += [
      f"Needs the arms {reference!r} and {repro_tables.FOCUS_ARM!r}; not both ran.",
      "",
    ]
  return lines


def _sweep_section(
  out_dir: pathlib.Path, experiment: str, figures: pathlib.Path
) -> list[str]:
  path = repro_records.metrics_path(out_dir, experiment, SWEEP_STAGE)
  if not path.is_file():
    return []
  choices = repro_tables.sweep_choices(
    repro_records.read_records(path), _X_KEY[experiment]
  )
  name = f"sweep_{experiment}.png"
  repro_plots.figure_sweep(
    choices, f"{_TITLES[experiment]}: learning-rate sweep", figures / name
  )
  return [
    "### Learning-rate sweep (final validation loss, seed mean)",
    "",
    repro_tables.sweep_table(choices),
    "",
    f"![Sweep]({FIGURES_DIR}/{name})",
    "",
    "The tables below rerun every optimizer at its selected rate with fresh seeds.",
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
    "full-size protocol (100 epochs / 5,000 iterations).",
    "",
  ]
  for experiment in info["experiments"]:
    lines += _experiment_section(out_dir, info, experiment, figures)
  path = out_dir / TABLES_FILE
  path.write_text("\n".join(lines), encoding="utf-8")
  return path
