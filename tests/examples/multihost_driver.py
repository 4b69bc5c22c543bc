"""One process of a multi-process test run: train, then report on the state.

Usage (what :mod:`tests.examples.test_multihost` starts, once per process)::

  python -m tests.examples.multihost_driver SUMMARY.json TRAINER ARGS...

``TRAINER`` is ``mingpt`` or ``cifar10`` and ``ARGS`` its command line
(``--distributed --coordinator-address ... --process-id ...`` included). The
process trains as the command line would, then writes ``SUMMARY.json``
(``SUMMARY.<process>.json``): the records it holds, whether every moment of
EXAdam's state has its parameter's sharding, the bytes of parameters and
optimizer state per device, and a digest of the final state's values.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys

import jax
import numpy as np
import optax
from jax.experimental import multihost_utils

from examples.common import cli, cpu_setup, distributed, sharding


def main(argv: list[str]) -> None:
  summary_path, trainer, *args = argv
  if trainer == "mingpt":
    from examples.mingpt import configs
    from examples.mingpt import train as train_lib
  else:
    from examples.cifar10 import configs
    from examples.cifar10 import train as train_lib
  config = cli.parse(configs.PRESETS, args, prog=trainer, description="")
  cpu_setup.configure()
  distributed.initialize(config)
  result = train_lib.train(config)
  distributed.finish()
  params = jax.tree.leaves(result.state.params)
  moments = {
    name: jax.tree.leaves(optax.tree.get(result.state.opt_state, name))
    for name in ("mu", "nu")
  }
  summary = {
    "process": jax.process_index(),
    "process_count": jax.process_count(),
    "device_count": jax.device_count(),
    "records": result.history,
    "moments_follow_params": all(
      moment.sharding == param.sharding
      for leaves in moments.values()
      for moment, param in zip(leaves, params, strict=True)
    ),
    "params_sharded": any(not p.sharding.is_fully_replicated for p in params),
    "state_bytes_per_device": sharding.bytes_per_device(
      (result.state.params, result.state.opt_state)
    ),
    "state_digest": _digest((result.state.params, result.state.opt_state)),
  }
  path = pathlib.Path(summary_path)
  path.with_suffix(f".{jax.process_index()}.json").write_text(
    json.dumps(summary), encoding="utf-8"
  )


def _digest(tree) -> str:
  """SHA-256 of the global values of every array of ``tree``."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    values = multihost_utils.process_allgather(leaf, tiled=True)
    digest.update(np.ascontiguousarray(values).tobytes())
  return digest.hexdigest()


if __name__ == "__main__":
  main(sys.argv[1:])
