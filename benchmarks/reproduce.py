"""Reproduces the EXAdam paper's two experiments over several seeds.

Usage, from the repository root::

  python -m benchmarks.reproduce --preset cpu --seeds 3 --data-dir data \\
      --out benchmarks/results/cpu/compare
  python -m benchmarks.reproduce --preset cpu --mode sweep --out /tmp/sweep
  python -m benchmarks.reproduce --preset cpu --mode ablation --out /tmp/abl
  python -m benchmarks.reproduce --report-only --out DIR

Modes:

* ``compare``: every optimizer of the experiment at the protocol's learning
  rate (the paper's comparison), ``--seeds`` seeds each.
* ``sweep``: first every optimizer over its learning-rate grid
  (``--sweep-seeds`` seeds, different from the final ones); each optimizer's
  rate with the lowest final validation loss is selected; then the
  comparison is rerun at the selected rates with ``--seeds`` fresh seeds.
* ``ablation``: EXAdam with all three components, each switched off in turn,
  and none (which is Adam).

The runs of one optimizer share one compiled program that maps a training
chunk over a leading run axis (see :mod:`benchmarks.repro_runs`); the
optimizers advance round-robin, one epoch or evaluation interval at a time,
so ``--time-budget`` stops them all at the same point. Results go to
``--out``: ``<experiment>_metrics.jsonl`` (one record per run and
evaluation), ``run_info.json``, ``tables.md`` and ``figures/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

from benchmarks import (
  repro_cnn,
  repro_gpt,
  repro_records,
  repro_report,
  repro_runs,
  repro_schedule,
  repro_tables,
  step_cost_report,
)
from benchmarks.repro_presets import (
  ABLATION_ARMS,
  CNN,
  EXPERIMENTS,
  OPTIMIZERS_BY_EXPERIMENT,
  PRESETS,
  REFERENCE_OPTIMIZER,
  Arm,
  Preset,
  comparison_arms,
)
from benchmarks.repro_runs import RunSpec
from examples.cifar10 import data as cifar_data
from examples.common import optimizers, sharding
from examples.mingpt import data as text_data

MODES = ("compare", "sweep", "ablation")
SWEEP_SEED_OFFSET = 1000
"""Sweep seeds start this far above ``--first-seed``, apart from the final ones."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """Parses the command line of ``python -m benchmarks.reproduce``."""
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.reproduce",
    description="Reproduce the EXAdam paper's tables over seeds.",
  )
  parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
  parser.add_argument("--mode", choices=MODES, default="compare")
  parser.add_argument(
    "--experiments", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS)
  )
  parser.add_argument(
    "--optimizers",
    nargs="+",
    choices=optimizers.OPTIMIZER_NAMES,
    help="only these optimizers (of those each experiment has)",
  )
  parser.add_argument(
    "--seeds",
    type=_positive_int,
    default=3,
    help="seeds per optimizer (default 3)",
  )
  parser.add_argument(
    "--first-seed",
    type=int,
    default=1234,
    help="seeds are first-seed, first-seed + 1, ... (default: the paper's 1234)",
  )
  parser.add_argument(
    "--sweep-seeds",
    type=_positive_int,
    default=1,
    help="seeds per learning rate in the sweep stage (default 1)",
  )
  parser.add_argument(
    "--time-budget",
    type=_positive_float,
    help="seconds each experiment (each stage in sweep mode) may take; "
    "training stops early, at the same point for every optimizer",
  )
  parser.add_argument(
    "--auto-seeds",
    action="store_true",
    help="with --time-budget: time one run first and lower --seeds to what fits",
  )
  parser.add_argument(
    "--run-batch",
    type=_positive_int,
    help="runs trained in one vmapped call (default: all on an accelerator, "
    "1 on the CPU, where vmapped convolutions are slower)",
  )
  parser.add_argument(
    "--data-dir", help="folder with the CIFAR-10 and text data"
  )
  parser.add_argument(
    "--download", action="store_true", help="download missing data sets"
  )
  parser.add_argument("--out", type=pathlib.Path, required=True)
  parser.add_argument(
    "--report-only",
    action="store_true",
    help="only rebuild tables.md and figures/ from the files in --out",
  )
  args = parser.parse_args(argv)
  if args.auto_seeds and args.time_budget is None:
    parser.error("--auto-seeds needs --time-budget.")
  if args.optimizers and args.mode == "ablation":
    parser.error(
      "--optimizers does not apply to --mode ablation (EXAdam only)."
    )
  return args


def _positive_int(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
  return value


def _positive_float(text: str) -> float:
  value = float(text)
  if not (math.isfinite(value) and value > 0):
    raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
  return value


def _log(message: str) -> None:
  print(message, flush=True)


@dataclasses.dataclass
class ExperimentContext:
  """What building one experiment's run groups needs.

  Attributes:
    experiment: ``"cnn"`` or ``"gpt"``.
    preset: The preset.
    data: The (reduced) CIFAR-10 or the text corpus.
    mesh: A one-device mesh.
    run_batch: ``--run-batch``.
  """

  experiment: str
  preset: Preset
  data: Any
  mesh: jax.sharding.Mesh
  run_batch: int | None

  def make_group(self, runs: Sequence[RunSpec]) -> repro_schedule.RunGroup:
    """A run group of this experiment's kind."""
    protocol = self.preset.protocol(self.experiment)
    group_class = (
      repro_cnn.CNNRunGroup if self.experiment == CNN else repro_gpt.GPTRunGroup
    )
    execution = repro_runs.Execution.for_platform(
      self.mesh.devices.flat[0].platform, self.run_batch
    )
    return group_class(runs, protocol, self.data, self.mesh, execution)

  @property
  def learning_rate(self) -> float:
    """The protocol's learning rate."""
    return self.preset.protocol(self.experiment).learning_rate


