"""The verdict's page, figures and README block, from the committed records.

``python -m benchmarks.reproduce.verdict_report`` reads the final seeds of
``benchmarks/results/cpu/verdict-{gpt,cnn}/seed-*/`` (the folders that
``benchmarks/reproduce/verdict_runs.sh`` fills, one per seed; a folder whose
final stage has not finished is left out), computes the comparisons of
:mod:`benchmarks.reproduce.verdict` and writes

* ``benchmarks/results/cpu/verdict.md``, the page (the results page of the
  documentation includes it);
* ``benchmarks/results/cpu/verdict-EXPERIMENT/paired_differences.png``;
* the block of ``README.md`` between ``<!-- verdict:start -->`` and
  ``<!-- verdict:end -->``.

Every number and word there comes from the records: rerun the command after
adding seeds, never edit its output. ``--check`` only says whether the
committed files are what the records give (the test suite runs it).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp

from benchmarks.reproduce import plots, report, sweep, tables, verdict
from benchmarks.reproduce import records as records_lib
from benchmarks.reproduce.presets import display_name
from benchmarks.step_cost import trees
from benchmarks.step_cost.report import markdown_table
from examples.cifar10.model import CNN_PRESETS
from examples.mingpt.model import GPT_PRESETS

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "cpu"
PAGE = RESULTS / "verdict.md"
README = ROOT / "README.md"
START, END = "<!-- verdict:start -->", "<!-- verdict:end -->"
PLANNED_SEEDS = 10
"""Final seeds per arm that verdict_runs.sh runs (its SEEDS)."""
EXPERIMENTS = ("gpt", "cnn")
TITLES = {"gpt": "MinGPT", "cnn": "CIFAR-10 CNN"}
ARMS = ("adam", "adamw", "exadam", verdict.CONSTANT_STEP)


@dataclasses.dataclass(frozen=True)
class Experiment:
  """The finished final seeds of one experiment and what they give.

  Attributes:
    name: ``"gpt"`` or ``"cnn"``.
    folders: The seed folders whose final stage finished.
    records: Their final-stage records, together.
    rates: The tuned rate of each arm.
    sweep_seeds: The seeds of the sweeps that chose the rates.
    protocol: The protocol, as ``run_info.json`` holds it.
    comparisons: The primary comparisons, Holm-adjusted together.
    sweep_records: The sweep records the rates were selected from.
  """

  name: str
  folders: tuple[pathlib.Path, ...]
  records: list[dict[str, Any]]
  rates: dict[str, float]
  sweep_seeds: list[int]
  protocol: dict[str, Any]
  comparisons: list[verdict.Comparison]
  sweep_records: list[dict[str, Any]]

  @property
  def seeds(self) -> list[int]:
    return sorted({int(r["seed"]) for r in self.records})


def load(name: str, results: pathlib.Path = RESULTS) -> Experiment | None:
  """The experiment's finished seed folders, or None if there are none.

  Raises:
    ValueError: If the folders selected different rates.
  """
  folders, found, rates, entry = [], [], None, {}
  for folder in sorted((results / f"verdict-{name}").glob("seed-*")):
    if not (folder / report.RUN_INFO_FILE).exists():
      continue
    info = report.read_run_info(folder)
    if f"{name}-final" not in info["stages"]:
      continue
    entry = info["experiments"][name]
    selected = entry["sweep"]["selected"]
    if rates is not None and selected != rates:
      raise ValueError(
        f"{folder} selected the rates {selected}, another seed folder "
        f"{rates}: the seeds must share their sweeps."
      )
    rates = selected
    folders.append(folder)
    found += records_lib.read_records(records_lib.metrics_path(folder, name))
  if not folders:
    return None
  comparisons = (
    verdict.experiment_verdict(found, name) if len(folders) >= 2 else []
  )
  # The first seed's folder swept the arms that the reused folders had not.
  swept = [pathlib.Path(folder) for folder in entry["sweep"]["reused_from"]] + [
    folders[0]
  ]
  sweep_records = [
    r
    for folder in swept
    if (
      path := records_lib.metrics_path(folder, name, report.SWEEP_STAGE)
    ).exists()
    for r in records_lib.read_records(path)
    if r["arm"] in ARMS
  ]
  return Experiment(
    name=name,
    folders=tuple(folders),
    records=found,
    rates=rates,
    sweep_seeds=entry["sweep"]["seeds"],
    protocol=entry["protocol"],
    comparisons=comparisons,
    sweep_records=sweep_records,
  )


def _scale(name: str) -> tuple[float, str]:
  """Display scale and unit of the primary metric."""
  return (100.0, " points") if name == "cnn" else (1.0, "")


def _num_params(name: str, model: dict[str, Any] | str) -> int:
  """Parameters of a model: a preset name, or a config as a protocol holds
  it (built as shapes only)."""
  presets = CNN_PRESETS if name == "cnn" else GPT_PRESETS
  if not isinstance(model, str):
    config = {
      key: tuple(value) if isinstance(value, list) else value
      for key, value in model.items()
    }
    model = next(
      key
      for key, preset in presets.items()
      if dataclasses.asdict(preset) == config
    )
  kind = "cnn" if name == "cnn" else "mingpt"
  return trees.model_tree(kind, model, jnp.float32).num_params


def scale_line(experiment: Experiment) -> str:
  """What was trained, how big, for how long."""
  p = experiment.protocol
  params = f"{_num_params(experiment.name, p['model']):,} parameters"
  if experiment.name == "gpt":
    what = (
      f"MinGPT with {params} on tiny Shakespeare, {p['iters']:,} "
      f"iterations of batch {p['batch_size']}, {p['warmup_fraction']:.0%} "
      f"linear warmup then cosine decay to {p['final_fraction']:.0%} of the "
      "peak rate"
    )
  else:
    what = (
      f"the CNN with {params} on {p['max_train_images']:,} CIFAR-10 training "
      f"images ({p['val_size']:,} held out for validation), {p['epochs']} "
      f"epochs of batch {p['batch_size']} with augmentation, the paper's "
      "plateau schedule"
    )
  return f"{what[0].upper()}{what[1:]}."


def _fmt(value: float, scale: float, digits: int = 3) -> str:
  return f"{value * scale:+.{digits}g}"


def arms_table(experiment: Experiment) -> str:
  """Arm, tuned rate, seeds, mean ± sd of the primary metric."""
  scale, _ = _scale(experiment.name)
  digits = 2 if experiment.name == "cnn" else 3
  rows = []
  for arm in ARMS:
    values = list(
      verdict.validation_values(
        experiment.records, experiment.name, arm
      ).values()
    )
    rows.append(
      [
        display_name(arm),
        f"{experiment.rates[arm]:.3g}",
        str(len(values)),
        tables.mean_sd(values, scale=scale, digits=digits),
      ]
    )
  what = (
    "final validation accuracy %"
    if experiment.name == "cnn"
    else "final validation loss"
  )
  return markdown_table(
    ["Optimizer", "Tuned rate", "Seeds", f"{what} (mean ± sd)"], rows
  )


def comparisons_table(experiment: Experiment, full: bool = True) -> str:
  """The comparisons: difference, intervals, p, Holm p, word."""
  scale, _ = _scale(experiment.name)
  rows = []
  for c in experiment.comparisons:
    low, high = c.t_interval
    row = [
      c.label,
      f"{_fmt(c.mean, scale)} ({_fmt(low, scale)} to {_fmt(high, scale)})",
    ]
    if full:
      b_low, b_high = c.bootstrap_interval
      row += [
        f"{_fmt(b_low, scale)} to {_fmt(b_high, scale)}",
        f"{c.half_width * scale:.2g}",
        f"{c.p:.2g}",
      ]
    row += [f"{c.p_holm:.2g}", f"**{c.word}**"]
    rows.append(row)
  header = [
    "Comparison",
    "Mean difference, first minus second (95% t interval)",
  ]
  if full:
    header += ["Bootstrap 95% interval", "Half-width", "p"]
  header += ["Holm p", "Verdict"]
  return markdown_table(header, rows)


def secondary_table(experiment: Experiment) -> str:
  """Paired differences of the secondary metrics, with 95% t intervals."""
  name, records = experiment.name, experiment.records
  scale, _ = _scale(name)
  metrics = [
    (
      "best validation",
      lambda r, n, arm: verdict.validation_values(r, n, arm, best=True),
    )
  ]
  if name == "cnn":
    metrics.append(
      ("test accuracy", lambda r, _, arm: verdict.test_accuracy_values(r, arm))
    )
  rows = []
  for c in experiment.comparisons:
    row = [c.label]
    for _, values_of in metrics:
      d = verdict.compare(
        c.arm,
        c.other,
        values_of(records, name, c.arm),
        values_of(records, name, c.other),
        metric=c.metric,
        margin=c.margin,
      )
      low, high = d.t_interval
      row.append(
        f"{_fmt(d.mean, scale)} ({_fmt(low, scale)} to {_fmt(high, scale)})"
      )
    reach = verdict.reach_points(records, name, c.arm, c.other)
    reached = sorted(x for x in reach.values() if x is not None)
    row.append(
      f"{len(reached)} of {len(reach)}"
      + (f", median {reached[len(reached) // 2]:g}" if reached else "")
    )
    rows.append(row)
  unit = "epoch" if name == "cnn" else "iteration"
  header = [
    "Comparison",
    *(f"{m} (95% t interval)" for m, _ in metrics),
    f"Seeds reaching the other's final level, median {unit}",
  ]
  return markdown_table(header, rows)


def figure(experiment: Experiment, path: pathlib.Path) -> pathlib.Path:
  """The paired differences of the primary metric, seed by seed."""
  scale, unit = _scale(experiment.name)
  metric = (
    "final validation accuracy"
    if experiment.name == "cnn"
    else "final validation loss"
  )
  return plots.figure_paired_differences(
    experiment.comparisons,
    scale,
    f"paired difference of the {metric}{unit} (dots: seeds; bar: 95% interval)",
    path,
  )


def rate_rule_table(experiment: Experiment) -> str:
  """Each arm's best rate per sweep seed and pooled, and EXAdam's ratios to
  Adam's: the learning-rate rule and its spread over sweep seeds."""
  name, found = experiment.name, experiment.sweep_records
  seeds = sorted({int(r["seed"]) for r in found})
  rows = []
  for label, subset in [
    *(
      (f"sweep seed {seed}", [r for r in found if r["seed"] == seed])
      for seed in seeds
    ),
    ("pooled (the tuned rates)", found),
  ]:
    best = {c.arm: c.best_lr for c in sweep.choose(subset, name)}
    rows.append(
      [
        label,
        *(f"{best[arm]:.3g}" for arm in ARMS),
        *(
          f"{best[arm] / best['adam']:.2g}"
          for arm in ("exadam", verdict.CONSTANT_STEP)
        ),
      ]
    )
  header = [
    "Selection",
    *(display_name(arm) for arm in ARMS),
    f"{display_name('exadam')} / Adam",
    f"{display_name(verdict.CONSTANT_STEP)} / Adam",
  ]
  return markdown_table(header, rows)


