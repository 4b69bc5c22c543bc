"""One timed process of the throughput benchmark.

Usage: ``python -m benchmarks.throughput.worker FRAMEWORK MODEL PRESET STEPS``
with ``FRAMEWORK`` ``jax`` or ``torch``. The process builds the training step
of ``MODEL`` (``cnn`` or ``gpt``) at ``PRESET`` (``tiny`` or ``paper``) exactly
as the trainer does (or its PyTorch peer; the CNN at the paper's batch 128
with augmentation at both sizes), times its first call and then
``STEPS`` calls one by one, and prints one JSON line:
``{"first_step_seconds": ..., "step_seconds": [...], "examples_per_step": ...,
"cpu_setup": [...], "ru_minflt": ...}``.

The controller (:mod:`benchmarks.throughput.cli`) sets the process's
allocator and XLA settings through its environment: ``EXADAM_CPU_SETUP=0``
turns :mod:`examples.common.cpu_setup` off, ``EXADAM_CPU_SETUP_PARTS`` picks
``malloc`` and/or ``xla``, and ``LD_PRELOAD`` a preloaded allocator.

JAX's persistent compilation cache is off, whatever the environment says:
the first step's time is the compilation's, as a first run sees it.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

from examples.common import compile_cache, cpu_setup

PARTS_ENV_VAR = "EXADAM_CPU_SETUP_PARTS"


def _configure(framework: str) -> list[str]:
  default = "malloc,xla" if framework == "jax" else ""
  parts = os.environ.get(PARTS_ENV_VAR, default).split(",")
  return cpu_setup.configure(
    malloc="malloc" in parts, xla=framework == "jax" and "xla" in parts
  )


def _jax_step(model: str, preset: str):
  """The trainer's jitted step and its arguments, on one device."""
  import dataclasses
  import functools

  import jax
  import numpy as np

  from examples.common import optimizers, sharding, train_state

  mesh = sharding.make_data_mesh(1)
  if model == "cnn":
    from examples.cifar10 import configs, train
    from examples.cifar10.model import CNN

    # At both sizes the peer's protocol: the paper's batch and augmentation,
    # which the trainer's tiny preset drops to finish in a minute.
    paper = configs.PRESETS["paper"]
    config = dataclasses.replace(
      configs.PRESETS[preset],
      batch_size=paper.batch_size,
      augment=paper.augment,
    )
    build = lambda rngs: CNN(config.model, rngs=rngs)  # noqa: E731
    step_options = {"augment": config.augment}
    rng = np.random.default_rng(0)
    images = rng.integers(
      0, 256, (config.batch_size, 32, 32, 3), dtype=np.uint8
    )
    labels = rng.integers(0, 10, config.batch_size).astype(np.int32)
    args = sharding.replicate(mesh, (images, labels))
    per_step = config.batch_size
  else:
    from examples.mingpt import configs, data, train
    from examples.mingpt.model import MinGPT

    config = configs.PRESETS[preset]
    corpus = data.load_text()
    build = lambda rngs: MinGPT(config.model, corpus.vocab_size, rngs=rngs)  # noqa: E731
    step_options = {
      "batch_size": config.batch_size,
      "block_size": config.model.block_size,
    }
    args = (sharding.replicate(mesh, corpus.train),)
    per_step = config.batch_size * config.model.block_size
  optimizer = optimizers.make_optimizer(config.optimizer, config.lr)
  graphdef, state = train_state.init_train_state(build, optimizer, 0, mesh)
  step = jax.jit(
    functools.partial(
      train.train_step,
      graphdef=graphdef,
      update=optimizer.update,
      **step_options,
    ),
    donate_argnums=0,
  )
  holder = {"state": state}

  def run() -> None:
    holder["state"], metrics = step(holder["state"], *args)
    jax.block_until_ready(metrics)

  return run, per_step


def _torch_step(model: str, preset: str):
  from benchmarks.throughput import torch_peer

  # As many threads as the CPUs this process may run on, as XLA sizes its
  # pool: under taskset both frameworks get the same cores, and PyTorch does
  # not run more threads than cores (os.cpu_count() ignores the affinity).
  run = torch_peer.make_step(
    model, preset, threads=len(os.sched_getaffinity(0)) or 1
  )
  return run, torch_peer.examples_per_step(model, preset)


def main(argv: list[str]) -> None:
  framework, model, preset, steps = argv
  applied = _configure(framework)
  if framework == "jax":
    compile_cache.enable(compile_cache.OFF)
  build = _jax_step if framework == "jax" else _torch_step
  run, per_step = build(model, preset)
  start = time.perf_counter()
  run()
  first = time.perf_counter() - start
  times = []
  for _ in range(int(steps)):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  print(
    json.dumps(
      {
        "first_step_seconds": first,
        "step_seconds": times,
        "examples_per_step": per_step,
        "cpu_setup": applied,
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
        "ru_minflt": resource.getrusage(resource.RUSAGE_SELF).ru_minflt,
      }
    ),
    flush=True,
  )


if __name__ == "__main__":
  main(sys.argv[1:])