def load_data(experiment: str, preset: Preset, args: argparse.Namespace) -> Any:
  """CIFAR-10 reduced to the preset's sizes, or the text corpus."""
  if experiment == CNN:
    dataset = cifar_data.load_cifar10(args.data_dir, download=args.download)
    return repro_cnn.subset(dataset, preset.cnn)
  return text_data.load_text(args.data_dir, download=args.download)


def arms_for(
  experiment: str, mode: str, only: Sequence[str] | None
) -> tuple[Arm, ...]:
  """The arms an experiment runs in a mode.

  Raises:
    ValueError: If ``only`` leaves no optimizer of the experiment.
  """
  if mode == "ablation":
    return ABLATION_ARMS
  names = OPTIMIZERS_BY_EXPERIMENT[experiment]
  if only:
    names = tuple(name for name in names if name in only)
  if not names:
    raise ValueError(
      f"--optimizers {' '.join(only)} leaves none of experiment {experiment!r}'s "
      f"optimizers ({', '.join(OPTIMIZERS_BY_EXPERIMENT[experiment])})."
    )
  return comparison_arms(names)


def runs_at(
  arm: Arm, rates: Sequence[float], seeds: Sequence[int]
) -> list[RunSpec]:
  """The runs of ``arm`` at every rate and seed."""
  return [RunSpec(arm, rate, seed) for rate in rates for seed in seeds]


def protocol_rate(arm: Arm, learning_rate: float) -> float:
  """The injected rate of ``arm`` under the protocol (Adafactor: 1)."""
  return optimizers.initial_learning_rate(arm.optimizer, learning_rate)


def probe_seeds(
  context: ExperimentContext,
  arms: Sequence[Arm],
  max_seeds: int,
  time_left: float,
  first_seed: int,
) -> tuple[int, dict[str, float]]:
  """Times one run of one arm and returns how many seeds fit the time left.

  The arm is Adam if present (a typical cost), else the first.

  Returns:
    ``(seeds, timing)``; ``timing`` holds the measured seconds.
  """
  arm = next(
    (arm for arm in arms if arm.optimizer == REFERENCE_OPTIMIZER), arms[0]
  )
  start = time.monotonic()
  group = context.make_group(
    [RunSpec(arm, protocol_rate(arm, context.learning_rate), first_seed)]
  )
  group.start()
  first_start = time.monotonic()
  group.run_chunk()
  first = time.monotonic() - first_start
  if group.num_chunks > 1:
    second_start = time.monotonic()
    group.run_chunk()
    chunk = time.monotonic() - second_start
  else:
    chunk = first
  compile_seconds = max(0.0, first - chunk)
  spent = time.monotonic() - start
  seeds = repro_schedule.seeds_that_fit(
    chunk_seconds=chunk,
    compile_seconds=compile_seconds,
    num_arms=len(arms),
    num_chunks=group.num_chunks,
    time_left=time_left - spent,
    max_seeds=max_seeds,
  )
  timing = {
    "probe_arm": arm.label,
    "chunk_seconds": chunk,
    "compile_seconds": compile_seconds,
    "probe_seconds": spent,
  }
  return seeds, timing


