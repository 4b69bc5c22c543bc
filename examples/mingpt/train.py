"""Trains the EXAdam paper's character-level MinGPT (section 3.2).

Usage::

  python -m examples.mingpt.train --preset tiny --optimizer exadam \\
      --data-dir ../shared/data

Protocol (the paper's, from Karpathy's "Let's build GPT" lecture): random
windows of ``block_size`` characters from the first 90% of the text, batch 64,
learning rate 1e-4, 5,000 iterations; every ``--eval-interval`` iterations
(and after the last one) the mean loss over ``--eval-iters`` random batches of
each split, with dropout off. Evaluations happen after 0, 500, ..., 5,000
updates (the lecture evaluates before its update 4,999 instead of after
5,000). At the end the model writes a sample of text, printed and saved as
``sample.txt``.

Every random draw derives from the seed and the step: the training batch and
dropout masks of step ``t`` from ``(seed, t)``, the evaluation batches after
``t`` updates likewise. A run resumed from a checkpoint therefore continues
exactly as if it had not stopped.

The run's folder holds ``config.json``, ``metrics.jsonl`` (one record per
evaluation: ``step``, ``train_loss``, ``val_loss``, ``lr``), ``sample.txt``
and ``checkpoints/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples.common import checkpointing, cli, optimizers, run_config, run_dir
from examples.common import metrics as metrics_lib
from examples.common import progress as progress_lib
from examples.common import sharding as sharding_lib
from examples.common import step_metrics as step_metrics_lib
from examples.common import train_state as train_state_lib
from examples.mingpt import data as data_lib
from examples.mingpt import model as model_lib

_TRAIN_STREAM = 0
_EVAL_TRAIN_STREAM = 1
_EVAL_VAL_STREAM = 2
_SAMPLE_STREAM = 3
_LOG_EVERY_STEPS = 10

TRAINING_PRESETS: dict[str, dict[str, Any]] = {
  "paper": dict(
    learning_rate=1e-4,
    iters=5000,
    batch_size=64,
    eval_interval=500,
    eval_iters=200,
    checkpoint_every=500,
    sample_tokens=500,
  ),
  "tiny": dict(
    learning_rate=5e-4,
    iters=600,
    batch_size=32,
    eval_interval=200,
    eval_iters=20,
    checkpoint_every=200,
    sample_tokens=300,
  ),
}
"""Training defaults of each preset; the model sizes are in
:data:`examples.mingpt.model.GPT_PRESETS`. ``paper`` is the paper's protocol;
``tiny`` trains in about a minute on two CPU cores."""

# Settings that may differ when a run is resumed: longer training, other
# places for the data or the run, other reporting.
_RESUMABLE_CHANGES = frozenset(
  {
    "iters",
    "data_dir",
    "download",
    "out_dir",
    "resume",
    "checkpoint_every",
    "keep_checkpoints",
    "progress",
    "sample_tokens",
    "temperature",
    "prompt",
  }
)


@dataclasses.dataclass(frozen=True)
class GPTTrainConfig:
  """Settings of a MinGPT training run.

  Build one with :meth:`for_preset` to get a preset's training defaults.

  Attributes:
    preset: Model size and training defaults, a key of
      :data:`TRAINING_PRESETS`.
    optimizer: A name of :data:`examples.common.optimizers.OPTIMIZER_NAMES`.
    learning_rate: The learning rate.
    weight_decay: Weight decay; None takes the optimizer's PyTorch default.
    cross_moment_debiasing: EXAdam switch.
    gradient_acceleration: EXAdam switch.
    dynamic_step_size: EXAdam switch.
    iters: Number of training iterations.
    batch_size: Global batch size (a multiple of the number of devices).
    eval_interval: Iterations between evaluations.
    eval_iters: Random batches per split in each evaluation.
    checkpoint_every: Iterations between checkpoints (one is also written at
      the end).
    keep_checkpoints: Number of most recent checkpoints kept.
    sample_tokens: Characters generated at the end (0: none).
    temperature: Sampling temperature.
    prompt: Text the sample continues; None starts from a newline (or the
      first vocabulary character if the text has no newline).
    seed: Random seed.
    dtype: Computation dtype, ``"float32"`` or ``"bfloat16"``.
    data_dir: Data folder holding ``tinyshakespeare/input.txt``.
    text_file: A UTF-8 text to train on instead of tiny Shakespeare.
    download: Whether to download tiny Shakespeare if it is not found.
    out_dir: The run folder; None means
      ``runs/mingpt-<preset>-<optimizer>-seed<seed>``.
    resume: Continue the run in ``out_dir`` from its latest checkpoint.
    num_devices: Use the first N devices; None uses all.
    progress: Draw a progress bar.

  Raises:
    ValueError: On construction, if a setting is out of range.
  """

  preset: str = "paper"
  optimizer: str = "exadam"
  learning_rate: float = 1e-4
  weight_decay: float | None = None
  cross_moment_debiasing: bool = True
  gradient_acceleration: bool = True
  dynamic_step_size: bool = True
  iters: int = 5000
  batch_size: int = 64
  eval_interval: int = 500
  eval_iters: int = 200
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  sample_tokens: int = 500
  temperature: float = 1.0
  prompt: str | None = None
  seed: int = 1234
  dtype: str = "float32"
  data_dir: str | None = None
  text_file: str | None = None
  download: bool = True
  out_dir: str | None = None
  resume: bool = False
  num_devices: int | None = None
  progress: bool = True

  def __post_init__(self) -> None:
    run_config.check_run_settings(
      self,
      TRAINING_PRESETS,
      positive=(
        "iters",
        "batch_size",
        "eval_interval",
        "eval_iters",
        "checkpoint_every",
        "keep_checkpoints",
      ),
    )
    if self.sample_tokens < 0:
      raise ValueError(f"sample_tokens must be >= 0, got {self.sample_tokens}.")
    if not self.temperature > 0:
      raise ValueError(f"temperature must be > 0, got {self.temperature}.")

  @classmethod
  def for_preset(
    cls, preset: str = "paper", **overrides: Any
  ) -> GPTTrainConfig:
    """A config with ``preset``'s training defaults, then ``overrides``.

    Args:
      preset: A key of :data:`TRAINING_PRESETS`.
      **overrides: Fields to set.

    Returns:
      The config.

    Raises:
      ValueError: If ``preset`` is unknown or a value is out of range.
    """
    run_config.check_preset(preset, TRAINING_PRESETS)
    return cls(preset=preset, **{**TRAINING_PRESETS[preset], **overrides})

  def resolved_out_dir(self) -> pathlib.Path:
    """The run folder, with the default filled in."""
    if self.out_dir is not None:
      return pathlib.Path(self.out_dir)
    return pathlib.Path(
      "runs", f"mingpt-{self.preset}-{self.optimizer}-seed{self.seed}"
    )


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
  out_dir: pathlib.Path


def _loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def _sample_sharded_batch(key, data, batch_size, block_size, sharding):
  inputs, targets = data_lib.sample_batch(key, data, batch_size, block_size)
  chex.assert_shape([inputs, targets], (batch_size, block_size))
  return jax.lax.with_sharding_constraint((inputs, targets), sharding)


def _train_step(
  definition: train_state_lib.ModelDefinition,
  optimizer_update: optax.TransformUpdateExtraArgsFn,
  batch_size: int,
  block_size: int,
  sharding: jax.sharding.NamedSharding,
  state: train_state_lib.TrainState,
  data: jax.Array,
) -> tuple[train_state_lib.TrainState, dict[str, jax.Array]]:
  """One optimizer update on a random batch of ``data`` (jitted by the caller)."""
  batch_key, dropout_key = jax.random.split(
    train_state_lib.step_key(state, _TRAIN_STREAM)
  )
  inputs, targets = _sample_sharded_batch(
    batch_key, data, batch_size, block_size, sharding
  )

  def loss_fn(params):
    model = train_state_lib.merge_for_training(
      definition, params, state.model_state, dropout_key
    )
    loss = _loss(model(inputs), targets)
    return loss, train_state_lib.model_state_of(model)

  (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
    state.params
  )
  chex.assert_rank(loss, 0)
  updates, opt_state = optimizer_update(grads, state.opt_state, state.params)
  new_state = train_state_lib.TrainState(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    model_state=model_state,
    opt_state=opt_state,
    key=state.key,
  )
  return new_state, {"loss": loss}


def _estimate_loss(
  definition: train_state_lib.ModelDefinition,
  batch_size: int,
  block_size: int,
  eval_iters: int,
  sharding: jax.sharding.NamedSharding,
  state: train_state_lib.TrainState,
  data: jax.Array,
  stream: int,
) -> jax.Array:
  """Mean loss over ``eval_iters`` random batches of ``data``, dropout off."""
  keys = jax.random.split(train_state_lib.step_key(state, stream), eval_iters)

  def add_batch_loss(total, key):
    inputs, targets = _sample_sharded_batch(
      key, data, batch_size, block_size, sharding
    )
    model = train_state_lib.merge_for_eval(
      definition, state.params, state.model_state
    )
    return total + _loss(model(inputs), targets), None

  total, _ = jax.lax.scan(add_batch_loss, jnp.zeros((), jnp.float32), keys)
  return total / eval_iters


@functools.lru_cache(maxsize=16)
def _compiled_functions(
  definition: train_state_lib.ModelDefinition,
  optimizer_update: optax.TransformUpdateExtraArgsFn,
  batch_size: int,
  block_size: int,
  eval_iters: int,
  mesh: jax.sharding.Mesh,
) -> tuple[Any, Any]:
  """The jitted training step and loss estimate, compiled once per setting.

  Runs in one process with the same model, optimizer and sizes (e.g. the
  seeds or learning rates of a benchmark) reuse the compiled functions.
  """
  batch_sharding = sharding_lib.batch_sharding(mesh)
  replicated = sharding_lib.replicated_sharding(mesh)
  train_step = jax.jit(
    functools.partial(
      _train_step,
      definition,
      optimizer_update,
      batch_size,
      block_size,
      batch_sharding,
    ),
    donate_argnums=0,
    out_shardings=replicated,
  )
  estimate_loss = jax.jit(
    functools.partial(
      _estimate_loss,
      definition,
      batch_size,
      block_size,
      eval_iters,
      batch_sharding,
    ),
    static_argnums=2,
    out_shardings=replicated,
  )
  return train_step, estimate_loss


def _check_corpus(corpus: data_lib.CharCorpus, block_size: int) -> None:
  for name, ids in (("training", corpus.train), ("validation", corpus.val)):
    if len(ids) < block_size + 1:
      raise ValueError(
        f"The {name} part of the text has {len(ids)} characters, fewer than "
        f"block_size + 1 = {block_size + 1}; use a longer text (the validation "
        "part is its last 10%)."
      )


def _prompt_ids(corpus: data_lib.CharCorpus, prompt: str | None) -> np.ndarray:
  if prompt is None:
    prompt = "\n" if "\n" in corpus.chars else corpus.chars[0]
  if not prompt:
    raise ValueError("The prompt must not be empty.")
  return corpus.encode(prompt)[None, :]


def train(
  config: GPTTrainConfig, corpus: data_lib.CharCorpus | None = None
) -> TrainResult:
  """Trains MinGPT as configured, writing the run folder.

  Args:
    config: The run's settings.
    corpus: The text to train on; None loads ``config.text_file`` or tiny
      Shakespeare.

  Returns:
    The metric history, the generated sample and the final state.

  Raises:
    examples.common.step_metrics.NonFiniteLossError: If a training loss is
      NaN or infinite; the checkpoints written before stay.
    FileExistsError: If ``out_dir`` holds a run and ``resume`` is false.
    ValueError: If the settings are inconsistent (e.g. the batch does not
      split over the devices, or resuming with changed settings).
  """
  if corpus is None:
    corpus = data_lib.load_text(
      config.data_dir, config.text_file, download=config.download
    )
  model_config = model_lib.GPT_PRESETS[config.preset](
    vocab_size=corpus.vocab_size, dtype=jnp.dtype(config.dtype)
  )
  block_size = model_config.block_size
  _check_corpus(corpus, block_size)
  prompt_ids = _prompt_ids(corpus, config.prompt)
  mesh = sharding_lib.make_data_mesh(config.num_devices)
  sharding_lib.check_batch_size(config.batch_size, mesh)
  optimizer = optimizers.make_optimizer(
    config.optimizer,
    config.learning_rate,
    weight_decay=config.weight_decay,
    switches=optimizers.ExAdamSwitches(
      config.cross_moment_debiasing,
      config.gradient_acceleration,
      config.dynamic_step_size,
    ),
  )
  is_writer = jax.process_index() == 0
  out_dir = run_dir.prepare_run_dir(
    config.resolved_out_dir(),
    dataclasses.asdict(config),
    resume=config.resume,
    may_change_on_resume=_RESUMABLE_CHANGES,
    writable=is_writer,
  )
  definition, state = train_state_lib.init_train_state(
    train_state_lib.ModelSpec(model_lib.MinGPT, model_config),
    optimizer,
    config.seed,
    mesh,
  )
  metrics = metrics_lib.MetricsLog(
    out_dir / metrics_lib.METRICS_FILE_NAME, writable=is_writer
  )
  train_step, estimate_loss = _compiled_functions(
    definition,
    optimizer.update,
    config.batch_size,
    block_size,
    config.eval_iters,
    mesh,
  )
  train_data, val_data = sharding_lib.replicate(
    mesh, (corpus.train, corpus.val)
  )
  log = print if is_writer else (lambda *args, **kwargs: None)

  with checkpointing.Checkpointer(
    out_dir / run_dir.CHECKPOINT_DIR_NAME, max_to_keep=config.keep_checkpoints
  ) as checkpointer:
    step = 0
    if config.resume and checkpointer.latest_step() is not None:
      state, progress = checkpointer.restore(like=state)
      step = int(progress["step"])
      metrics.truncate(int(progress["metrics_records"]))
      log(
        f"Resumed from the checkpoint at step {step} in {checkpointer.directory}."
      )
    else:
      if config.resume:
        log(
          f"No checkpoint in {checkpointer.directory}; starting from scratch."
        )
      metrics.truncate(0)
    learning_rate = optimizers.initial_learning_rate(
      config.optimizer, config.learning_rate
    )
    bar = progress_lib.ProgressBar(
      config.iters,
      min(step, config.iters),
      "tok",
      enabled=config.progress and is_writer,
      verbose=is_writer,
    )

    def evaluate() -> None:
      train_loss = float(estimate_loss(state, train_data, _EVAL_TRAIN_STREAM))
      val_loss = float(estimate_loss(state, val_data, _EVAL_VAL_STREAM))
      metrics.append(
        {
          "step": step,
          "train_loss": train_loss,
          "val_loss": val_loss,
          "lr": learning_rate,
        }
      )
      bar.write(
        f"step {step}: train loss {train_loss:.4f}, val loss {val_loss:.4f}"
      )
      bar.restart_clock()

    def save() -> None:
      if not train_state_lib.all_finite(state.params):
        raise step_metrics_lib.NonFiniteLossError(
          step, float("nan"), what="The parameters hold NaN or infinite values"
        )
      checkpointer.save(
        step, state, {"step": step, "metrics_records": len(metrics)}
      )

    step_metrics = step_metrics_lib.StepMetrics(first_step=step + 1)
    tokens_per_step = config.batch_size * block_size
    try:
      if step == 0:
        evaluate()
      while step < config.iters:
        state, step_values = train_step(state, train_data)
        step += 1
        step_metrics.add(step_values)
        eval_now = step % config.eval_interval == 0 or step == config.iters
        save_now = step % config.checkpoint_every == 0 or step == config.iters
        if step_metrics.num_pending >= _LOG_EVERY_STEPS or eval_now or save_now:
          flushed = step_metrics.num_pending
          losses = step_metrics.flush()["loss"]
          bar.update(flushed, flushed * tokens_per_step, float(losses[-1]))
        if eval_now:
          evaluate()
        if save_now:
          save()
    finally:
      bar.close()

    sample = ""
    if config.sample_tokens:
      model = train_state_lib.merge_model(definition, state)
      tokens = model_lib.generate(
        model,
        train_state_lib.step_key(state, _SAMPLE_STREAM),
        prompt_ids,
        config.sample_tokens,
        config.temperature,
      )
      sample = corpus.decode(np.asarray(jax.device_get(tokens))[0])
      log(f"--- sample ({config.sample_tokens} characters) ---\n{sample}")
      if is_writer:
        (out_dir / "sample.txt").write_text(sample, encoding="utf-8")
  return TrainResult(
    history=metrics.records, sample=sample, state=state, out_dir=out_dir
  )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """Parses the command line of ``python -m examples.mingpt.train``."""
  parser = argparse.ArgumentParser(
    prog="python -m examples.mingpt.train",
    description="Train the EXAdam paper's character-level MinGPT.",
  )
  cli.add_training_arguments(parser, presets=tuple(TRAINING_PRESETS))
  parser.add_argument(
    "--iters", type=cli.positive_int, help="training iterations (paper: 5000)"
  )
  parser.add_argument(
    "--eval-interval",
    type=cli.positive_int,
    help="iterations between evaluations (paper: 500)",
  )
  parser.add_argument(
    "--eval-iters",
    type=cli.positive_int,
    help="random batches per split in an evaluation (paper: 200)",
  )
  parser.add_argument(
    "--checkpoint-every",
    type=cli.positive_int,
    help="iterations between checkpoints (default: the preset's, 500)",
  )
  parser.add_argument(
    "--sample-tokens",
    type=cli.non_negative_int,
    help="characters to generate at the end (default: the preset's)",
  )
  parser.add_argument(
    "--temperature",
    type=cli.positive_float,
    default=1.0,
    help="sampling temperature (default: %(default)s)",
  )
  parser.add_argument(
    "--prompt", help="text the sample continues (default: a newline)"
  )
  parser.add_argument(
    "--text",
    metavar="FILE",
    help="train on this UTF-8 text instead of tiny Shakespeare",
  )
  return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> GPTTrainConfig:
  """The run configuration the parsed command line asks for."""
  switches = cli.exadam_switches(args)
  return GPTTrainConfig.for_preset(
    args.preset,
    optimizer=args.optimizer,
    weight_decay=args.weight_decay,
    cross_moment_debiasing=switches.cross_moment_debiasing,
    gradient_acceleration=switches.gradient_acceleration,
    dynamic_step_size=switches.dynamic_step_size,
    temperature=args.temperature,
    prompt=args.prompt,
    seed=args.seed,
    dtype=args.dtype,
    data_dir=args.data_dir,
    text_file=args.text,
    download=not args.no_download,
    out_dir=args.out_dir,
    resume=args.resume,
    keep_checkpoints=args.keep_checkpoints,
    num_devices=args.num_devices,
    progress=not args.no_progress,
    **cli.given(
      args,
      {
        "lr": "learning_rate",
        "iters": "iters",
        "batch_size": "batch_size",
        "eval_interval": "eval_interval",
        "eval_iters": "eval_iters",
        "checkpoint_every": "checkpoint_every",
        "sample_tokens": "sample_tokens",
      },
    ),
  )


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line; returns the process exit status.

  Args:
    argv: The arguments (without the program name); None reads ``sys.argv``.

  Returns:
    0 on success, 1 if training diverged (non-finite loss).
  """
  args = parse_args(argv)
  cli.maybe_initialize_distributed(args)
  try:
    train(config_from_args(args))
  except step_metrics_lib.NonFiniteLossError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
