"""Trains the EXAdam paper's character-level MinGPT (section 3.2).

Run ``python -m examples.mingpt.train --preset tiny``. Every random draw derives
from the seed and the step, so a resumed run continues exactly. Batches are cut
in the jitted step from the text replicated on every device: nothing is fed."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from examples.common import cli, optimizers, sharding, training_run
from examples.common import train_state as train_state_lib
from examples.mingpt import configs
from examples.mingpt import data as data_lib
from examples.mingpt import model as model_lib

# The random streams: a step's key is fold_in(fold_in(run key, stream), step).
TRAIN_STREAM, EVAL_TRAIN_STREAM, EVAL_VAL_STREAM, SAMPLE_STREAM = range(4)


@dataclasses.dataclass
class TrainResult:
  """A finished run: ``history`` (``metrics.jsonl`` records, oldest first,
  resumes included), ``sample`` ('' if none), final ``state``, ``out_dir``."""

  history: list[dict[str, Any]]
  sample: str
  state: train_state_lib.TrainState
  out_dir: Any


def sample_batch(
  key: jax.Array, data: jax.Array, batch_size: int, block_size: int
) -> tuple[jax.Array, jax.Array]:
  """Random windows ``x`` of ``data``, ``y`` one token later (``get_batch``)."""
  starts = jax.random.randint(key, (batch_size,), 0, len(data) - block_size)
  windows = jax.vmap(
    lambda start: jax.lax.dynamic_slice(data, (start,), (block_size + 1,))
  )(starts)
  return windows[:, :-1], windows[:, 1:]


def loss_fn(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean cross-entropy of next-token logits."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def train_step(
  state: train_state_lib.TrainState,
  data: jax.Array,
  *,
  graphdef: nnx.GraphDef,
  update: optax.TransformUpdateExtraArgsFn,
  batch_size: int,
  block_size: int,
  batch_sharding: jax.sharding.Sharding | None = None,
) -> tuple[train_state_lib.TrainState, dict[str, jax.Array]]:
  """One optimizer update on a random batch of ``data`` (the caller jits)."""
  key = train_state_lib.step_key(state, TRAIN_STREAM)
  batch_key, dropout_key = jax.random.split(key)
  batch = sample_batch(batch_key, data, batch_size, block_size)
  if batch_sharding is not None:
    batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
  inputs, targets = batch

  def batch_loss(params):
    model = nnx.merge(graphdef, params, state.model_state)
    logits = model(inputs, train=True, rngs=nnx.Rngs(dropout=dropout_key))
    return loss_fn(logits, targets)

  loss, grads = jax.value_and_grad(batch_loss)(state.params)
  updates, opt_state = update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state._replace(
    step=state.step + 1, params=params, opt_state=opt_state
  )
  return new_state, {"loss": loss}


def eval_step(
  state: train_state_lib.TrainState,
  data: jax.Array,
  stream: int,
  *,
  graphdef: nnx.GraphDef,
  batch_size: int,
  block_size: int,
  eval_iters: int,
  batch_sharding: jax.sharding.Sharding | None = None,
) -> jax.Array:
  """Mean loss over ``eval_iters`` random batches of ``data``, dropout off."""
  model = nnx.merge(graphdef, state.params, state.model_state)
  keys = jax.random.split(train_state_lib.step_key(state, stream), eval_iters)

  def add_batch_loss(total, key):
    batch = sample_batch(key, data, batch_size, block_size)
    if batch_sharding is not None:
      batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    inputs, targets = batch
    return total + loss_fn(model(inputs), targets), None

  total, _ = jax.lax.scan(add_batch_loss, jnp.zeros((), jnp.float32), keys)
  return total / eval_iters


def jitted_steps(
  config: configs.Config,
  graphdef: nnx.GraphDef,
  update: optax.TransformUpdateExtraArgsFn,
  mesh: jax.sharding.Mesh,
) -> tuple[Any, Any]:
  """Jitted :func:`train_step` (donating the state) and :func:`eval_step`."""
  statics = dict(
    graphdef=graphdef,
    batch_size=config.batch_size,
    block_size=config.model.block_size,
    batch_sharding=sharding.batch_sharding(mesh),
  )
  step_fn = jax.jit(
    functools.partial(train_step, update=update, **statics),
    donate_argnums=0,
  )
  eval_fn = jax.jit(
    functools.partial(eval_step, eval_iters=config.eval_iters, **statics),
    static_argnums=2,
  )
  return step_fn, eval_fn


def write_sample(
  run: training_run.TrainingRun,
  config: configs.Config,
  corpus: data_lib.CharCorpus,
  prompt: jax.Array,
  graphdef: nnx.GraphDef,
  state: train_state_lib.TrainState,
) -> str:
  """Prints, saves (``sample.txt``) and returns the sample ('' if none)."""
  if not config.sample_tokens:
    return ""
  model = nnx.merge(graphdef, state.params, state.model_state)
  key = train_state_lib.step_key(state, SAMPLE_STREAM)
  tokens = model_lib.generate(
    model, key, prompt, config.sample_tokens, config.temperature
  )
  sample = corpus.decode(np.asarray(jax.device_get(tokens))[0])
  run.print(f"--- sample ({config.sample_tokens} characters) ---\n{sample}")
  if run.is_writer:
    (run.out_dir / "sample.txt").write_text(sample, encoding="utf-8")
  return sample


def train(
  config: configs.Config, corpus: data_lib.CharCorpus | None = None
) -> TrainResult:
  """Trains MinGPT on ``corpus`` (None: ``config.text`` or tiny Shakespeare).

  ``training_run.RunStopped`` after SIGTERM or Ctrl-C, once the current step is
  checkpointed; ``ValueError`` for inconsistent settings (e.g. a short text)."""
  if corpus is None:
    corpus = data_lib.load_text(
      config.data_dir, config.text, verify=config.verify_data
    )
  data_lib.check_corpus(corpus, config.model.block_size)
  prompt = corpus.encode(config.prompt or corpus.default_prompt)[None, :]
  mesh = sharding.make_data_mesh(config.num_devices)
  sharding.check_batch_size(config.batch_size, mesh)
  schedule = config.learning_rate_schedule(config.iters)
  optimizer = config.make_optimizer(schedule)

  def build_model(rngs: nnx.Rngs) -> model_lib.MinGPT:
    return model_lib.MinGPT(config.model, corpus.vocab_size, rngs=rngs)

  graphdef, state = train_state_lib.init_train_state(
    build_model, optimizer, config.seed, mesh, fsdp=config.fsdp
  )
  step_fn, eval_fn = jitted_steps(config, graphdef, optimizer.update, mesh)
  train_data, val_data = sharding.replicate(mesh, (corpus.train, corpus.val))
  learning_rate = optimizers.initial_learning_rate(config.optimizer, config.lr)
  with training_run.TrainingRun(
    config,
    "mingpt",
    total_steps=config.iters,
    unit="tokens",
    examples_per_step=config.batch_size * config.model.block_size,
  ) as run:
    state, progress = run.restore(state)
    step = progress.get("step", 0)

    def evaluate() -> None:
      train_loss = float(eval_fn(state, train_data, EVAL_TRAIN_STREAM))
      val_loss = float(eval_fn(state, val_data, EVAL_VAL_STREAM))
      lr = learning_rate * schedule.at(max(step - 1, 0))
      run.record(
        dict(step=step, train_loss=train_loss, val_loss=val_loss, lr=lr)
      )

    if step == 0:
      evaluate()
    while step < config.iters:
      state, metrics = step_fn(state, train_data)
      step += 1
      run.log_step(metrics)
      if step % config.eval_interval == 0 or step == config.iters:
        evaluate()
      if run.stop_requested:  # SIGTERM or Ctrl-C: save here and end
        run.save(step, state, {"step": step})
        break
      if step % config.checkpoint_every == 0 or step == config.iters:
        run.save(step, state, {"step": step})
    if run.stop_requested:
      raise run.stopped()
  # After the run is closed, so that the text follows its progress bar.
  sample = write_sample(run, config, corpus, prompt, graphdef, state)
  return TrainResult(run.records, sample, state, run.out_dir)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs ``python -m examples.mingpt.train``; returns the exit status."""
  return cli.main(train, configs.PRESETS, argv)


if __name__ == "__main__":
  raise SystemExit(main())
