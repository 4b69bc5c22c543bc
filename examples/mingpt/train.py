"""Trains the EXAdam paper's character-level MinGPT (section 3.2).

Usage::

  python -m examples.mingpt.train --preset tiny --optimizer exadam

Every ``eval_interval`` iterations (and before the first and after the last)
the mean loss over ``eval_iters`` random batches of each split is estimated
with dropout off. At the end the model writes a sample of text, printed and
saved as ``sample.txt``. The run's folder holds ``config.json``,
``metrics.jsonl`` (one record per evaluation: ``step``, ``train_loss``,
``val_loss``, ``lr`` and the throughput), ``sample.txt`` and ``checkpoints/``.

Every random draw derives from the seed and the step: the training batch and
dropout masks of step ``t`` from ``(seed, t)``, the evaluation batches after
``t`` updates likewise. A run resumed from a checkpoint therefore continues
exactly as if it had not stopped. The whole text is replicated on every
device and the batches are drawn inside the jitted step, so every process of
a multi-host run holds the same text and feeds nothing per step.
"""

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

# Random streams: fold_in(run key, stream) is then folded with the step.
TRAIN_STREAM = 0
EVAL_TRAIN_STREAM = 1
EVAL_VAL_STREAM = 2
SAMPLE_STREAM = 3


@dataclasses.dataclass
class TrainResult:
  """What a finished run returns.

  Attributes:
    history: The records of ``metrics.jsonl``, oldest first (including those
      written before a resume).
    sample: The generated text ('' if ``sample_tokens`` is 0).
    state: The final :class:`~examples.common.train_state.TrainState`.
    out_dir: The run folder.
  """

  history: list[dict[str, Any]]
  sample: str
  state: train_state_lib.TrainState
  out_dir: Any


def sample_batch(
  key: jax.Array, data: jax.Array, batch_size: int, block_size: int
) -> tuple[jax.Array, jax.Array]:
  """Random windows of ``data`` and the tokens that follow them.

  Window starts are uniform in ``[0, len(data) - block_size)``, as in the
  lecture's ``get_batch``.

  Returns:
    ``(x, y)``, both ``(batch_size, block_size)``:
    ``x[b] = data[s_b : s_b + block_size]`` and ``y[b] = x[b]`` shifted by one.
  """
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
  """One optimizer update on a random batch of ``data`` (jitted by the caller)."""
  batch_key, dropout_key = jax.random.split(
    train_state_lib.step_key(state, TRAIN_STREAM)
  )
  inputs, targets = sample_batch(batch_key, data, batch_size, block_size)
  if batch_sharding is not None:
    inputs, targets = jax.lax.with_sharding_constraint(
      (inputs, targets), batch_sharding
    )

  def batch_loss(params):
    model = nnx.merge(graphdef, params, state.model_state)
    logits = model(inputs, train=True, rngs=nnx.Rngs(dropout=dropout_key))
    return loss_fn(logits, targets)

  loss, grads = jax.value_and_grad(batch_loss)(state.params)
  updates, opt_state = update(grads, state.opt_state, state.params)
  new_state = state._replace(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    opt_state=opt_state,
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
    inputs, targets = sample_batch(key, data, batch_size, block_size)
    if batch_sharding is not None:
      inputs, targets = jax.lax.with_sharding_constraint(
        (inputs, targets), batch_sharding
      )
    return total + loss_fn(model(inputs), targets), None

  total, _ = jax.lax.scan(add_batch_loss, jnp.zeros((), jnp.float32), keys)
  return total / eval_iters


def jitted_steps(
  config: configs.Config,
  graphdef: nnx.GraphDef,
  update: optax.TransformUpdateExtraArgsFn,
  mesh: jax.sharding.Mesh,
) -> tuple[Any, Any]:
  """The jitted :func:`train_step` (donating the state) and :func:`eval_step`.

  Returns:
    ``step_fn(state, data)`` and ``eval_fn(state, data, stream)``.
  """
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
  """Generates ``config.sample_tokens`` characters after ``prompt``.

  The text is printed and saved as ``sample.txt`` in the run folder; its
  randomness derives from the seed and the step.

  Returns:
    The text ('' if ``config.sample_tokens`` is 0).
  """
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
  """Trains MinGPT as configured, writing the run folder.

  Args:
    config: The run's settings.
    corpus: The text to train on; None loads ``config.text`` or tiny
      Shakespeare.

  Returns:
    The metric history, the generated sample and the final state.

  Raises:
    examples.common.training_run.NonFiniteLossError: If a training loss is
      NaN or infinite; the checkpoints written before stay.
    examples.common.training_run.RunStopped: After SIGTERM or Ctrl-C, once a
      checkpoint at the current step is written.
    FileExistsError: If the run folder holds a run and ``resume`` is false.
    ValueError: If the settings are inconsistent (the batch does not split
      over the devices, the text is too short, resuming with other settings).
  """
  if corpus is None:
    corpus = data_lib.load_text(
      config.data_dir, config.text, verify=config.verify_data
    )
  block_size = config.model.block_size
  data_lib.check_corpus(corpus, block_size)
  prompt = corpus.encode(config.prompt or corpus.default_prompt)[None, :]
  mesh = sharding.make_data_mesh(config.num_devices)
  sharding.check_batch_size(config.batch_size, mesh)
  schedule = config.learning_rate_schedule(config.iters)
  optimizer = optimizers.make_optimizer(
    config.optimizer,
    config.lr,
    weight_decay=config.weight_decay,
    switches=config.switches,
    schedule=schedule,
  )
  graphdef, state = train_state_lib.init_train_state(
    lambda rngs: model_lib.MinGPT(config.model, corpus.vocab_size, rngs=rngs),
    optimizer,
    config.seed,
    mesh,
    fsdp=config.fsdp,
  )
  step_fn, eval_fn = jitted_steps(config, graphdef, optimizer.update, mesh)
  train_data, val_data = sharding.replicate(mesh, (corpus.train, corpus.val))
  learning_rate = optimizers.initial_learning_rate(config.optimizer, config.lr)

  with training_run.TrainingRun(
    config,
    "mingpt",
    total_steps=config.iters,
    unit="tokens",
    examples_per_step=config.batch_size * block_size,
  ) as run:
    state, progress = run.restore(state)
    step = progress.get("step", 0)

    def evaluate() -> None:
      run.record(
        {
          "step": step,
          "train_loss": float(eval_fn(state, train_data, EVAL_TRAIN_STREAM)),
          "val_loss": float(eval_fn(state, val_data, EVAL_VAL_STREAM)),
          "lr": learning_rate * schedule.at(max(step - 1, 0)),
        }
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
  # Once the run is closed, so that the text comes after its progress bar.
  sample = write_sample(run, config, corpus, prompt, graphdef, state)
  return TrainResult(run.records, sample, state, run.out_dir)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs ``python -m examples.mingpt.train``; returns the exit status."""
  return cli.main(
    train,
    configs.PRESETS,
    argv,
    prog="python -m examples.mingpt.train",
    description="Train the EXAdam paper's character-level MinGPT.",
  )


if __name__ == "__main__":
  raise SystemExit(main())
