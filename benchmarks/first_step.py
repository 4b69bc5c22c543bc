"""What the persistent compilation cache saves: each trainer run twice.

Usage, from the repository root::

  python -m benchmarks.first_step --data-dir DIR
  python -m benchmarks.first_step --trainers mingpt --runs 3

Each trainer runs ``--runs`` times in a row as a user runs it (a fresh
process, ``--preset tiny`` unless other ``--trainer-args`` are given, a new
run folder each time), all runs sharing one compilation cache folder that
starts empty. The first run compiles every program and fills the cache; the
later ones load them. The report gives, per run, the first training step's
time as the trainer records it (``first_step_seconds``: compilation or
cache loading included) and the wall time of the whole process. It is
printed and written to ``<out>/first_step_<platform>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.step_cost.report import (
  environment,
  report_head,
  write_results,
)

TRAINERS = {
  "mingpt": "examples.mingpt.train",
  "cifar10": "examples.cifar10.train",
}
DEFAULT_OUT = pathlib.Path("benchmarks/results")
ROOT = pathlib.Path(__file__).resolve().parents[1]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """Parses the command line of ``python -m benchmarks.first_step``."""
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.first_step",
    description="First step and wall time of runs with a cold, then warm, "
    "compilation cache.",
  )
  parser.add_argument(
    "--trainers", nargs="+", choices=TRAINERS, default=list(TRAINERS)
  )
  parser.add_argument("--runs", type=int, default=2)
  parser.add_argument(
    "--data-dir", help="CIFAR-10 data folder, passed to the CNN trainer"
  )
  parser.add_argument(
    "--trainer-args",
    default="--preset tiny",
    help="options of every trainer run (default: %(default)s)",
  )
  parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
  args = parser.parse_args(argv)
  if args.runs < 2:
    parser.error("--runs must be at least 2: one cold run, then warm ones.")
  return args


def run_trainer(
  trainer: str, options: list[str], cache: pathlib.Path, out_dir: pathlib.Path
) -> dict[str, Any]:
  """Runs one trainer process; its first step and wall time.

  Raises:
    RuntimeError: With the trainer's output, if it fails, or if it trained
      no step.
  """
  command = [
    sys.executable,
    "-m",
    TRAINERS[trainer],
    *options,
    f"--compilation-cache={cache}",
    f"--out-dir={out_dir}",
    "--no-progress",
  ]
  start = time.perf_counter()
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  wall = time.perf_counter() - start
  if done.returncode != 0:
    raise RuntimeError(
      f"{shlex.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}"
    )
  records = [
    json.loads(line)
    for line in (out_dir / "metrics.jsonl").read_text().splitlines()
  ]
  first_step = next(
    (r["first_step_seconds"] for r in records if "first_step_seconds" in r),
    None,
  )
  if first_step is None:
    raise RuntimeError(
      f"{shlex.join(command)} trained no step: {out_dir / 'metrics.jsonl'}"
      " has no record with first_step_seconds."
    )
  return {"first_step_seconds": first_step, "wall_seconds": wall}


def markdown(report: dict[str, Any]) -> str:
  """The report's table."""
  lines = [
    *report_head("First step with a cold and a warm compilation cache", report),
    f"Each trainer run {report['runs']} times in a row with "
    f"`{report['trainer_args']}`, sharing a compilation cache folder that "
    "starts empty: run 1 compiles, the later runs load the programs. First "
    "step: the trainer's `first_step_seconds` (from the start of training "
    "to the end of the first step, MinGPT's step-0 evaluation and the "
    "compilation or loading included); wall: the whole process.",
    "",
    "| trainer | run | cache | first step s | wall s |",
    "| --- | --- | --- | --- | --- |",
  ]
  for trainer, runs in report["results"].items():
    for index, run in enumerate(runs, start=1):
      lines.append(
        f"| {trainer} | {index} | {'cold' if index == 1 else 'warm'} "
        f"| {run['first_step_seconds']:.2f} | {run['wall_seconds']:.1f} |"
      )
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the benchmark, prints and writes the report.

  Returns:
    0, or 1 after one message on stderr if a trainer run fails.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  report: dict[str, Any] = {
    "command": shlex.join(["python", "-m", "benchmarks.first_step", *argv]),
    "environment": environment(),
    "runs": args.runs,
    "trainer_args": args.trainer_args,
    "results": {},
  }
  with tempfile.TemporaryDirectory() as scratch:
    for trainer in args.trainers:
      options = shlex.split(args.trainer_args)
      if trainer == "cifar10" and args.data_dir:
        options.append(f"--data-dir={args.data_dir}")
      cache = pathlib.Path(scratch, trainer, "cache")
      runs = []
      for index in range(1, args.runs + 1):
        out_dir = pathlib.Path(scratch, trainer, f"run{index}")
        try:
          runs.append(run_trainer(trainer, options, cache, out_dir))
        except RuntimeError as error:
          print(f"benchmarks.first_step: {error}", file=sys.stderr)
          return 1
        print(f"{trainer} run {index}: {runs[-1]}", flush=True)
      report["results"][trainer] = runs
  text = markdown(report)
  print(text)
  write_results(args.out, "first_step", report, text)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