def _seeds_line(experiment: Experiment) -> str:
  seeds = experiment.seeds
  extra = len(seeds) - PLANNED_SEEDS
  if extra < 0:
    status = f"{len(seeds)} of the {PLANNED_SEEDS} planned; the runs continue"
  else:
    status = f"the {PLANNED_SEEDS} planned" + (
      f" and {extra} more" if extra else ""
    )
  commits = sorted(
    {
      str(report.read_run_info(folder)["environment"].get("commit"))[:7]
      for folder in experiment.folders
    }
  )
  return (
    f"Final seeds {seeds[0]} to {seeds[-1]} ({status}), the same for every "
    f"arm; rates tuned on the sweep seeds {experiment.sweep_seeds}; code at "
    f"commit {', '.join(commits)}."
  )


def page(experiments: dict[str, Experiment | None]) -> str:
  """The verdict page."""
  lines = [
    "# The verdict: paired seeds, intervals, computed words",
    "",
    "Generated by `python -m benchmarks.reproduce.verdict_report` from the "
    "records under `benchmarks/results/cpu/verdict-*/`; do not edit. Each "
    "optimizer ran at its own tuned rate on the same final seeds (a seed "
    "fixes initialisation, data order, dropout and evaluation batches), so "
    "every comparison is paired by seed. The primary metric, declared before "
    "the runs, is the validation metric at the last evaluation. A verdict is "
    "**better** or **worse** where the paired t-test's p, Holm-adjusted over "
    "the experiment's comparisons, is below 0.05; **equivalent** where the "
    f"90% interval lies inside the margin ({_margins()}); **unresolved** "
    "otherwise. The half-width "
    "of the 95% interval is the smallest difference these seeds could have "
    "told from none.",
    "",
    "Scale: tiny models on a 2-core CPU. The paper's models have "
    f"{_num_params('gpt', 'paper'):,} (MinGPT) and "
    f"{_num_params('cnn', 'paper'):,} (CNN) parameters; results at that "
    "size need the GPU run (benchmarks/gpu/run.sh), which has not happened "
    "yet.",
    "",
  ]
  for name in EXPERIMENTS:
    experiment = experiments[name]
    lines += [f"## {TITLES[name]}", ""]
    if experiment is None:
      lines += ["No final seed has finished yet.", ""]
      continue
    lines += [
      scale_line(experiment),
      "",
      _seeds_line(experiment),
      "",
      arms_table(experiment),
      "",
      "The learning rates: each arm's best on its grid (three rates per "
      "decade) for each sweep seed alone and for both together, and the "
      "ratio of EXAdam's to Adam's:",
      "",
      rate_rule_table(experiment),
      "",
    ]
    if not experiment.comparisons:
      lines += ["A paired comparison needs at least two seeds.", ""]
      continue
    lines += [
      comparisons_table(experiment),
      "",
      f"![Paired differences](verdict-{name}/paired_differences.png)",
      "",
      "Secondary metrics (no verdict words: the primary metric was declared "
      "for those):",
      "",
      secondary_table(experiment),
      "",
    ]
  return "\n".join(lines)


