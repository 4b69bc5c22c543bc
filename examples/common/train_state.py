"""The arrays of a training run, and where the step's randomness comes from.

A Flax NNX model is split once into its static graph definition and its
arrays. A jitted training step takes and returns a :class:`TrainState` and
rebuilds the model with :func:`flax.nnx.merge` only inside the trace, so no
Python code walks the NNX graph per step.

Randomness is not carried in the state: every random draw of step ``t`` (the
batch, the augmentation, the dropout masks) derives from
``fold_in(fold_in(run key, stream), t)``. Training therefore depends only on
the state and the step, which makes resuming from a checkpoint exact.
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
    params: The model's :class:`flax.nnx.Param` variables.
    model_state: The model's other variables (batch-norm running averages).
    opt_state: The optimizer state.
    key: ``uint32`` raw data of the run's PRNG key (see
      :func:`jax.random.key_data`), from which every step's randomness is
      derived.
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
  """Builds the model and optimizer state on ``mesh``.

  The seed's key is split in two: parameter initialisation and the run key
  kept in the state. The state is created by one jitted call whose outputs
  are placed directly: replicated, or with ``fsdp`` the parameters and their
  optimizer moments sharded over the data axis (see
  :func:`examples.common.sharding.param_shardings`).

  Args:
    build_model: Builds the model from random streams, e.g.
      ``lambda rngs: MinGPT(config, vocab_size, rngs=rngs)``.
    optimizer: The optimizer, initialised on the parameters.
    seed: The run's seed.
    mesh: The data mesh.
    fsdp: Shard parameters and optimizer state instead of replicating them.

  Returns:
    ``(graphdef, state)`` with ``state.step == 0``.
  """

  graphdef, init = _compiled_init(build_model, optimizer, mesh, fsdp)
  return graphdef, init(jax.random.key(seed))


@functools.lru_cache(maxsize=32)
def _compiled_init(
  build_model: Callable[[nnx.Rngs], nnx.Module],
  optimizer: optax.GradientTransformation,
  mesh: Mesh,
  fsdp: bool,
) -> tuple[nnx.GraphDef, Callable[[jax.Array], TrainState]]:
  """The model's graph and its jitted initialisation from a key.

  Cached, so that the runs of a benchmark that share the model and the
  optimizer (seeds, learning rates) trace and compile it once.
  """

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
  """The PRNG key of one random stream at the state's step.

  Args:
    state: The training state.
    stream: A small integer naming the stream (e.g. training vs evaluation).

  Returns:
    ``fold_in(fold_in(run_key, stream), step)``: the same for the same run
    key, stream and step, wherever and however often it is computed.
  """
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
