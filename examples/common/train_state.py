"""A Flax NNX model as pure pytrees, for jitted functional training steps.

A model, described by a hashable :class:`ModelSpec`, is split into

* static parts (:class:`ModelDefinition`): the graph definitions of the model
  in training mode (dropout on, batch norm on batch statistics) and in
  evaluation mode, and a template of its random-stream state;
* arrays (:class:`TrainState`): parameters, other model state (e.g. batch-norm
  running averages), optimizer state, step count and the run's RNG key.

A jitted step takes and returns a :class:`TrainState` and rebuilds the model
only inside the trace with :func:`merge_for_training` or
:func:`merge_for_eval`, so no Python code walks the NNX graph per step. The
definition is computed once per spec and mesh and shared by all runs in the
process, so that step functions compiled for it can be reused too.

Dropout randomness is not carried in the state: :func:`merge_for_training`
reseeds every random stream of the model from a key that the step derives from
``(run key, step)``. Training therefore depends only on the state and the
step, which makes resuming from a checkpoint exact.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from examples.common import sharding as sharding_lib


class TrainState(NamedTuple):
  """Everything a training step reads and writes, as arrays.

  Attributes:
    step: ``int32`` scalar, number of optimizer updates done.
    params: The model's :class:`flax.nnx.Param` variables.
    model_state: The model's other variables except random streams (e.g.
      :class:`flax.nnx.BatchStat`).
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


@dataclasses.dataclass(frozen=True, eq=False)
class ModelDefinition:
  """The static halves of a split NNX model.

  Attributes:
    train_graphdef: Graph definition in training mode.
    eval_graphdef: Graph definition in evaluation mode.
    rng_state: A template of the model's random-stream variables; they are
      reseeded on every training step, and unused in evaluation mode.
    rng_tags: Names of the random streams the model holds (e.g. ``dropout``).
  """

  train_graphdef: nnx.GraphDef
  eval_graphdef: nnx.GraphDef
  rng_state: nnx.State
  rng_tags: tuple[str, ...]


def _split(
  model: nnx.Module,
) -> tuple[nnx.GraphDef, nnx.State, nnx.State, nnx.State]:
  """``(graphdef, params, rng_state, model_state)`` of ``model``."""
  return nnx.split(model, nnx.Param, nnx.RngState, ...)


