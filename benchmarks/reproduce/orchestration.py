"""The stages of a reproduction, run in order and resumable at any point.

:class:`Reproduction` carries out what the command line asks
(:mod:`benchmarks.reproduce.cli` only parses it): for each experiment,

* ``sweep`` mode: the sweep stage (every arm over its learning-rate grid
  with the sweep seeds), then as many grid extensions as the selection
  needs (see :mod:`benchmarks.reproduce.sweep`), then the final stage, every
  arm at its selected rate with the final seeds;
* ``ablation`` mode: the final stage with EXAdam's components switched off
  in turn, at one rate;
* ``compare`` mode: the final stage at the protocol's rate.

Each stage trains its groups round-robin (:mod:`benchmarks.reproduce.schedule`)
and checkpoints every group after each chunk; ``run_info.json`` records each
stage once it has finished. Started again with the same options, a
reproduction skips the finished stages and continues the unfinished one from
its checkpoints (:mod:`benchmarks.reproduce.resume`), so a sweep stopped by
a kill loses at most the chunk in progress. SIGTERM or Ctrl-C loses nothing:
the stop comes after the chunk in progress is saved.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax

from benchmarks.reproduce import (
  cnn,
  gpt,
  records,
  report,
  resume,
  runs,
  schedule,
)
from benchmarks.reproduce import sweep as sweep_lib
from benchmarks.reproduce.presets import (
  ABLATION_ARMS,
  CNN,
  COMPARE_ARMS,
  FOCUS_ARM,
  PRESETS,
  SWEEP_ARMS,
  Arm,
  Preset,
  extend_grid,
  reference_arm,
)
from benchmarks.reproduce.runs import RunSpec
from benchmarks.step_cost.report import environment
from examples.common import optimizers, sharding, stopping

SWEEP_SEED_OFFSET = 1000
"""Sweep seeds start this far above ``--first-seed``, apart from the final ones."""
MAX_EXTENSIONS = 3
"""How many times a sweep extends the grid of an arm whose choice is an edge."""
RESUMABLE_OPTIONS = ("data_dir", "download", "report_only")
"""Options that may differ when a stopped reproduction is started again."""
_GROUPS = {CNN: cnn.CNNRunGroup, "gpt": gpt.GPTRunGroup}
_LOADERS = {CNN: cnn.load, "gpt": gpt.load}


class Stopped(Exception):
  """Raised after a stop signal, once the chunk in progress is saved."""


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
  reference = reference_arm([a.label for a in arms])
  arm = next((a for a in arms if a.label == reference), arms[0])
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


def reused_sweeps(
  folders: Sequence[pathlib.Path], experiment: str, protocol: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[int]]:
  """The sweep records and sweep seeds of earlier reproductions.

  Raises:
    ValueError: If a folder holds no sweep of ``experiment``, or one of
      another protocol.
  """
  found, seeds = [], set()
  for folder in folders:
    entry = report.read_run_info(folder)["experiments"].get(experiment, {})
    if "selected" not in entry.get("sweep", {}):
      raise ValueError(f"{folder} holds no finished {experiment} sweep.")
    theirs = entry["protocol"]
    differences = sorted(
      key
      for key in {*theirs, *protocol}
      if theirs.get(key) != protocol.get(key)
    )
    if differences:
      raise ValueError(
        f"{folder} swept {experiment} under another protocol (differing: "
        f"{', '.join(differences)}); sweep anew instead of --sweeps-from."
      )
    seeds.update(entry["sweep"]["seeds"])
    path = records.metrics_path(folder, experiment, report.SWEEP_STAGE)
    found += records.read_records(path)
  return found, sorted(seeds)


def options_of(args: argparse.Namespace) -> dict[str, Any]:
  """The parsed options as JSON values, as ``run_info.json`` keeps them."""

  def as_json(value: Any) -> Any:
    if isinstance(value, pathlib.Path):
      return str(value)
    if isinstance(value, list):
      return [as_json(item) for item in value]
    return value

  return {name: as_json(value) for name, value in sorted(vars(args).items())}


class Reproduction:
  """One reproduction folder and the stages that fill it.

  Args:
    args: The parsed command line.
    command: The command as typed, for ``run_info.json``.
    signals: The stop signals to heed: after a signal, :meth:`run` raises
      :class:`Stopped` once the chunk in progress is saved, or before the
      next stage begins.

  Raises:
    ValueError: If ``--out`` holds results of another command (or of a
      version that did not record its options).
  """

  def __init__(
    self,
    args: argparse.Namespace,
    command: str,
    signals: stopping.StopSignals | None = None,
  ):
    self.args = args
    self.signals = signals
    self.out: pathlib.Path = args.out
    self.preset = PRESETS[args.preset].with_schedule(
      args.schedule, args.warmup_fraction, args.final_fraction
    )
    self.info = self._start_or_resume(command)

  def _start_or_resume(self, command: str) -> dict[str, Any]:
    options = options_of(self.args)
    if (self.out / report.RUN_INFO_FILE).exists():
      info = report.read_run_info(self.out)
      saved = info.get("options")
      if saved is None:
        raise ValueError(
          f"{self.out} already holds results of a finished reproduction; "
          "choose a new --out folder, or delete the old results first."
        )
      changed = resume.changed_options(saved, options, RESUMABLE_OPTIONS)
      if changed:
        details = ", ".join(
          f"{name}: {saved.get(name)!r} -> {options.get(name)!r}"
          for name in changed
        )
        raise ValueError(
          f"{self.out} holds a reproduction started with other options "
          f"({details}); run its command again to continue it (run_info.json "
          "has it), or choose a new --out folder."
        )
      done = ", ".join(info["stages"]) or "none"
      _log(f"continuing the reproduction in {self.out} (stages done: {done})")
      info.setdefault("resumed", []).append(environment())
      return info
    existing = [
      path.name
      for experiment in self.args.experiments
      for stage in ("", report.SWEEP_STAGE)
      if (path := records.metrics_path(self.out, experiment, stage)).exists()
    ]
    if existing:
      raise ValueError(
        f"{self.out} already holds results ({', '.join(existing)}) but no "
        "run_info.json; choose a new --out folder, or delete the old results "
        "first."
      )
    return {
      "preset": self.preset.name,
      "mode": self.args.mode,
      "command": command,
      "options": options,
      "environment": environment(),
      "experiments": {},
      "stages": {},
    }

  def save_info(self) -> None:
    """Writes ``run_info.json``."""
    report.write_run_info(self.out, self.info)

  def run(self) -> pathlib.Path:
    """Runs (or continues) every experiment; returns the tables' path."""
    self.save_info()
    mesh = sharding.make_data_mesh(1)
    for experiment in self.args.experiments:
      protocol = self.preset.protocol(experiment)
      context = ExperimentContext(
        experiment=experiment,
        preset=self.preset,
        data=_LOADERS[experiment](
          protocol, self.args.data_dir, self.args.download
        ),
        mesh=mesh,
        run_batch=self.args.run_batch,
      )
      self.run_experiment(context)
      report.write_report(self.out)
    return report.write_report(self.out)

  def stop_if_requested(self) -> None:
    """Raises :class:`Stopped` if a stop signal has arrived.

    The signal handler only notes the signal: an exception raised wherever
    the signal strikes can be swallowed (JAX's compilation cache turns one
    into a warning) or leave JAX to crash at exit.
    """
    if self.signals is not None and self.signals.requested:
      raise Stopped

  def run_stage(
    self,
    context: ExperimentContext,
    stage: str,
    runs_by_arm: Sequence[Sequence[RunSpec]],
    path: pathlib.Path,
    time_budget: float | None,
    length: int | None = None,
  ) -> dict[str, Any]:
    """Trains one stage (all arms' runs) round-robin, appending to ``path``.

    A finished stage is not run again; an unfinished one continues from its
    checkpoints.

    Returns:
      The stage's :class:`~benchmarks.reproduce.schedule.Outcome` as a dict.
    """
    if stage in self.info["stages"]:
      return self.info["stages"][stage]
    self.stop_if_requested()
    groups = [
      context.make_group(group, length) for group in runs_by_arm if group
    ]
    checkpoints = [
      resume.GroupCheckpoints(self.out, stage, group.runs[0].arm.label)
      for group in groups
    ]
    positions: dict[str, int | None] = {}
    elapsed = 0.0
    for group, saved in zip(groups, checkpoints, strict=True):
      progress = saved.restore(group)
      if progress is not None:
        elapsed = max(elapsed, progress["stage_seconds"])
        _log(
          f"{stage}: {group.runs[0].arm.label} continues after chunk "
          f"{group.chunks_done} of {group.num_chunks}"
        )
      for run in group.runs:
        positions[run.run_id] = None if progress is None else group.position
    resume.keep_restored_records(path, positions)
    by_group = dict(zip(map(id, groups), checkpoints, strict=True))

    def after_chunk(group: Any, seconds: float) -> None:
      by_group[id(group)].save(group, seconds)
      self.stop_if_requested()

    try:
      outcome = schedule.run_round_robin(
        groups,
        records.RecordWriter(path).write,
        time_budget=time_budget,
        log=_log,
        after_chunk=after_chunk,
        elapsed=elapsed,
      )
    finally:
      for saved in checkpoints:
        saved.close()
    self.info["stages"][stage] = outcome.as_dict()
    self.save_info()
    resume.delete_stage(self.out, stage)
    return self.info["stages"][stage]

  def run_sweep(
    self, context: ExperimentContext, arms: Sequence[Arm], entry: dict[str, Any]
  ) -> dict[str, float]:
    """The sweep stages: grids, edge extensions and the selected rates.

    Returns:
      The selected rate of each arm that did not diverge everywhere.
    """
    args, experiment = self.args, context.experiment
    seeds = [
      args.first_seed + SWEEP_SEED_OFFSET + index
      for index in range(args.sweep_seeds)
    ]
    labels = [arm.label for arm in arms]
    reused: list[dict[str, Any]] = []
    if args.sweeps_from:
      # JSON's view of the protocol, as run_info.json holds it.
      protocol = json.loads(json.dumps(dataclasses.asdict(context.protocol)))
      found, seeds = reused_sweeps(args.sweeps_from, experiment, protocol)
      reused = [r for r in found if r["arm"] in labels]
    reused_arms = records.arms_in_order(reused)
    grids = {
      label: tuple(records.learning_rates_of(reused, label))
      if label in reused_arms
      else context.preset.grid(experiment, label)
      for label in labels
    }
    entry["sweep"] = {
      "seeds": seeds,
      "grid": dict(grids),
      "reused_from": [str(folder) for folder in args.sweeps_from or ()],
      "reused_arms": reused_arms,
      "extensions": [],
      "outcomes": [],
    }
    path = records.metrics_path(self.out, experiment, report.SWEEP_STAGE)
    todo = {label: grids[label] for label in labels if label not in reused_arms}
    # Run ids of the reused records and of this and the earlier stages.
    swept: set[str] = {r["run_id"] for r in reused}
    for extension in range(MAX_EXTENSIONS + 1):
      self.save_info()
      _log(
        f"{experiment}: sweep stage {extension} "
        f"({sum(map(len, todo.values()))} rates)"
      )
      stage_runs = [
        [RunSpec(arm, rate, seed) for rate in todo[arm.label] for seed in seeds]
        for arm in arms
        if arm.label in todo
      ]
      swept |= {run.run_id for group in stage_runs for run in group}
      if stage_runs:  # none where every arm's sweep is reused
        outcome = self.run_stage(
          context,
          f"{experiment}-sweep-{extension}",
          stage_runs,
          path,
          args.time_budget,
        )
        entry["sweep"]["outcomes"].append(outcome)
      # A continued reproduction may hold records of a later, unfinished
      # extension already: choose from this stage's and earlier ones' only.
      own = records.read_records(path) if path.exists() else []
      choices = sweep_lib.choose(
        [r for r in [*reused, *own] if r["run_id"] in swept], experiment
      )
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

  def run_experiment(self, context: ExperimentContext) -> None:
    """Runs one experiment in ``--mode``, recording progress in the info."""
    args, experiment = self.args, context.experiment
    arms = arms_for(experiment, args.mode, args.optimizers)
    entry = self.info["experiments"].setdefault(experiment, {})
    entry.update(
      protocol=dataclasses.asdict(context.protocol),
      final_protocol=dataclasses.asdict(context.lengthened(args.final_length)),
      arms=[arm.label for arm in arms],
    )
    budget = args.time_budget
    if "seeds" not in entry:  # chosen once, also when resuming
      num_seeds = args.seeds
      if args.auto_seeds:
        started = time.monotonic()
        num_seeds, entry["seed_probe"] = probe_seeds(
          context, arms, args.seeds, budget, args.first_seed
        )
        budget -= time.monotonic() - started
        _log(f"{experiment}: {num_seeds} seed(s) fit the time budget")
      entry["seeds"] = list(range(args.first_seed, args.first_seed + num_seeds))
    seeds = entry["seeds"]
    if args.mode == "sweep":
      rates = self.run_sweep(context, arms, entry)
      shared = sorted(set(seeds) & set(entry["sweep"]["seeds"]))
      if shared:
        raise ValueError(
          f"final seeds {shared} are also sweep seeds; choose another "
          "--first-seed, so that no final run repeats a sweep run."
        )
      arms = tuple(arm for arm in arms if arm.label in rates)
    elif args.mode == "ablation":
      rate = args.lr or tuned_rate(args.tuned_from, experiment, FOCUS_ARM)
      rates = {arm.label: rate for arm in arms}
      entry["learning_rate"] = rate
    else:
      rates = {
        arm.label: protocol_rate(arm, context.protocol.lr) for arm in arms
      }
    self.save_info()
    _log(f"{experiment}: {args.mode} runs with seeds {seeds}")
    entry["outcome"] = self.run_stage(
      context,
      f"{experiment}-final",
      [
        [RunSpec(arm, rates[arm.label], seed) for seed in seeds] for arm in arms
      ],
      records.metrics_path(self.out, experiment),
      budget,
      args.final_length,
    )
    self.save_info()
