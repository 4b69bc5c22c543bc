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

Results go to ``--out``: ``[sweep_]<experiment>_metrics.jsonl`` (one record
per run and evaluation), ``run_info.json``, ``tables.md`` and ``figures/``.
A reproduction that was stopped (SIGTERM, Ctrl-C, a kill) continues where it
stopped when the same command is run again; finished stages and chunks are
not repeated. This module parses the command line and dispatches;
:mod:`benchmarks.reproduce.orchestration` runs the stages.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import shlex
import signal
import sys
from collections.abc import Sequence

from benchmarks.reproduce import orchestration, report
from benchmarks.reproduce.presets import EXPERIMENTS, PRESETS
from examples.common import compile_cache, cpu_setup, optimizers, stopping

MODES = ("sweep", "ablation", "compare")
DEBUG_ENV_VAR = "EXADAM_DEBUG"


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
    "--sweeps-from",
    nargs="+",
    type=pathlib.Path,
    metavar="FOLDER",
    help="sweep mode: reuse the sweeps of these reproduction folders, which "
    "must have run the same protocol: their arms are not swept again, the "
    "other arms are swept with their sweep seeds, and every arm's rate is "
    "selected from all the sweep records together",
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
    "--debug",
    action="store_true",
    help="show the traceback of an error (also: EXADAM_DEBUG=1)",
  )
  parser.add_argument(
    "--report-only",
    action="store_true",
    help="only rebuild tables.md and figures/ from the files in --out",
  )
  args = parser.parse_args(argv)
  try:
    optimizers.Schedule(
      args.schedule, 1, args.warmup_fraction, args.final_fraction
    )
  except ValueError as error:
    parser.error(str(error))
  if args.auto_seeds and args.time_budget is None:
    parser.error("--auto-seeds needs --time-budget.")
  if args.sweeps_from and args.mode != "sweep":
    parser.error("--sweeps-from applies to --mode sweep only.")
  if args.mode == "ablation" and not args.report_only:
    if (args.lr is None) == (args.tuned_from is None):
      parser.error(
        "--mode ablation needs exactly one of --lr and --tuned-from."
      )
    if args.optimizers:
      parser.error("--optimizers does not apply to --mode ablation.")
  return args


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line; returns the exit status.

  Errors of the inputs or the environment print one line (``--debug`` or
  ``EXADAM_DEBUG=1`` shows the traceback) and return 1; SIGTERM or Ctrl-C
  stops once the chunk in progress is saved (a second one stops at once,
  losing that chunk) and returns 128 + the signal number.
  """
  args = parse_args(argv)
  debug = args.debug or os.environ.get(DEBUG_ENV_VAR, "") not in ("", "0")
  if args.report_only:
    try:
      print(f"wrote {report.write_report(args.out)}", flush=True)
    except (ValueError, OSError) as error:
      if debug:
        raise
      print(f"error: {error}", file=sys.stderr)
      return 1
    return 0
  command = shlex.join(
    [
      "python",
      "-m",
      "benchmarks.reproduce",
      *(sys.argv[1:] if argv is None else argv),
    ]
  )
  cpu_setup.configure()
  # Every run of an experiment compiles the same programs; the cache
  # compiles them once for all runs, seeds and later invocations.
  compile_cache.enable()
  signals = stopping.StopSignals(
    announce=lambda line: print(line, flush=True),
    action="saving the chunk in progress",
  )
  try:
    with signals:
      tables = orchestration.Reproduction(args, command, signals).run()
  except (orchestration.Stopped, KeyboardInterrupt):
    signum = signals.signal or signal.SIGINT
    print(
      f"{signal.Signals(signum).name}: stopped; every finished chunk is saved "
      f"in {args.out}; run the same command again to continue.",
      file=sys.stderr,
    )
    return 128 + signum
  except (ValueError, OSError, FloatingPointError, RuntimeError) as error:
    if debug:
      raise
    print(f"error: {error}", file=sys.stderr)
    return 1
  print(f"wrote {tables}", flush=True)
  return 0