def _margins() -> str:
  return (
    f"MinGPT {verdict.MARGINS['gpt']:g} of validation loss, the CNN "
    f"{verdict.MARGINS['cnn'] * 100:g} accuracy points"
  )


def readme_block(experiments: dict[str, Experiment | None]) -> str:
  """The README's summary: per experiment the comparisons and their words."""
  lines = [START, "", f"Equivalence margins: {_margins()}.", ""]
  for name in EXPERIMENTS:
    experiment = experiments[name]
    if experiment is None or not experiment.comparisons:
      lines += [f"**{TITLES[name]}**: not enough finished seeds yet.", ""]
      continue
    lines += [
      f"**{TITLES[name]}** ({scale_line(experiment)[:-1]}; "
      f"{len(experiment.seeds)} paired seeds):",
      "",
      arms_table(experiment),
      "",
      comparisons_table(experiment, full=False),
      "",
    ]
  lines.append(END)
  return "\n".join(lines)


def with_block(text: str, block: str) -> str:
  """``text`` with its verdict block replaced by ``block``.

  Raises:
    ValueError: If ``text`` has no verdict markers.
  """
  start, end = text.find(START), text.find(END)
  if start < 0 or end < start:
    raise ValueError(f"README.md has no {START} ... {END} block.")
  return text[:start] + block + text[end + len(END) :]