def run_stage(
  context: ExperimentContext,
  runs_by_arm: Sequence[Sequence[RunSpec]],
  path: pathlib.Path,
  time_budget: float | None,
) -> repro_schedule.Outcome:
  """Trains one stage (all arms' runs) round-robin, writing to ``path``.

  Raises:
    FileExistsError: If ``path`` exists (never mix two runs' records).
  """
  if path.exists():
    raise FileExistsError(
      f"{path} exists; choose a new --out folder or delete the old results."
    )
  writer = repro_records.RecordWriter(path)
  groups = [context.make_group(runs) for runs in runs_by_arm]
  return repro_schedule.run_round_robin(
    groups, writer.write, time_budget=time_budget, log=_log
  )


def run_experiment(
  context: ExperimentContext,
  args: argparse.Namespace,
  info: dict[str, Any],
  save_info: Callable[[], None],
) -> None:
  """Runs one experiment in ``args.mode``, recording progress in ``info``."""
  experiment = context.experiment
  arms = arms_for(experiment, args.mode, args.optimizers)
  entry: dict[str, Any] = {
    "protocol": dataclasses.asdict(context.preset.protocol(experiment)),
    "arms": [arm.label for arm in arms],
  }
  info["experiments"][experiment] = entry
  budget = args.time_budget
  num_seeds = args.seeds
  if args.auto_seeds:
    started = time.monotonic()
    num_seeds, entry["seed_probe"] = probe_seeds(
      context, arms, args.seeds, budget, args.first_seed
    )
    budget -= time.monotonic() - started
    _log(f"{experiment}: {num_seeds} seed(s) fit the time budget")
  seeds = list(range(args.first_seed, args.first_seed + num_seeds))
  entry["seeds"] = seeds
  rates = {arm.label: protocol_rate(arm, context.learning_rate) for arm in arms}
  if args.mode == "sweep":
    sweep_seeds = [
      args.first_seed + SWEEP_SEED_OFFSET + index
      for index in range(args.sweep_seeds)
    ]
    grid = {
      arm.label: context.preset.sweep.for_optimizer(arm.optimizer)
      for arm in arms
    }
    entry["sweep"] = {"seeds": sweep_seeds, "grid": grid}
    save_info()
    _log(f"{experiment}: sweep stage")
    entry["sweep"]["outcome"] = run_stage(
      context,
      [runs_at(arm, grid[arm.label], sweep_seeds) for arm in arms],
      repro_records.metrics_path(
        args.out, experiment, repro_report.SWEEP_STAGE
      ),
      budget,
    ).as_dict()
    choices = repro_tables.sweep_choices(
      repro_records.read_records(
        repro_records.metrics_path(
          args.out, experiment, repro_report.SWEEP_STAGE
        )
      ),
      "epoch" if experiment == CNN else "step",
    )
    selected = {choice.arm: choice.best_lr for choice in choices}
    entry["sweep"]["selected"] = selected
    arms = tuple(arm for arm in arms if selected.get(arm.label) is not None)
    rates = {arm.label: selected[arm.label] for arm in arms}
  save_info()
  _log(f"{experiment}: {args.mode} with seeds {seeds}")
  entry["outcome"] = run_stage(
    context,
    [runs_at(arm, [rates[arm.label]], seeds) for arm in arms],
    repro_records.metrics_path(args.out, experiment),
    budget,
  ).as_dict()
  save_info()


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line; returns the exit status."""
  args = parse_args(argv)
  out: pathlib.Path = args.out
  if args.report_only:
    _log(f"wrote {repro_report.write_report(out)}")
    return 0
  existing = [
    path
    for experiment in args.experiments
    for stage in ("", repro_report.SWEEP_STAGE)
    if (path := repro_records.metrics_path(out, experiment, stage)).exists()
  ]
  if existing:
    raise FileExistsError(
      f"{out} already holds results ({', '.join(p.name for p in existing)}); "
      "choose a new --out folder, or delete the old results first."
    )
  preset = PRESETS[args.preset]
  info: dict[str, Any] = {
    "preset": preset.name,
    "mode": args.mode,
    "command": shlex.join(
      ["python", "-m", "benchmarks.reproduce", *(argv or sys.argv[1:])]
    ),
    "environment": step_cost_report.environment(),
    "experiments": {},
  }
  out.mkdir(parents=True, exist_ok=True)

  def save_info() -> None:
    repro_report.write_run_info(out, info)

  mesh = sharding.make_data_mesh(1)
  for experiment in args.experiments:
    context = ExperimentContext(
      experiment=experiment,
      preset=preset,
      data=load_data(experiment, preset, args),
      mesh=mesh,
      run_batch=args.run_batch,
    )
    run_experiment(context, args, info, save_info)
    repro_report.write_report(out)
  _log(f"wrote {repro_report.write_report(out)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
