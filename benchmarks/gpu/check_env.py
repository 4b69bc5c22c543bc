"""Checks, before the GPU run spends time, that this machine can run the code.

Prints the versions of Python and of every library the benchmarks use, and
the devices; then exercises the APIs the code relies on in seconds: every
optimizer of the registry (init, one update, setting its injected learning
rate in a vmapped state), and one forward pass of tiny versions of both
models. Exits with status 1 and a message naming what is missing or broken.

Usage: ``python -m benchmarks.gpu.check_env [--require-gpu]``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys
import traceback
from collections.abc import Sequence

MIN_PYTHON = (3, 10)
PACKAGES = (
  "jax",
  "jaxlib",
  "flax",
  "optax",
  "chex",
  "orbax-checkpoint",
  "numpy",
  "matplotlib",
  "tqdm",
  "pillow",
)


def versions() -> dict[str, str]:
  """Installed version of each package the benchmarks use ('missing' if not)."""
  found = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      found[name] = "missing"
  return found


def exercise_apis() -> None:
  """Runs the library calls the benchmarks depend on, on tiny inputs.

  Raises:
    Exception: Whatever the first broken call raises.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from benchmarks.reproduce import runs
  from examples.cifar10 import model as cnn_model
  from examples.common import optimizers
  from examples.mingpt import model as gpt_model

  params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
  grads = jax.tree.map(lambda leaf: 0.1 * jnp.ones_like(leaf), params)
  for name in optimizers.OPTIMIZER_NAMES:
    optimizer = optimizers.make_optimizer(name, 1e-3)
    states = [optimizer.init(params) for _ in range(2)]
    batched = runs.stack_runs(states)
    batched = optimizers.set_learning_rate(batched, np.array([1e-3, 2e-3]))
    updates, _ = jax.jit(jax.vmap(optimizer.update, in_axes=(None, 0, None)))(
      grads, batched, params
    )
    if not all(
      bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates)
    ):
      raise FloatingPointError(f"{name}: a first update is not finite.")

  # Jitted, as the benchmarks run them: one compilation each, where eager
  # calls would compile every operation on its own.
  @jax.jit
  def forward_passes(images, tokens):
    dropout = nnx.Rngs(dropout=jax.random.key(1))
    cnn = cnn_model.CNN(cnn_model.CNN_PRESETS["tiny"], rngs=nnx.Rngs(0))
    gpt = gpt_model.MinGPT(gpt_model.GPT_PRESETS["tiny"], 65, rngs=nnx.Rngs(0))
    return (
      cnn(images, train=True, rngs=dropout),
      gpt(tokens, train=True, rngs=dropout),
    )

  logits = forward_passes(jnp.zeros((2, 32, 32, 3)), jnp.zeros((2, 8), int))
  assert [x.shape for x in logits] == [(2, 10), (2, 8, 65)]


def main(argv: Sequence[str] | None = None) -> int:
  """Prints versions and devices and checks the APIs; returns the exit status."""
  parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu.check_env")
  parser.add_argument(
    "--require-gpu", action="store_true", help="fail unless a GPU is present"
  )
  args = parser.parse_args(argv)
  found = versions()
  print("versions: " + ", ".join(f"{k} {v}" for k, v in found.items()))
  problems = [name for name, version in found.items() if version == "missing"]
  if sys.version_info < MIN_PYTHON:
    problems.append(f"python >= {'.'.join(map(str, MIN_PYTHON))}")
  if problems:
    print(f"error: missing or too old: {', '.join(problems)}", file=sys.stderr)
    return 1
  import jax

  devices = jax.devices()
  print(f"devices: {[f'{d.platform}:{d.device_kind}' for d in devices]}")
  if args.require_gpu and devices[0].platform != "gpu":
    print(
      f"error: --require-gpu, but JAX's first device is {devices[0].platform};"
      " install a CUDA build of jaxlib or drop --require-gpu.",
      file=sys.stderr,
    )
    return 1
  try:
    exercise_apis()
  except Exception:  # Any breakage: report it, then stop the run.
    traceback.print_exc()
    print(
      "error: the installed jax/flax/optax do not run this code (see the "
      "traceback above); install versions matching pyproject.toml.",
      file=sys.stderr,
    )
    return 1
  print("environment check passed")
  return 0


if __name__ == "__main__":
  sys.exit(main())