def _rng_tags(model: nnx.Module) -> tuple[str, ...]:
  """Sorted names of the random streams ``model`` holds."""
  return tuple(
    sorted(
      {
        node.key.tag
        for _, node in nnx.iter_graph(model)
        if isinstance(node, nnx.RngStream)
      }
    )
  )


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A model class and its configuration, hashable by value.

  Runs with equal specs share one :class:`ModelDefinition` and, through it,
  their compiled step functions.

  Attributes:
    module_class: An NNX module class called as
      ``module_class(config, rngs=rngs)``.
    config: Its (hashable, e.g. frozen dataclass) configuration.
  """

  module_class: type[nnx.Module]
  config: Hashable

  def build(self, rngs: nnx.Rngs) -> nnx.Module:
    """A fresh model (in training mode) drawing from ``rngs``."""
    return self.module_class(self.config, rngs=rngs)


def _model_arrays(
  spec: ModelSpec, params_key: jax.Array, dropout_key: jax.Array
) -> tuple[nnx.State, nnx.State, nnx.State]:
  """``(params, rng_state, model_state)`` of a freshly built model."""
  model = spec.build(nnx.Rngs(params=params_key, dropout=dropout_key))
  _, params, rng_state, model_state = _split(model)
  return params, rng_state, model_state


@functools.lru_cache(maxsize=32)
def _compiled_model_init(spec: ModelSpec, sharding: NamedSharding) -> Callable:
  """``_model_arrays`` for ``spec``, jitted with outputs placed by ``sharding``."""
  return jax.jit(functools.partial(_model_arrays, spec), out_shardings=sharding)


@functools.lru_cache(maxsize=32)
def model_definition(spec: ModelSpec, mesh: Mesh) -> ModelDefinition:
  """The static halves of the model ``spec`` describes (cached per spec).

  Args:
    spec: The model.
    mesh: The data mesh the random-stream template is replicated over.

  Returns:
    The definition; equal specs and meshes give the same object.
  """
  abstract_model = nnx.eval_shape(
    lambda: spec.build(nnx.Rngs(params=0, dropout=0))
  )
  abstract_model.train()
  train_graphdef, *_ = _split(abstract_model)
  abstract_model.eval()
  eval_graphdef, *_ = _split(abstract_model)
  key = jax.random.key(0)
  init = _compiled_model_init(spec, sharding_lib.replicated_sharding(mesh))
  _, rng_state, _ = init(key, key)
  return ModelDefinition(
    train_graphdef=train_graphdef,
    eval_graphdef=eval_graphdef,
    rng_state=rng_state,
    rng_tags=_rng_tags(abstract_model),
  )


def init_train_state(
  spec: ModelSpec,
  optimizer: optax.GradientTransformation,
  seed: int,
  mesh: Mesh,
) -> tuple[ModelDefinition, TrainState]:
  """Builds the model and optimizer state, replicated over ``mesh``.

  The seed's key is split three ways: parameter initialisation, the model's
  own dropout streams (replaced on every step anyway) and the run key kept in
  the state. Initialisation is compiled once per model spec and mesh.

  Args:
    spec: The model.
    optimizer: The optimizer, initialised on the parameters.
    seed: The run's seed.
    mesh: The data mesh; every array of the state is replicated over it.

  Returns:
    ``(definition, state)`` with ``state.step == 0``.
  """
  replicated = sharding_lib.replicated_sharding(mesh)
  definition = model_definition(spec, mesh)
  params_key, dropout_key, run_key = jax.random.split(jax.random.key(seed), 3)
  params, _, model_state = _compiled_model_init(spec, replicated)(
    params_key, dropout_key
  )
  opt_state = jax.jit(optimizer.init, out_shardings=replicated)(params)
  step_and_key = sharding_lib.replicate(
    mesh,
    (np.zeros((), np.int32), np.asarray(jax.random.key_data(run_key))),
  )
  state = TrainState(
    step=step_and_key[0],
    params=params,
    model_state=model_state,
    opt_state=opt_state,
    key=step_and_key[1],
  )
  return definition, state


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


def merge_for_training(
  definition: ModelDefinition,
  params: nnx.State,
  model_state: nnx.State,
  dropout_key: jax.Array,
) -> nnx.Module:
  """Rebuilds the model in training mode with fresh dropout randomness.

  Call inside a jitted function. Every random stream of the model is reseeded
  from ``dropout_key`` (stream ``i`` of the sorted stream names from
  ``fold_in(dropout_key, i)``).

  Args:
    definition: The model's static halves.
    params: The parameters (the variables to differentiate).
    model_state: The other model variables.
    dropout_key: The step's key for the model's random streams.

  Returns:
    The model, ready to be called.
  """
  # Fresh variables, created at the current trace level, so that the forward
  # pass may update them (batch statistics, random-stream counters).
  params, rng_state, model_state = jax.tree.map(
    lambda leaf: leaf, (params, definition.rng_state, model_state)
  )
  model = nnx.merge(definition.train_graphdef, params, rng_state, model_state)
  nnx.reseed(
    model,
    **{
      tag: jax.random.fold_in(dropout_key, index)
      for index, tag in enumerate(definition.rng_tags)
    },
  )
  return model


def merge_for_eval(
  definition: ModelDefinition, params: nnx.State, model_state: nnx.State
) -> nnx.Module:
  """Rebuilds the model in evaluation mode (no dropout, running averages).

  Args:
    definition: The model's static halves.
    params: The parameters.
    model_state: The other model variables.

  Returns:
    The model, ready to be called.
  """
  return nnx.merge(
    definition.eval_graphdef, params, definition.rng_state, model_state
  )


def model_state_of(model: nnx.Module) -> nnx.State:
  """The variables of ``model`` that :class:`TrainState` keeps as model_state."""
  return _split(model)[3]


def merge_model(definition: ModelDefinition, state: TrainState) -> nnx.Module:
  """An evaluation-mode model holding the state's arrays, for use outside jit.

  Args:
    definition: The model's static halves.
    state: The training state.

  Returns:
    The model in evaluation mode.
  """
  return merge_for_eval(definition, state.params, state.model_state)


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
  leaves = [
    jnp.all(jnp.isfinite(leaf))
    for leaf in jax.tree.leaves(tree)
    if jnp.issubdtype(leaf.dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def all_finite(tree: Any) -> bool:
  """Whether every floating-point array of ``tree`` is free of NaN and inf."""
  return bool(_all_finite(tree))
