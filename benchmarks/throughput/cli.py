"""Training throughput of both example models, JAX against its PyTorch peer.

Usage, from the repository root::

  python -m benchmarks.throughput                      # every model and preset
  python -m benchmarks.throughput --models cnn --presets tiny --rounds 3
  python -m benchmarks.throughput --configs jax jax+cpu-setup jax+jemalloc

Each *configuration* is a framework and a process setting:

* ``jax``: JAX as installed, none of :mod:`examples.common.cpu_setup`;
* ``jax+malloc`` / ``jax+xla``: only its allocator setting, or only its XLA
  flag; ``jax+cpu-setup``: both, which is what the trainers do;
* ``jax+jemalloc`` / ``jax+tcmalloc``: the XLA flag, with that allocator
  preloaded (``LD_PRELOAD``) where it is installed;
* ``torch``: the PyTorch peer (:mod:`benchmarks.throughput.torch_peer`) as
  installed; ``torch+malloc``: with the same allocator setting.

Every measurement is a fresh process (:mod:`benchmarks.throughput.worker`)
that builds the training step as the trainer does, times its first call and
then a number of steps one by one; the configurations run in turn, in a
rotating order, for ``--rounds`` rounds, so that a machine whose speed drifts
hits all of them alike. The report gives, per model, preset and
configuration, the median step time over all timed steps, the throughput it
gives, the median first step, the ratio to the PyTorch peer measured in the
same rounds, and the page faults of the process. It is printed and written to
``<out>/throughput_<platform>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import pathlib
import shlex
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.step_cost.report import (
  environment,
  report_head,
  write_results,
)
from benchmarks.throughput import torch_peer, worker

MODELS = ("gpt", "cnn")
PRESETS = ("tiny", "paper")
DEFAULT_STEPS = {"tiny": 30, "paper": 4}
"""Timed steps per process; paper MinGPT steps take seconds each."""
BASELINE = "torch"
DEFAULT_OUT = pathlib.Path(__file__).resolve().parents[1] / "results"


def _library(name: str) -> str | None:
  found = ctypes.util.find_library(name)
  if found is None:
    return None
  for folder in (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib",
  ):
    path = pathlib.Path(folder) / found
    if path.exists():
      return str(path)
  return found


def configurations() -> dict[str, dict[str, Any]]:
  """The configurations this machine can run, by name."""
  off = {"EXADAM_CPU_SETUP": "0"}
  parts = worker.PARTS_ENV_VAR
  configs: dict[str, dict[str, Any]] = {
    "jax": {"framework": "jax", "env": off},
    "jax+malloc": {"framework": "jax", "env": {parts: "malloc"}},
    "jax+xla": {"framework": "jax", "env": {parts: "xla"}},
    "jax+cpu-setup": {"framework": "jax", "env": {parts: "malloc,xla"}},
  }
  for allocator in ("jemalloc", "tcmalloc_minimal"):
    path = _library(allocator)
    if path is not None:
      name = allocator.split("_")[0]
      env = {parts: "xla", "LD_PRELOAD": path}
      if name == "jemalloc":
        # Keep freed pages rather than returning them after 10 s, as the
        # glibc setting does.
        env["MALLOC_CONF"] = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
      configs[f"jax+{name}"] = {"framework": "jax", "env": env}
  if torch_peer.available():
    configs["torch"] = {"framework": "torch", "env": {}}
    configs["torch+malloc"] = {"framework": "torch", "env": {parts: "malloc"}}
  return configs


DEFAULT_CONFIGS = ("jax", "jax+malloc", "jax+xla", "jax+cpu-setup", "torch")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """Parses the command line of ``python -m benchmarks.throughput``."""
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.throughput",
    description="Training throughput: JAX against PyTorch, settings on and off.",
  )
  parser.add_argument(
    "--models", nargs="+", choices=MODELS, default=list(MODELS)
  )
  parser.add_argument(
    "--presets", nargs="+", choices=PRESETS, default=list(PRESETS)
  )
  parser.add_argument(
    "--configs",
    nargs="+",
    help=f"configurations to run (default: those of {DEFAULT_CONFIGS} "
    "this machine has)",
  )
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument(
    "--steps",
    type=int,
    help="timed steps per process (default: 30 tiny, 4 paper)",
  )
  parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
  args = parser.parse_args(argv)
  available = configurations()
  if args.configs is None:
    args.configs = [name for name in DEFAULT_CONFIGS if name in available]
  unknown = sorted(set(args.configs) - set(available))
  if unknown:
    parser.error(
      f"configurations {unknown} are unknown or not available here; choose "
      f"from {sorted(available)}."
    )
  if args.rounds < 1:
    parser.error("--rounds must be at least 1.")
  return args


def measure(
  config: dict[str, Any], model: str, preset: str, steps: int
) -> dict[str, Any]:
  """Runs one worker process; its JSON report.

  Raises:
    RuntimeError: With the worker's output, if it fails.
  """
  env = {**os.environ, **config["env"]}
  command = [
    sys.executable,
    "-m",
    "benchmarks.throughput.worker",
    config["framework"],
    model,
    preset,
    str(steps),
  ]
  done = subprocess.run(command, env=env, capture_output=True, text=True)
  lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
  if done.returncode != 0 or not lines:
    raise RuntimeError(
      f"{shlex.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}"
    )
  return json.loads(lines[-1])


def summarize(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
  """Per configuration: medians, throughput and the ratio to the baseline."""
  result = {}
  baseline = samples.get(BASELINE)
  for name, runs in samples.items():
    steps = np.concatenate([run["step_seconds"] for run in runs])
    median = float(np.median(steps))
    entry = {
      "median_step_seconds": median,
      "examples_per_second": runs[0]["examples_per_step"] / median,
      "median_first_step_seconds": float(
        np.median([run["first_step_seconds"] for run in runs])
      ),
      "median_page_faults": float(
        np.median([run["ru_minflt"] for run in runs])
      ),
      "cpu_setup": runs[0]["cpu_setup"],
      "ld_preload": runs[0]["ld_preload"],
      "samples": len(steps),
    }
    if baseline is not None:
      ratios = [
        np.median(ours["step_seconds"]) / np.median(theirs["step_seconds"])
        for ours, theirs in zip(runs, baseline, strict=True)
      ]
      entry["time_vs_torch_per_round"] = [float(r) for r in ratios]
    result[name] = entry
  return result


def markdown(report: dict[str, Any]) -> str:
  """The report's tables."""
  lines = [
    *report_head(
      "Training throughput",
      report,
      f"torch {report.get('torch_version', 'not installed')}",
    ),
    "One training step as the trainers run it (forward, backward, optimizer; "
    "the CNN's step includes its augmentation), float32, batch of the preset. "
    "Each cell: median over all timed steps of all rounds. `x torch` is the "
    "ratio of step times to the PyTorch peer's, per round (below 1: faster "
    "than PyTorch).",
    "",
  ]
  for key, results in report["results"].items():
    model, preset = key.split("/")
    unit = "images" if model == "cnn" else "tokens"
    lines += [
      f"## {'CIFAR-10 CNN' if model == 'cnn' else 'MinGPT'}, {preset}",
      "",
      f"| configuration | step ms | {unit}/s | first step s | x torch (per round) | page faults |",
      "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in results.items():
      ratios = entry.get("time_vs_torch_per_round")
      lines.append(
        f"| {name} | {entry['median_step_seconds'] * 1e3:,.1f} "
        f"| {entry['examples_per_second']:,.0f} "
        f"| {entry['median_first_step_seconds']:.2f} "
        f"| {'—' if not ratios else ', '.join(f'{r:.2f}' for r in ratios)} "
        f"| {entry['median_page_faults']:,.0f} |"
      )
    lines.append("")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the benchmark, prints and writes the report; returns 0."""
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  available = configurations()
  report: dict[str, Any] = {
    "command": shlex.join(["python", "-m", "benchmarks.throughput", *argv]),
    "environment": environment(),
    "rounds": args.rounds,
    "results": {},
  }
  if torch_peer.available():
    import torch

    report["torch_version"] = torch.__version__
  for model in args.models:
    for preset in args.presets:
      steps = args.steps or DEFAULT_STEPS[preset]
      samples: dict[str, list[dict[str, Any]]] = {c: [] for c in args.configs}
      for round_index in range(args.rounds):
        shift = round_index % len(args.configs)
        for name in [*args.configs[shift:], *args.configs[:shift]]:
          run = measure(available[name], model, preset, steps)
          samples[name].append(run)
          print(
            f"{model}/{preset} round {round_index + 1} {name}: "
            f"{np.median(run['step_seconds']) * 1e3:,.1f} ms/step, first "
            f"{run['first_step_seconds']:.2f} s",
            flush=True,
          )
      report["results"][f"{model}/{preset}"] = summarize(samples)
  text = markdown(report)
  print(text)
  write_results(args.out, "throughput", report, text)
  return 0
