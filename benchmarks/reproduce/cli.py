"""Reproduces the EXAdam paper's two experiments over several seeds.

Usage, from the repository root::

  python -m benchmarks.reproduce --preset cpu --mode sweep --data-dir data \\
      --out benchmarks/results/cpu/tuned
  python -m benchmarks.reproduce --preset cpu --mode ablation \\
      --tuned-from benchmarks/results/cpu/tuned --out DIR
  python -m benchmarks.reproduce --preset cpu --mode compare --out DIR
  python -m benchmarks.reproduce --report-only --out DIR

Modes:

* ``sweep`` (the fair comparison): every optimizer over its learning-rate
  grid with ``--sweep-seeds`` seeds, different from the final ones; each
  optimizer's rate with the best validation metric is selected, and a grid
  whose choice lies at an edge is extended there until it does not (see
  :mod:`benchmarks.reproduce.sweep`); then every optimizer is rerun at its
  selected rate with ``--seeds`` fresh seeds.
* ``ablation``: EXAdam with all three components, each switched off in turn,
  and none (which is Adam), at one learning rate: ``--lr``, or EXAdam's rate
  selected in the sweep folder ``--tuned-from``.
* ``compare``: the paper's comparison, every optimizer at the protocol's
  learning rate (1e-4 for all).

The runs of one optimizer share one compiled program that maps a training
chunk over a leading run axis (see :mod:`benchmarks.reproduce.runs`); the
optimizers advance round-robin, one epoch or evaluation interval at a time,
so ``--time-budget`` stops them all at the same point. Results go to
``--out``: ``[sweep_]<experiment>_metrics.jsonl`` (one record per run and
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

from benchmarks.reproduce import cnn, gpt, records, report, runs, schedule
from benchmarks.reproduce import sweep as sweep_lib
from benchmarks.reproduce.presets import (
  ABLATION_ARMS,
  CNN,
  COMPARE_ARMS,
  EXPERIMENTS,
  FOCUS_ARM,
  PRESETS,
  REFERENCE_OPTIMIZER,
  SWEEP_ARMS,
  Arm,
  Preset,
  extend_grid,
)
from benchmarks.reproduce.runs import RunSpec
from benchmarks.step_cost.report import environment
from examples.common import cpu_setup, optimizers, sharding

MODES = ("sweep", "ablation", "compare")
SWEEP_SEED_OFFSET = 1000
"""Sweep seeds start this far above ``--first-seed``, apart from the final ones."""
MAX_EXTENSIONS = 3
"""How many times a sweep extends the grid of an arm whose choice is an edge."""
_GROUPS = {CNN: cnn.CNNRunGroup, "gpt": gpt.GPTRunGroup}
_LOADERS = {CNN: cnn.load, "gpt": gpt.load}


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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """Parses the command line of ``python -m benchmarks.reproduce``."""
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.reproduce",
    description="Compare EXAdam with the paper's optimizers over seeds.",
  )
  parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
  parser.add_argument("--mode", choices=MODES, default="sweep")
  parser.add_argument(
    "--schedule",
    choices=("constant", "cosine"),
    default="constant",
    help="learning-rate schedule of every run: constant (the paper's) or "
    "linear warmup then cosine decay, the swept rate being the peak",
  )
  parser.add_argument(
    "--warmup-fraction",
    type=float,
    default=0.05,
    help="cosine: fraction of the steps spent warming up (0.05)",
  )
  parser.add_argument(
    "--final-fraction",
    type=float,
    default=0.1,
    help="cosine: the final rate as a fraction of the peak (0.1)",
  )
  parser.add_argument(
    "--experiments", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS)
  )
  parser.add_argument(
    "--optimizers",
    nargs="+",
    metavar="ARM",
    help="only these arms (labels such as exadam or adam) of each experiment",
  )
  parser.add_argument(
    "--seeds", type=_positive_int, default=3, help="final seeds per arm (3)"
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
    default=2,
    help="seeds per learning rate in the sweep stage (2)",
  )
  parser.add_argument(
    "--final-length",
    type=_positive_int,
    help="train the final runs (after a sweep, or every run in the other "
    "modes) for this many iterations (MinGPT) or epochs (CNN) instead of "
    "the protocol's; with a constant rate their first part equals a run "
    "of the protocol's length",
  )
  parser.add_argument(
    "--lr",
    type=_positive_float,
    help="ablation: the learning rate of every arm",
  )
  parser.add_argument(
    "--tuned-from",
    type=pathlib.Path,
    help="ablation: take EXAdam's selected rate from this sweep folder",
  )
  parser.add_argument(
    "--time-budget",
    type=_positive_float,
    help="seconds each stage of each experiment may take; training stops "
    "early, at the same point for every optimizer",
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
  parser.add_argument("--data-dir", help="folder with the CIFAR-10 data")
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
  if args.mode == "ablation" and not args.report_only:
    if (args.lr is None) == (args.tuned_from is None):
      parser.error(
        "--mode ablation needs exactly one of --lr and --tuned-from."
      )
    if args.optimizers:
      parser.error("--optimizers does not apply to --mode ablation.")
  return args


def _log(message: str) -> None:
  print(message, flush=True)


@dataclasses.dataclass
class ExperimentContext:
  """What building one experiment's run groups needs.

  Attributes:
    experiment: ``"cnn"`` or ``"gpt"``.
    preset: The preset.
    data: The data set of the experiment.
    mesh: A one-device mesh.
    run_batch: ``--run-batch``.
  """

  experiment: str
  preset: Preset
  data: Any
  mesh: jax.sharding.Mesh
  run_batch: int | None

  @property
  def protocol(self) -> Any:
    """The trainer configuration of the experiment."""
    return self.preset.protocol(self.experiment)

  def lengthened(self, length: int | None) -> Any:
    """The protocol, trained for ``length`` iterations or epochs if given."""
    if length is None:
      return self.protocol
    field = "epochs" if self.experiment == CNN else "iters"
    return dataclasses.replace(self.protocol, **{field: length})

  def make_group(
    self, group_runs: Sequence[RunSpec], length: int | None = None
  ) -> schedule.RunGroup:
    """A run group of this experiment's kind (``length``: see
    :meth:`lengthened`)."""
    execution = runs.Execution.for_platform(
      self.mesh.devices.flat[0].platform, self.run_batch
    )
    return _GROUPS[self.experiment](
      group_runs, self.lengthened(length), self.data, self.mesh, execution
    )


def arms_for(
  experiment: str, mode: str, only: Sequence[str] | None
) -> tuple[Arm, ...]:
  """The arms an experiment runs in a mode.

  Raises:
    ValueError: If ``only`` leaves no arm.
  """
  if mode == "ablation":
    return ABLATION_ARMS
  arms = (SWEEP_ARMS if mode == "sweep" else COMPARE_ARMS)[experiment]
  if only:
    arms = tuple(arm for arm in arms if arm.label in only)
  if not arms:
    raise ValueError(
      f"--optimizers {' '.join(only)} leaves none of experiment "
      f"{experiment!r}'s arms in mode {mode!r}."
    )
  return arms


def protocol_rate(arm: Arm, learning_rate: float) -> float:
  """The injected rate of ``arm`` at a protocol rate (Adafactor: 1)."""
  return optimizers.initial_learning_rate(arm.optimizer, learning_rate)


def run_stage(
  context: ExperimentContext,
  runs_by_arm: Sequence[Sequence[RunSpec]],
  path: pathlib.Path,
  time_budget: float | None,
  length: int | None = None,
) -> schedule.Outcome:
  """Trains one stage (all arms' runs) round-robin, appending to ``path``."""
  writer = records.RecordWriter(path)
  groups = [context.make_group(group, length) for group in runs_by_arm if group]
  return schedule.run_round_robin(
    groups, writer.write, time_budget=time_budget, log=_log
  )


def probe_seeds(
  context: ExperimentContext,
  arms: Sequence[Arm],
  max_seeds: int,
  time_left: float,
  first_seed: int,
) -> tuple[int, dict[str, float]]:
  """Times one run of one arm and returns how many seeds fit the time left.

  Returns:
    ``(seeds, timing)``; ``timing`` holds the measured seconds.
  """
  arm = next((a for a in arms if a.optimizer == REFERENCE_OPTIMIZER), arms[0])
  start = time.monotonic()
  group = context.make_group(
    [RunSpec(arm, protocol_rate(arm, context.protocol.lr), first_seed)]
  )
  group.start()
  first_start = time.monotonic()
  group.run_chunk()
  first = time.monotonic() - first_start
  chunk = first
  if group.num_chunks > 1:
    second_start = time.monotonic()
    group.run_chunk()
    chunk = time.monotonic() - second_start
  spent = time.monotonic() - start
  seeds = schedule.seeds_that_fit(
    chunk_seconds=chunk,
    compile_seconds=max(0.0, first - chunk),
    num_arms=len(arms),
    num_chunks=group.num_chunks,
    time_left=time_left - spent,
    max_seeds=max_seeds,
  )
  timing = {
    "probe_arm": arm.label,
    "chunk_seconds": chunk,
    "compile_seconds": max(0.0, first - chunk),
    "probe_seconds": spent,
  }
  return seeds, timing


def tuned_rate(folder: pathlib.Path, experiment: str, arm: str) -> float:
  """The rate a finished sweep selected for ``arm``.

  Raises:
    ValueError: If the folder's sweep did not select a rate for it.
  """
  info = report.read_run_info(folder)
  selected = (
    info["experiments"].get(experiment, {}).get("sweep", {}).get("selected", {})
  )
  if selected.get(arm) is None:
    raise ValueError(
      f"{folder} holds no selected rate of {arm!r} for experiment "
      f"{experiment!r}; run --mode sweep with --out {folder} first."
    )
  return float(selected[arm])


def run_sweep(
  context: ExperimentContext,
  arms: Sequence[Arm],
  args: argparse.Namespace,
  entry: dict[str, Any],
  save_info: Callable[[], None],
) -> dict[str, float]:
  """The sweep stage: grids, edge extensions and the selected rates.

  Returns:
    The selected rate of each arm that did not diverge everywhere.
  """
  experiment = context.experiment
  seeds = [
    args.first_seed + SWEEP_SEED_OFFSET + index
    for index in range(args.sweep_seeds)
  ]
  grids = {
    arm.label: context.preset.grid(experiment, arm.label) for arm in arms
  }
  entry["sweep"] = {
    "seeds": seeds,
    "grid": dict(grids),
    "extensions": [],
    "outcomes": [],
  }
  path = records.metrics_path(args.out, experiment, report.SWEEP_STAGE)
  todo = {arm.label: grids[arm.label] for arm in arms}
  for extension in range(MAX_EXTENSIONS + 1):
    save_info()
    _log(
      f"{experiment}: sweep stage {extension} ({sum(map(len, todo.values()))} rates)"
    )
    outcome = run_stage(
      context,
      [
        [RunSpec(arm, rate, seed) for rate in todo[arm.label] for seed in seeds]
        for arm in arms
        if arm.label in todo
      ],
      path,
      args.time_budget,
    )
    entry["sweep"]["outcomes"].append(outcome.as_dict())
    choices = sweep_lib.choose(records.read_records(path), experiment)
    edges = sweep_lib.edges_to_extend(choices)
    if not edges or extension == MAX_EXTENSIONS:
      break
    todo = {}
    for choice in choices:
      if choice.arm in edges:
        todo[choice.arm] = extend_grid(choice.rates, edges[choice.arm])
        grids[choice.arm] = tuple(
          sorted((*grids[choice.arm], *todo[choice.arm]))
        )
    entry["sweep"]["extensions"].append(
      {arm: list(rates) for arm, rates in todo.items()}
    )
    entry["sweep"]["grid"] = dict(grids)
  selected = {choice.arm: choice.best_lr for choice in choices}
  entry["sweep"]["selected"] = selected
  return {arm: rate for arm, rate in selected.items() if rate is not None}


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
    "protocol": dataclasses.asdict(context.protocol),
    "final_protocol": dataclasses.asdict(context.lengthened(args.final_length)),
    "arms": [arm.label for arm in arms],
  }
  info["experiments"][experiment] = entry
  num_seeds = args.seeds
  budget = args.time_budget
  if args.auto_seeds:
    started = time.monotonic()
    num_seeds, entry["seed_probe"] = probe_seeds(
      context, arms, args.seeds, budget, args.first_seed
    )
    budget -= time.monotonic() - started
    _log(f"{experiment}: {num_seeds} seed(s) fit the time budget")
  seeds = list(range(args.first_seed, args.first_seed + num_seeds))
  entry["seeds"] = seeds
  if args.mode == "sweep":
    rates = run_sweep(context, arms, args, entry, save_info)
    arms = tuple(arm for arm in arms if arm.label in rates)
  elif args.mode == "ablation":
    rate = args.lr or tuned_rate(args.tuned_from, experiment, FOCUS_ARM)
    rates = {arm.label: rate for arm in arms}
    entry["learning_rate"] = rate
  else:
    rates = {arm.label: protocol_rate(arm, context.protocol.lr) for arm in arms}
  save_info()
  _log(f"{experiment}: {args.mode} runs with seeds {seeds}")
  entry["outcome"] = run_stage(
    context,
    [[RunSpec(arm, rates[arm.label], seed) for seed in seeds] for arm in arms],
    records.metrics_path(args.out, experiment),
    budget,
    args.final_length,
  ).as_dict()
  save_info()


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line; returns the exit status."""
  args = parse_args(argv)
  out: pathlib.Path = args.out
  if args.report_only:
    _log(f"wrote {report.write_report(out)}")
    return 0
  existing = [
    path
    for experiment in args.experiments
    for stage in ("", report.SWEEP_STAGE)
    if (path := records.metrics_path(out, experiment, stage)).exists()
  ]
  if existing:
    raise SystemExit(
      f"error: {out} already holds results "
      f"({', '.join(p.name for p in existing)}); choose a new --out folder, "
      "or delete the old results first."
    )
  cpu_setup.configure()
  preset = PRESETS[args.preset].with_schedule(
    args.schedule, args.warmup_fraction, args.final_fraction
  )
  info: dict[str, Any] = {
    "preset": preset.name,
    "mode": args.mode,
    "command": shlex.join(
      [
        "python",
        "-m",
        "benchmarks.reproduce",
        *(sys.argv[1:] if argv is None else argv),
      ]
    ),
    "environment": environment(),
    "experiments": {},
  }
  out.mkdir(parents=True, exist_ok=True)

  def save_info() -> None:
    report.write_run_info(out, info)

  mesh = sharding.make_data_mesh(1)
  for experiment in args.experiments:
    protocol = preset.protocol(experiment)
    context = ExperimentContext(
      experiment=experiment,
      preset=preset,
      data=_LOADERS[experiment](protocol, args.data_dir, args.download),
      mesh=mesh,
      run_batch=args.run_batch,
    )
    run_experiment(context, args, info, save_info)
    report.write_report(out)
  _log(f"wrote {report.write_report(out)}")
  return 0
