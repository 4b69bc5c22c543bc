"""Cost of one EXAdam step against optax's Adam and AdamW.

Times one jitted training step (the optimizer's ``update`` and
:func:`optax.apply_updates`, parameter and state buffers donated) of
:func:`exadam_optax.exadam`, :func:`optax.adam` and :func:`optax.adamw` on the
same parameter trees: flat vectors from 1e4 to 1e8 parameters (1e9 too on an
accelerator) and the parameters of the two example models. The optimizers
are timed in interleaved rounds; the report gives, per tree and optimizer,
the median time per step and its interquartile range, the ratio to Adam
measured in the same run, and the bandwidth achieved against the least
traffic of the update (7 arrays, 28 bytes per float32 parameter). With
``--hlo`` it also summarises the compiled HLO of each optimizer's step
(fusions, passes over the data, divisions and roots per element).

Usage, from the repository root::

  python -m benchmarks.step_cost                      # the default CPU run
  python -m benchmarks.step_cost --sizes 1e8 1e9 --models --hlo --out results-big

The table is printed as the trees are measured; the JSON and markdown report
go to ``<out>/step_cost_<platform>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import optax

import exadam_optax
from benchmarks.step_cost import hlo, trees
from benchmarks.step_cost import report as report_lib
from benchmarks.step_cost.timing import TimingPlan, time_interleaved

LEARNING_RATE = 1e-3
"""Learning rate of every optimizer (it does not change the cost)."""

OPTIMIZERS: dict[str, Callable[[], optax.GradientTransformation]] = {
  "adam": functools.partial(optax.adam, LEARNING_RATE),
  "adamw": functools.partial(optax.adamw, LEARNING_RATE),
  "exadam": functools.partial(exadam_optax.exadam, LEARNING_RATE),
}
"""The compared optimizers, each with its library defaults otherwise."""

CPU_SIZES = (10**4, 10**5, 10**6, 10**7, 10**8)
"""Default flat sizes on the CPU."""
ACCELERATOR_SIZES = (*CPU_SIZES, 10**9)
"""Default flat sizes on a GPU or TPU."""

PARAM_SCALE = 0.02
"""Standard deviation of the benchmark parameters."""
GRAD_SCALE = 1e-3
"""Standard deviation of the benchmark gradients."""

DEFAULT_OUT = pathlib.Path(__file__).resolve().parents[1] / "results"

_DTYPES = ("float32", "bfloat16")


def parse_size(text: str) -> int:
  """Parses a parameter count such as ``1e6`` or ``3000000``.

  Raises:
    argparse.ArgumentTypeError: if ``text`` is not a positive integer.
  """
  try:
    value = float(text)
  except ValueError:
    value = float("nan")
  if not (1 <= value < float("inf") and value == int(value)):
    raise argparse.ArgumentTypeError(
      f"{text!r} is not a positive whole number of parameters; write e.g. "
      "1e6 or 1000000."
    )
  return int(value)


def _positive_float(text: str) -> float:
  value = float(text)
  if not value > 0:
    raise argparse.ArgumentTypeError(f"must be positive, got {text!r}.")
  return value


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.step_cost",
    description=__doc__.split("\n\n")[0],
  )
  parser.add_argument(
    "--sizes",
    nargs="*",
    type=parse_size,
    default=None,
    help="flat tree sizes (default: 1e4 ... 1e8 on the CPU, up to 1e9 on "
    "an accelerator); give none to skip the flat trees",
  )
  parser.add_argument(
    "--models",
    nargs="*",
    choices=trees.MODELS,
    default=list(trees.MODELS),
    help="example models whose parameter trees to measure (default: all)",
  )
  parser.add_argument(
    "--model-preset",
    default="paper",
    help="preset of the models, e.g. paper or tiny (default: paper)",
  )
  parser.add_argument(
    "--optimizers",
    nargs="+",
    choices=list(OPTIMIZERS),
    default=list(OPTIMIZERS),
    help="optimizers to compare; must include adam, the baseline",
  )
  parser.add_argument("--dtype", choices=_DTYPES, default="float32")
  parser.add_argument(
    "--seconds",
    type=_positive_float,
    default=30.0,
    help="measuring time per tree, all optimizers together (default: 30)",
  )
  parser.add_argument("--min-rounds", type=int, default=15)
  parser.add_argument("--max-rounds", type=int, default=2000)
  parser.add_argument(
    "--min-sample-ms",
    type=float,
    default=2.0,
    help="quicker steps are repeated back to back within one sample",
  )
  parser.add_argument("--warmup-steps", type=int, default=5)
  parser.add_argument(
    "--hlo",
    action="store_true",
    help="also count fusions, passes and costly ops in the compiled HLO",
  )
  parser.add_argument("--hlo-size", type=parse_size, default=10**6)
  parser.add_argument(
    "--hlo-dump",
    type=pathlib.Path,
    default=None,
    help="folder to write each optimizer's compiled HLO text into",
  )
  parser.add_argument(
    "--peak-gbps",
    type=_positive_float,
    default=None,
    help="the device's memory bandwidth in GB/s (default: known nominal "
    "figure for the device kind, if any)",
  )
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--out",
    type=pathlib.Path,
    default=DEFAULT_OUT,
    help="folder for step_cost_<platform>.json and .md "
    "(default: benchmarks/results)",
  )
  return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """Parses and checks the command line.

  Raises:
    SystemExit: with a message on standard error, for bad arguments.
  """
  parser = _parser()
  args = parser.parse_args(argv)
  if report_lib.BASELINE not in args.optimizers:
    parser.error(
      f"--optimizers must include {report_lib.BASELINE!r}, the "
      f"baseline of the ratios; got {args.optimizers}."
    )
  args.optimizers = list(dict.fromkeys(args.optimizers))
  try:
    args.plan = TimingPlan(
      seconds=args.seconds,
      min_rounds=args.min_rounds,
      max_rounds=args.max_rounds,
      min_sample_s=args.min_sample_ms / 1e3,
      warmup_steps=args.warmup_steps,
    )
  except ValueError as error:
    parser.error(str(error))
  return args


def benchmark_trees(args: argparse.Namespace) -> list[Any]:
  """The trees to measure, flat ones first.

  Raises:
    ValueError: if a model preset is unknown.
  """
  platform = jax.devices()[0].platform
  sizes = args.sizes
  if sizes is None:
    sizes = CPU_SIZES if platform == "cpu" else ACCELERATOR_SIZES
  result = [trees.flat_tree(size, args.dtype) for size in sizes]
  result += [
    trees.model_tree(model, args.model_preset, args.dtype)
    for model in args.models
  ]
  return result


def check_memory(trees: Sequence[Any], num_optimizers: int) -> None:
  """Fails early if a tree cannot fit in the device's free memory.

  A tree needs its gradients, a transient copy while arrays are drawn, and
  parameters plus two moments for each optimizer.

  Raises:
    ValueError: naming the tree, its need and the free memory.
  """
  available = _available_bytes(jax.devices()[0])
  if available is None:
    return
  for tree in trees:
    needed = tree.param_bytes * (2 + 3 * num_optimizers)
    if needed > available:
      raise ValueError(
        f"{tree.name} needs about {needed / 1e9:.1f} GB (gradients and, for "
        f"each of {num_optimizers} optimizers, parameters and two moments) "
        f"but only {available / 1e9:.1f} GB are free; drop it from --sizes "
        "or compare fewer --optimizers."
      )


def _available_bytes(device: jax.Device) -> int | None:
  stats = device.memory_stats()
  if stats and "bytes_limit" in stats:
    return stats["bytes_limit"] - stats.get("bytes_in_use", 0)
  if device.platform == "cpu":
    try:
      return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
      return None
  return None


def measure_tree(
  tree: Any,
  optimizers: dict[str, optax.GradientTransformation],
  plan: TimingPlan,
  seed: int,
  peak_gbps: float | None,
) -> dict[str, Any]:
  """Times every optimizer on one tree; returns the tree's statistics."""
  grads = trees.materialize(tree.shapes, seed + 1, GRAD_SCALE)
  timings = time_interleaved(
    optimizers,
    lambda: trees.materialize(tree.shapes, seed, PARAM_SCALE),
    grads,
    plan,
  )
  del grads
  gc.collect()
  return report_lib.tree_result(tree, timings, peak_gbps)


