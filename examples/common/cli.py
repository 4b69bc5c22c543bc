"""Command-line options shared by the training scripts.

Options whose default depends on the ``--preset`` default to ``None`` here;
each script fills them from its preset's training defaults.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import jax

from examples.common import optimizers


def positive_int(text: str) -> int:
  """argparse type: an integer >= 1."""
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
  return value


def non_negative_int(text: str) -> int:
  """argparse type: an integer >= 0."""
  value = int(text)
  if value < 0:
    raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
  return value


def positive_float(text: str) -> float:
  """argparse type: a finite float > 0."""
  value = float(text)
  if not (math.isfinite(value) and value > 0.0):
    raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
  return value


def non_negative_float(text: str) -> float:
  """argparse type: a finite float >= 0."""
  value = float(text)
  if not (math.isfinite(value) and value >= 0.0):
    raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
  return value


def add_training_arguments(
  parser: argparse.ArgumentParser, *, presets: tuple[str, ...]
) -> None:
  """Adds the options every training script has.

  Args:
    parser: The parser to extend.
    presets: Names accepted by ``--preset``; the first is the default.
  """
  parser.add_argument(
    "--preset",
    choices=presets,
    default=presets[0],
    help="model size and training defaults (default: %(default)s)",
  )
  parser.add_argument(
    "--optimizer",
    choices=optimizers.OPTIMIZER_NAMES,
    default="exadam",
    help="optimizer, with the PyTorch defaults of the paper (default: %(default)s)",
  )
  parser.add_argument(
    "--lr",
    type=positive_float,
    help="learning rate (default: the preset's; the paper's is 1e-4)",
  )
  parser.add_argument(
    "--weight-decay",
    type=non_negative_float,
    help="weight decay, coupled as in the mirrored PyTorch optimizer "
    "(default: that optimizer's, 1e-2 for adamw, else 0)",
  )
  parser.add_argument(
    "--no-cross-moment-debiasing",
    action="store_true",
    help="EXAdam: use Adam's debiasing instead of the cross-moment terms",
  )
  parser.add_argument(
    "--no-gradient-acceleration",
    action="store_true",
    help="EXAdam: drop the gradient-acceleration term",
  )
  parser.add_argument(
    "--no-dynamic-step-size",
    action="store_true",
    help="EXAdam: keep the step size constant (the authors' latest version)",
  )
  parser.add_argument(
    "--batch-size",
    type=positive_int,
    help="global batch size (default: the preset's)",
  )
  parser.add_argument(
    "--seed",
    type=non_negative_int,
    default=1234,
    help="random seed (default: %(default)s)",
  )
  parser.add_argument(
    "--dtype",
    choices=("float32", "bfloat16"),
    default="float32",
    help="computation dtype; parameters stay float32 (default: %(default)s)",
  )
  parser.add_argument(
    "--data-dir",
    help="data folder (default: $EXADAM_DATA_DIR, then ~/.cache/exadam_optax)",
  )
  parser.add_argument(
    "--no-download",
    action="store_true",
    help="fail instead of downloading a data set that is not found",
  )
  parser.add_argument(
    "--out-dir",
    help="run folder for config.json, metrics.jsonl and checkpoints "
    "(default: runs/<model>-<preset>-<optimizer>-seed<seed>)",
  )
  parser.add_argument(
    "--resume",
    action="store_true",
    help="continue the run in --out-dir from its latest checkpoint",
  )
  parser.add_argument(
    "--keep-checkpoints",
    type=positive_int,
    default=3,
    help="number of most recent checkpoints kept (default: %(default)s)",
  )
  parser.add_argument(
    "--num-devices",
    type=positive_int,
    help="use only the first N devices (default: all)",
  )
  parser.add_argument(
    "--distributed",
    action="store_true",
    help="call jax.distributed.initialize() first (multi-host runs)",
  )
  parser.add_argument(
    "--coordinator-address",
    help="with --distributed: host:port of process 0 (default: detected from "
    "the cluster, or $JAX_COORDINATOR_ADDRESS)",
  )
  parser.add_argument(
    "--num-processes",
    type=positive_int,
    help="with --distributed: number of processes (default: detected)",
  )
  parser.add_argument(
    "--process-id",
    type=non_negative_int,
    help="with --distributed: this process's index (default: detected)",
  )
  parser.add_argument(
    "--no-progress", action="store_true", help="do not draw the progress bar"
  )


def exadam_switches(args: argparse.Namespace) -> optimizers.ExAdamSwitches:
  """EXAdam's components as chosen on the command line."""
  return optimizers.ExAdamSwitches(
    cross_moment_debiasing=not args.no_cross_moment_debiasing,
    gradient_acceleration=not args.no_gradient_acceleration,
    dynamic_step_size=not args.no_dynamic_step_size,
  )


def given(args: argparse.Namespace, names: dict[str, str]) -> dict[str, Any]:
  """Options that were given (not None), renamed to config field names.

  Args:
    args: Parsed arguments.
    names: Map from argparse destination to config field name.

  Returns:
    ``{field: value}`` for every option in ``names`` whose value is not None.
  """
  return {
    field: getattr(args, dest)
    for dest, field in names.items()
    if getattr(args, dest) is not None
  }


def maybe_initialize_distributed(args: argparse.Namespace) -> None:
  """Calls :func:`jax.distributed.initialize` if ``--distributed`` was given.

  It must run before any other JAX call. The coordinator address, process
  count and process index are the ``--coordinator-address``,
  ``--num-processes`` and ``--process-id`` options where given; JAX detects
  the others on Cloud TPU, SLURM, Open MPI and Kubernetes clusters.

  Raises:
    ValueError: If a multi-process option is given without ``--distributed``.
  """
  options = {
    "coordinator_address": args.coordinator_address,
    "num_processes": args.num_processes,
    "process_id": args.process_id,
  }
  if not args.distributed:
    stray = [name for name, value in options.items() if value is not None]
    if stray:
      raise ValueError(
        f"{', '.join('--' + name.replace('_', '-') for name in stray)} only "
        "apply with --distributed."
      )
    return
  jax.distributed.initialize(**options)