def main(argv: Sequence[str] | None = None) -> int:
  """Writes (or with ``--check`` verifies) the page, figures and block."""
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.reproduce.verdict_report",
    description="Write the verdict page and README block from the records.",
  )
  parser.add_argument(
    "--check",
    action="store_true",
    help="write nothing; exit 1 if the page or the README block differ",
  )
  args = parser.parse_args(argv)
  experiments = {name: load(name) for name in EXPERIMENTS}
  text, readme = (
    page(experiments),
    with_block(README.read_text(), readme_block(experiments)),
  )
  if args.check:
    stale = [
      str(path.relative_to(ROOT))
      for path, want in ((PAGE, text), (README, readme))
      if not path.exists() or path.read_text() != want
    ]
    if stale:
      print(
        f"error: {', '.join(stale)} differ from what the records give; run "
        "python -m benchmarks.reproduce.verdict_report",
        file=sys.stderr,
      )
      return 1
    return 0
  for experiment in experiments.values():
    if experiment is not None and experiment.comparisons:
      figure(
        experiment,
        RESULTS / f"verdict-{experiment.name}" / "paired_differences.png",
      )
  PAGE.write_text(text)
  README.write_text(readme)
  print(f"wrote {PAGE.relative_to(ROOT)} and the README block")
  return 0


if __name__ == "__main__":
  sys.exit(main())