def hlo_summaries(
  optimizers: dict[str, optax.GradientTransformation],
  num_elements: int,
  dtype: str,
  dump_dir: pathlib.Path | None,
) -> dict[str, hlo.HloSummary]:
  """Summarises (and optionally writes) each optimizer's compiled step."""
  summaries = {}
  for name, optimizer in optimizers.items():
    text = hlo.compiled_step_text(optimizer, num_elements, dtype)
    if dump_dir is not None:
      dump_dir.mkdir(parents=True, exist_ok=True)
      (dump_dir / f"step_cost_{name}_{num_elements}.hlo.txt").write_text(text)
    summaries[name] = hlo.summarize_hlo(text, num_elements)
  return summaries


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the benchmark, prints the tables and writes the report.

  Args:
    argv: command-line arguments (default: ``sys.argv[1:]``).

  Returns:
    The report that was written (``command``, ``environment``, ``settings``,
    ``results`` and, with ``--hlo``, ``hlo``).

  Raises:
    SystemExit: for bad arguments.
    ValueError: if a tree does not fit in memory or a preset is unknown.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  env = report_lib.environment()
  peak_gbps = args.peak_gbps or report_lib.nominal_peak_gbps(env["device_kind"])
  trees = benchmark_trees(args)
  optimizers = {name: OPTIMIZERS[name]() for name in args.optimizers}
  check_memory(trees, len(optimizers))
  print(
    f"Device: {env['device_kind']} ({env['platform']}), "
    f"{env['cpu_count']} CPUs, jax {env['jax']}, optax {env['optax']}; "
    f"peak bandwidth: {'unknown' if peak_gbps is None else peak_gbps} GB/s",
    flush=True,
  )
  report: dict[str, Any] = {
    "command": report_lib.command_line(argv),
    "environment": env,
    "settings": {
      "trees": [tree.name for tree in trees],
      "optimizers": args.optimizers,
      "learning_rate": LEARNING_RATE,
      "dtype": args.dtype,
      "seconds_per_tree": args.plan.seconds,
      "min_rounds": args.plan.min_rounds,
      "max_rounds": args.plan.max_rounds,
      "min_sample_s": args.plan.min_sample_s,
      "warmup_steps": args.plan.warmup_steps,
      "peak_gbps": peak_gbps,
      "seed": args.seed,
      "hlo_size": args.hlo_size if args.hlo else None,
    },
    "results": [],
  }
  for tree in trees:
    result = measure_tree(tree, optimizers, args.plan, args.seed, peak_gbps)
    report_lib.print_tree_result(result)
    report["results"].append(result)
  if args.hlo:
    summaries = hlo_summaries(
      optimizers, args.hlo_size, args.dtype, args.hlo_dump
    )
    report["hlo"] = report_lib.hlo_result(summaries)
    report_lib.print_hlo(report["hlo"], args.hlo_size)
  report["environment"]["load_average_end"] = report_lib.host_load()
  report_lib.write_report(report, args.out)
  return report


if __name__ == "__main__":
  main()
