"""Experiment 2 (MinGPT on tiny Shakespeare) as batched runs of one optimizer.

The protocol is that of :mod:`examples.mingpt.train`, step for step:

* every run is initialised by
  :func:`examples.common.train_state.init_train_state` from its seed;
* step ``t`` trains on random windows of the training text and draws its
  dropout masks, both from keys split off ``(seed, t)``;
* before training and every ``eval_interval`` iterations, the loss is
  averaged over ``eval_iters`` random batches of each split, dropout off,
  with the trainer's key streams.

Unlike the trainer, the runs of an arm are stacked along a leading run axis
and trained by vmapped calls (one per evaluation interval, a ``lax.scan`` over
its iterations, or one per iteration; see :mod:`benchmarks.repro_runs`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import repro_runs
from benchmarks.repro_presets import GPT, GPTProtocol
from benchmarks.repro_runs import RunSpec
from examples.common import sharding
from examples.common import train_state as train_state_lib
from examples.mingpt import data as data_lib
from examples.mingpt import model as model_lib

# The trainer's key streams.
_TRAIN_STREAM = 0
_EVAL_TRAIN_STREAM = 1
_EVAL_VAL_STREAM = 2


def _loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def _train_step(
  definition: train_state_lib.ModelDefinition,
  update: optax.TransformUpdateExtraArgsFn,
  batch_size: int,
  block_size: int,
  state: train_state_lib.TrainState,
  data: jax.Array,
) -> tuple[train_state_lib.TrainState, jax.Array]:
  """One update of one run on a random batch of ``data`` (the trainer's step)."""
  batch_key, dropout_key = jax.random.split(
    train_state_lib.step_key(state, _TRAIN_STREAM)
  )
  inputs, targets = data_lib.sample_batch(
    batch_key, data, batch_size, block_size
  )

  def loss_fn(params):
    model = train_state_lib.merge_for_training(
      definition, params, state.model_state, dropout_key
    )
    return _loss(model(inputs), targets), train_state_lib.model_state_of(model)

  (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
    state.params
  )
  updates, opt_state = update(grads, state.opt_state, state.params)
  new_state = train_state_lib.TrainState(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    model_state=model_state,
    opt_state=opt_state,
    key=state.key,
  )
  return new_state, loss


def _estimate_loss(
  definition: train_state_lib.ModelDefinition,
  batch_size: int,
  block_size: int,
  eval_iters: int,
  state: train_state_lib.TrainState,
  data: jax.Array,
  stream: int,
) -> jax.Array:
  """One run's mean loss over ``eval_iters`` random batches, dropout off."""
  keys = jax.random.split(train_state_lib.step_key(state, stream), eval_iters)
  model = train_state_lib.merge_for_eval(
    definition, state.params, state.model_state
  )

  def add_batch_loss(total, key):
    inputs, targets = data_lib.sample_batch(key, data, batch_size, block_size)
    return total + _loss(model(inputs), targets), None

  total, _ = jax.lax.scan(add_batch_loss, jnp.zeros((), jnp.float32), keys)
  return total / eval_iters


def _train_steps(
  definition: train_state_lib.ModelDefinition,
  update: optax.TransformUpdateExtraArgsFn,
  batch_size: int,
  block_size: int,
  num_steps: int,
  scan: bool,
  state: train_state_lib.TrainState,
  data: jax.Array,
) -> tuple[train_state_lib.TrainState, jax.Array]:
  """One run's ``num_steps`` updates; returns the state and their losses."""

  def step(state, _, data):
    return _train_step(definition, update, batch_size, block_size, state, data)

  return repro_runs.steps(step, num_steps, scan)(state, None, data)


@functools.lru_cache(maxsize=64)
def compiled_train_steps(
  definition: train_state_lib.ModelDefinition,
  update: optax.TransformUpdateExtraArgsFn,
  batch_size: int,
  block_size: int,
  num_steps: int,
  scan: bool,
) -> Any:
  """The jitted, run-batched training steps.

  Returns:
    ``train_steps(state, train_data)`` with a leading run axis on ``state``
    (donated), returning the state and the losses ``(R, num_steps)``.
  """
  return jax.jit(
    jax.vmap(
      functools.partial(
        _train_steps,
        definition,
        update,
        batch_size,
        block_size,
        num_steps,
        scan,
      ),
      in_axes=(0, None),
    ),
    donate_argnums=0,
  )


@functools.lru_cache(maxsize=64)
def compiled_evaluation(
  definition: train_state_lib.ModelDefinition,
  batch_size: int,
  block_size: int,
  eval_iters: int,
) -> Any:
  """The jitted, run-batched evaluation.

  Returns:
    ``evaluate(state, train_data, val_data)`` returning per-run
    ``(train_loss, val_loss)``.
  """
  estimate = functools.partial(
    _estimate_loss, definition, batch_size, block_size, eval_iters
  )

  def evaluate_run(state, train_data, val_data):
    return (
      estimate(state, train_data, _EVAL_TRAIN_STREAM),
      estimate(state, val_data, _EVAL_VAL_STREAM),
    )

  return jax.jit(jax.vmap(evaluate_run, in_axes=(0, None, None)))


def interval_lengths(iters: int, eval_interval: int) -> tuple[int, ...]:
  """Iterations of each training interval: evaluations after every
  ``eval_interval`` iterations and after the last one."""
  full, rest = divmod(iters, eval_interval)
  return (eval_interval,) * full + ((rest,) if rest else ())


class GPTRunGroup:
  """The runs of one arm in experiment 2, trained interval by interval.

  Args:
    runs: Runs of one arm (different seeds and/or learning rates).
    protocol: The training protocol.
    corpus: The character corpus.
    mesh: A one-device mesh holding every array.
    execution: How runs and steps are cut into calls; None picks
      :meth:`benchmarks.repro_runs.Execution.for_platform`.

  Raises:
    ValueError: If the runs do not share one arm, or a split of the text is
      shorter than one window.
  """

  experiment = GPT

  def __init__(
    self,
    runs: Sequence[RunSpec],
    protocol: GPTProtocol,
    corpus: data_lib.CharCorpus,
    mesh: jax.sharding.Mesh,
    execution: repro_runs.Execution | None = None,
  ):
    self.protocol = protocol
    for name, ids in (("training", corpus.train), ("validation", corpus.val)):
      if len(ids) < protocol.block_size + 1:
        raise ValueError(
          f"The {name} text has {len(ids)} characters, fewer than "
          f"block_size + 1 = {protocol.block_size + 1}; use a longer text."
        )
    if execution is None:
      execution = repro_runs.Execution.for_platform(
        mesh.devices.flat[0].platform
      )
    self.execution = execution
    config = model_lib.GPTConfig(
      vocab_size=corpus.vocab_size, **protocol.model_kwargs()
    )
    spec = train_state_lib.ModelSpec(model_lib.MinGPT, config)
    self.batched = repro_runs.BatchedRuns(spec, runs, mesh, execution.run_batch)
    self.runs = self.batched.runs
    self._evaluate = compiled_evaluation(
      self.batched.definition,
      protocol.batch_size,
      protocol.block_size,
      protocol.eval_iters,
    )
    self._train_data, self._val_data = sharding.replicate(
      mesh, (corpus.train, corpus.val)
    )
    self._lengths = interval_lengths(protocol.iters, protocol.eval_interval)
    self.chunks_done = 0
    self.steps_done = 0

  @property
  def num_chunks(self) -> int:
    """Training intervals in the protocol."""
    return len(self._lengths)

  def _eval_records(
    self, running_losses: np.ndarray | None
  ) -> list[dict[str, Any]]:
    train_loss, val_loss = self.batched.evaluate(
      self._evaluate, (self._train_data, self._val_data)
    )
    rates = self.batched.learning_rates()
    records = []
    for index, run in enumerate(self.runs):
      record = {
        **run.identity(),
        "experiment": GPT,
        "kind": "eval",
        "step": self.steps_done,
        "train_loss": float(train_loss[index]),
        "val_loss": float(val_loss[index]),
        "lr": float(rates[index]),
      }
      if running_losses is not None:
        record["train_loss_running"] = float(
          np.mean(running_losses[index], dtype=np.float64)
        )
      records.append(record)
    return records

  def start(self) -> list[dict[str, Any]]:
    """Evaluates every run before training (step 0)."""
    return self._eval_records(None)

  def run_chunk(self) -> list[dict[str, Any]]:
    """Trains every run for one interval, then evaluates.

    Returns:
      One record per run with ``step``, ``train_loss`` and ``val_loss`` (the
      evaluation estimates), ``train_loss_running`` (mean loss of the
      interval's training batches, dropout on) and ``lr``.
    """
    num_steps = self._lengths[self.chunks_done]
    steps_per_call = num_steps if self.execution.scan_chunks else 1
    train_steps = compiled_train_steps(
      self.batched.definition,
      self.batched.update,
      self.protocol.batch_size,
      self.protocol.block_size,
      steps_per_call,
      self.execution.scan_chunks,
    )
    calls = [
      self.batched.step(train_steps, shared=(self._train_data,))
      for _ in range(num_steps // steps_per_call)
    ]
    self.chunks_done += 1
    self.steps_done += num_steps
    return self._eval_records(repro_runs.join_calls(calls))

  def finish(self) -> list[dict[str, Any]]:
    """Nothing is evaluated after training in this experiment."""
    return []
