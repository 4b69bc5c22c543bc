"""Per-device memory of parameters and optimizer state, replicated or sharded.

Usage, from the repository root (the devices are simulated on the CPU)::

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
      python -m benchmarks.memory --preset paper

Builds each example model's training state as the trainers do, with data
parallelism (everything replicated) and with ``--fsdp`` (parameters and
EXAdam's two moments sharded over the devices), and reports the bytes one
device holds, from the arrays' shardings.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import jax

from examples.cifar10 import configs as cnn_configs
from examples.cifar10.model import CNN
from examples.common import optimizers, sharding, train_state
from examples.mingpt import configs as gpt_configs
from examples.mingpt.model import MinGPT

VOCAB_SIZE = 65
"""Tiny Shakespeare's characters: MinGPT's vocabulary."""


def main(argv: Sequence[str] | None = None) -> int:
  """Prints one table row per model and layout; returns 0."""
  parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
  parser.add_argument("--preset", choices=("paper", "tiny"), default="paper")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  mesh = sharding.make_data_mesh()
  print(
    f"| model | layout | parameters | MiB per device ({mesh.size} devices) |"
  )
  print("| --- | --- | --- | --- |")
  builds = {
    "CIFAR-10 CNN": (
      cnn_configs.PRESETS[args.preset],
      lambda c: lambda rngs: CNN(c.model, rngs=rngs),
    ),
    "MinGPT": (
      gpt_configs.PRESETS[args.preset],
      lambda c: lambda rngs: MinGPT(c.model, VOCAB_SIZE, rngs=rngs),
    ),
  }
  for name, (config, build) in builds.items():
    optimizer = optimizers.make_optimizer("exadam", config.lr)
    for fsdp in (False, True):
      _, state = train_state.init_train_state(
        build(config), optimizer, 0, mesh, fsdp=fsdp
      )
      size = sum(leaf.size for leaf in jax.tree.leaves(state.params))
      params = sharding.bytes_per_device(state.params)
      total = sharding.bytes_per_device((state.params, state.opt_state))
      print(
        f"| {name} | {'FSDP' if fsdp else 'replicated'} | {size:,} "
        f"| {params / 2**20:.1f} parameters, {total / 2**20:.1f} with "
        "EXAdam's state |"
      )
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
