"""The arrays of a training run, and where the step's randomness comes from.

A jitted step takes and returns a :class:`TrainState`, merging the NNX model
only inside the trace, so no Python walks the graph per step. Random draws
derive from the run key, stream and step, so resuming is exact.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from examples.common import sharding as sharding_lib


class TrainState(NamedTuple):
  """Everything a training step reads and writes, as arrays.

  Attributes:
    step: ``int32`` scalar, number of optimizer updates done.
    model_state: The model's non-``Param`` variables (batch-norm averages).
    key: ``uint32`` data of the run's PRNG key (:func:`jax.random.key_data`).
  """

  step: jax.Array
  params: nnx.State
  model_state: nnx.State
  opt_state: optax.OptState
  key: jax.Array


def init_train_state(
  build_model: Callable[[nnx.Rngs], nnx.Module],
  optimizer: optax.GradientTransformation,
  seed: int,
  mesh: Mesh,
  *,
  fsdp: bool = False,
) -> tuple[nnx.GraphDef, TrainState]:
  """Builds ``(graphdef, state)`` on ``mesh`` by one jitted call.

  The seed's key splits into the parameters' key and the run key. E.g.
  ``build_model=lambda rngs: MinGPT(config, vocab_size, rngs=rngs)``; ``fsdp``
  shards parameters and optimizer moments (see ``sharding.param_shardings``).
  """
  graphdef, init = _compiled_init(build_model, optimizer, mesh, fsdp)
  return graphdef, init(jax.random.key(seed))


@functools.lru_cache(maxsize=32)
def _compiled_init(build_model, optimizer, mesh, fsdp):
  """Graph and jitted init, cached: runs differing in seed or rate share it."""

  def init(key):
    params_key, run_key = jax.random.split(key)
    model = build_model(nnx.Rngs(params=params_key))
    _, params, model_state = nnx.split(model, nnx.Param, ...)
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      model_state=model_state,
      opt_state=optimizer.init(params),
      key=jax.random.key_data(run_key),
    )

  shapes = jax.eval_shape(init, jax.random.key(0))
  replicated = NamedSharding(mesh, PartitionSpec())
  params = sharding_lib.param_shardings(shapes.params, mesh, fsdp=fsdp)
  shardings = TrainState(
    step=replicated,
    params=params,
    model_state=jax.tree.map(lambda _: replicated, shapes.model_state),
    opt_state=optax.tree_map_params(
      optimizer,
      lambda _, sharding: sharding,
      shapes.opt_state,
      params,
      transform_non_params=lambda _: replicated,
    ),
    key=replicated,
  )
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: build_model(nnx.Rngs(0))))
  return graphdef, jax.jit(init, out_shardings=shardings)


def step_key(state: TrainState, stream: int) -> jax.Array:
  """``fold_in(fold_in(run_key, stream), step)``: a stream's key at the step."""
  key = jax.random.wrap_key_data(state.key)
  return jax.random.fold_in(jax.random.fold_in(key, stream), state.step)


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [
    jnp.all(jnp.isfinite(leaf))
    for leaf in jax.tree.leaves(tree)
    if jnp.issubdtype(leaf.dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def all_finite(tree) -> bool:
  """Whether every floating-point array of ``tree`` is free of NaN and inf."""
  return bool(_all_finite(tree))
