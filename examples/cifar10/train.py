"""Trains the EXAdam paper's CIFAR-10 CNN (section 3.1).

Usage::

  python -m examples.cifar10.train --preset tiny --optimizer exadam \\
      --data-dir DATA_DIR

Protocol (the paper's): 40,000 training and 10,000 validation images (the
last 10,000 of the official training set), batch 128, learning rate 1e-4, 100
epochs, cross-entropy. Training images are randomly flipped and warped
(rotation, translation, zoom) on the device inside the jitted step; validation
and test images are not. After each epoch the validation loss drives
PyTorch's ``ReduceLROnPlateau`` (mode min, factor 0.1, patience 5, threshold
1e-4 relative, min lr 0). After the last epoch the test set is evaluated.

Each epoch visits the training images in the order of a permutation drawn
from ``(seed, epoch)`` and drops the last partial batch (40,000 images at
batch 128: 312 steps, 64 images left out, a different 64 each epoch), so that
every batch has the same shape and splits evenly over the devices. The
augmentation and dropout randomness of step ``t`` derives from ``(seed, t)``.
A run resumed from a checkpoint therefore continues exactly as if it had not
stopped.

The run's folder holds ``config.json``, ``metrics.jsonl`` and
``checkpoints/``. ``metrics.jsonl`` has one record per epoch with ``epoch``,
``step``, ``train_loss`` and ``train_acc`` (running means over the epoch's
training batches, in training mode, as the paper's PyTorch loop computes
them), ``val_loss``, ``val_acc`` and ``lr`` (the learning rate used in that
epoch); then a final record ``{"final": true, "test_loss": ...,
"test_acc": ...}``. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import pathlib
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples.cifar10 import augment as augment_lib
from examples.cifar10 import data as data_lib
from examples.cifar10 import model as model_lib
from examples.common import (
  checkpointing,
  cli,
  optimizers,
  plateau,
  run_config,
  run_dir,
)
from examples.common import metrics as metrics_lib
from examples.common import progress as progress_lib
from examples.common import sharding as sharding_lib
from examples.common import step_metrics as step_metrics_lib
from examples.common import train_state as train_state_lib

_TRAIN_STREAM = 0
_LOG_EVERY_STEPS = 20

TRAINING_PRESETS: dict[str, dict[str, Any]] = {
  "paper": dict(learning_rate=1e-4, epochs=100, batch_size=128),
  "tiny": dict(
    learning_rate=1e-3, epochs=2, batch_size=128, max_train_images=4096
  ),
}
"""Training defaults of each preset; the model sizes are in
:data:`examples.cifar10.model.CNN_PRESETS`. ``paper`` is the paper's protocol;
``tiny`` is a short smoke run of a small network."""

# Settings that may differ when a run is resumed: longer training, other
# places for the data or the run, other reporting.
_RESUMABLE_CHANGES = frozenset(
  {
    "epochs",
    "data_dir",
    "download",
    "out_dir",
    "resume",
    "checkpoint_every",
    "keep_checkpoints",
    "progress",
  }
)


@dataclasses.dataclass(frozen=True)
class CNNTrainConfig:
  """Settings of a CIFAR-10 training run.

  Build one with :meth:`for_preset` to get a preset's training defaults.

  Attributes:
    preset: Model size and training defaults, a key of
      :data:`TRAINING_PRESETS`.
    variant: ``"paper"`` or ``"notebook"`` architecture (see
      :mod:`examples.cifar10.model`).
    optimizer: A name of :data:`examples.common.optimizers.OPTIMIZER_NAMES`.
    learning_rate: The initial learning rate.
    weight_decay: Weight decay; None takes the optimizer's PyTorch default.
    cross_moment_debiasing: EXAdam switch.
    gradient_acceleration: EXAdam switch.
    dynamic_step_size: EXAdam switch.
    epochs: Number of epochs.
    batch_size: Global batch size for training and evaluation (a multiple of
      the number of devices).
    val_size: Training images held out for validation, from the end.
    max_train_images: Train on at most the first N of the remaining
      training images; None uses them all (the paper's 40,000).
    augment: Whether to flip and warp the training images.
    plateau_factor: ``ReduceLROnPlateau`` factor.
    plateau_patience: ``ReduceLROnPlateau`` patience, in epochs.
    checkpoint_every: Epochs between checkpoints (one is also written at the
      end).
    keep_checkpoints: Number of most recent checkpoints kept.
    seed: Random seed.
    dtype: Computation dtype, ``"float32"`` or ``"bfloat16"``.
    data_dir: Data folder holding the CIFAR-10 files.
    download: Whether to download CIFAR-10 if it is not found.
    out_dir: The run folder; None means
      ``runs/cifar10-<preset>-<optimizer>-seed<seed>``.
    resume: Continue the run in ``out_dir`` from its latest checkpoint.
    num_devices: Use the first N devices; None uses all.
    progress: Draw a progress bar.

  Raises:
    ValueError: On construction, if a setting is out of range.
  """

  preset: str = "paper"
  variant: str = "paper"
  optimizer: str = "exadam"
  learning_rate: float = 1e-4
  weight_decay: float | None = None
  cross_moment_debiasing: bool = True
  gradient_acceleration: bool = True
  dynamic_step_size: bool = True
  epochs: int = 100
  batch_size: int = 128
  val_size: int = 10_000
  max_train_images: int | None = None
  augment: bool = True
  plateau_factor: float = 0.1
  plateau_patience: int = 5
  checkpoint_every: int = 1
  keep_checkpoints: int = 3
  seed: int = 1234
  dtype: str = "float32"
  data_dir: str | None = None
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
        "epochs",
        "batch_size",
        "val_size",
        "checkpoint_every",
        "keep_checkpoints",
      ),
    )
    if self.variant not in ("paper", "notebook"):
      raise ValueError(
        f"variant must be 'paper' or 'notebook', got {self.variant!r}."
      )
    if self.max_train_images is not None:
      run_config.check_positive("max_train_images", self.max_train_images)
    if not 0.0 < self.plateau_factor < 1.0:
      raise ValueError(
        f"plateau_factor must lie in (0, 1), got {self.plateau_factor!r}."
      )
    if self.plateau_patience < 0:
      raise ValueError(
        f"plateau_patience must be >= 0, got {self.plateau_patience!r}."
      )

  @classmethod
  def for_preset(
    cls, preset: str = "paper", **overrides: Any
  ) -> CNNTrainConfig:
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
      "runs", f"cifar10-{self.preset}-{self.optimizer}-seed{self.seed}"
    )


@dataclasses.dataclass
class TrainResult:
  """What a finished run returns.

  Attributes:
    history: The per-epoch records of ``metrics.jsonl``, oldest first
      (including those written before a resume).
    final: The final record, with ``test_loss`` and ``test_acc``.
    state: The final :class:`~examples.common.train_state.TrainState`.
    out_dir: The run folder.
  """

  history: list[dict[str, Any]]
  final: dict[str, Any]
  state: train_state_lib.TrainState
  out_dir: pathlib.Path


def train_step(
  definition: train_state_lib.ModelDefinition,
  optimizer_update: optax.TransformUpdateExtraArgsFn,
  augment: bool,
  state: train_state_lib.TrainState,
  images: jax.Array,
  labels: jax.Array,
) -> tuple[train_state_lib.TrainState, dict[str, jax.Array]]:
  """One optimizer update on a batch of uint8 images (jitted by the caller).

  The benchmarks' batched runs (``benchmarks.repro_cnn``) call it too.
  """
  chex.assert_rank(images, 4)
  chex.assert_type([images, labels], [jnp.uint8, jnp.int32])
  chex.assert_equal_shape_prefix([images, labels], 1)
  augment_key, dropout_key = jax.random.split(
    train_state_lib.step_key(state, _TRAIN_STREAM)
  )
  inputs = augment_lib.normalize(images)
  if augment:
    inputs = augment_lib.augment(augment_key, inputs)

  def loss_fn(params):
    model = train_state_lib.merge_for_training(
      definition, params, state.model_state, dropout_key
    )
    logits = model(inputs)
    loss = optax.softmax_cross_entropy_with_integer_labels(
      logits, labels
    ).mean()
    return loss, (logits, train_state_lib.model_state_of(model))

  (loss, (logits, model_state)), grads = jax.value_and_grad(
    loss_fn, has_aux=True
  )(state.params)
  updates, opt_state = optimizer_update(grads, state.opt_state, state.params)
  new_state = train_state_lib.TrainState(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    model_state=model_state,
    opt_state=opt_state,
    key=state.key,
  )
  correct = jnp.sum(jnp.argmax(logits, axis=-1) == labels)
  return new_state, {"loss": loss, "correct": correct}


def _eval_batch(
  definition: train_state_lib.ModelDefinition,
  state: train_state_lib.TrainState,
  images: jax.Array,
  labels: jax.Array,
  weights: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """Summed loss and correct count over a padded batch (padding weighs 0)."""
  chex.assert_equal_shape([labels, weights])
  model = train_state_lib.merge_for_eval(
    definition, state.params, state.model_state
  )
  logits = model(augment_lib.normalize(images))
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return jnp.sum(losses * weights), jnp.sum(correct * weights)


@functools.lru_cache(maxsize=16)
def _compiled_functions(
  definition: train_state_lib.ModelDefinition,
  optimizer_update: optax.TransformUpdateExtraArgsFn,
  augment: bool,
  mesh: jax.sharding.Mesh,
) -> tuple[Any, Any]:
  """The jitted training and evaluation steps, compiled once per setting.

  Runs in one process with the same model, optimizer and mesh (e.g. the
  seeds or learning rates of a benchmark) reuse the compiled functions.
  """
  replicated = sharding_lib.replicated_sharding(mesh)
  jitted_train_step = jax.jit(
    functools.partial(train_step, definition, optimizer_update, augment),
    donate_argnums=0,
    out_shardings=replicated,
  )
  eval_batch = jax.jit(
    functools.partial(_eval_batch, definition), out_shardings=replicated
  )
  return jitted_train_step, eval_batch


def _padded_batches(
  num_examples: int, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Indices and 0/1 weights of consecutive batches covering every example.

  The last batch is padded with example 0 at weight 0.
  """
  for start in range(0, num_examples, batch_size):
    indices = np.arange(start, start + batch_size)
    weights = (indices < num_examples).astype(np.float32)
    yield np.where(weights > 0, indices, 0), weights


def _steps_per_epoch(num_train: int, batch_size: int) -> int:
  steps = num_train // batch_size
  if steps == 0:
    raise ValueError(
      f"The training set has {num_train} images, fewer than one batch of "
      f"{batch_size}; lower --batch-size or --val-size."
    )
  return steps


def train(
  config: CNNTrainConfig, dataset: data_lib.Cifar10 | None = None
) -> TrainResult:
  """Trains the CNN as configured, writing the run folder.

  Args:
    config: The run's settings.
    dataset: The images to use; None loads CIFAR-10 from ``config.data_dir``
      (split with ``config.val_size``).

  Returns:
    The metric history, the final test record and the final state.

  Raises:
    examples.common.step_metrics.NonFiniteLossError: If a training loss is
      NaN or infinite; the checkpoints written before stay.
    FileExistsError: If ``out_dir`` holds a run and ``resume`` is false.
    ValueError: If the settings are inconsistent (e.g. the batch does not
      split over the devices, or resuming with changed settings).
  """
  if dataset is None:
    dataset = data_lib.load_cifar10(
      config.data_dir, download=config.download, val_size=config.val_size
    )
  if config.max_train_images is not None:
    dataset = dataset._replace(
      train_images=dataset.train_images[: config.max_train_images],
      train_labels=dataset.train_labels[: config.max_train_images],
    )
  if not len(dataset.val_images):
    raise ValueError(
      "The CNN protocol needs a validation set for ReduceLROnPlateau; set "
      "--val-size to 1 or more (the paper uses 10000)."
    )
  mesh = sharding_lib.make_data_mesh(config.num_devices)
  sharding_lib.check_batch_size(config.batch_size, mesh)
  batch_size = config.batch_size
  steps_per_epoch = _steps_per_epoch(len(dataset.train_images), batch_size)
  model_config = dataclasses.replace(
    model_lib.CNN_PRESETS[config.preset],
    variant=config.variant,
    dtype=jnp.dtype(config.dtype),
  )
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
    train_state_lib.ModelSpec(model_lib.CNN, model_config),
    optimizer,
    config.seed,
    mesh,
  )
  metrics = metrics_lib.MetricsLog(
    out_dir / metrics_lib.METRICS_FILE_NAME, writable=is_writer
  )
  train_step, eval_batch = _compiled_functions(
    definition, optimizer.update, config.augment, mesh
  )
  rows = sharding_lib.local_rows(mesh, batch_size)
  log = print if is_writer else (lambda *args, **kwargs: None)

  def evaluate(images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean loss and accuracy of the current model over a whole split."""
    sums = []
    for indices, weights in _padded_batches(len(images), batch_size):
      local = indices[rows]
      batch = sharding_lib.put_batch(
        mesh, (images[local], labels[local], weights[rows]), batch_size
      )
      sums.append(eval_batch(state, *batch))
    loss_sum, correct_sum = np.sum(np.asarray(jax.device_get(sums)), axis=0)
    return float(loss_sum) / len(images), float(correct_sum) / len(images)

  with checkpointing.Checkpointer(
    out_dir / run_dir.CHECKPOINT_DIR_NAME, max_to_keep=config.keep_checkpoints
  ) as checkpointer:
    epoch = 0
    scheduler = plateau.ReduceLROnPlateau(
      learning_rate=optimizers.initial_learning_rate(
        config.optimizer, config.learning_rate
      ),
      factor=config.plateau_factor,
      patience=config.plateau_patience,
    )
    if config.resume and checkpointer.latest_step() is not None:
      state, progress = checkpointer.restore(like=state)
      epoch = int(progress["epoch"])
      scheduler = plateau.ReduceLROnPlateau.from_state_dict(progress["plateau"])
      metrics.truncate(int(progress["metrics_records"]))
      log(f"Resumed from the checkpoint after epoch {epoch} in {out_dir}.")
    else:
      if config.resume:
        log(
          f"No checkpoint in {checkpointer.directory}; starting from scratch."
        )
      metrics.truncate(0)

    bar = progress_lib.ProgressBar(
      config.epochs * steps_per_epoch,
      min(epoch, config.epochs) * steps_per_epoch,
      "img",
      enabled=config.progress and is_writer,
      verbose=is_writer,
    )
    step_metrics = step_metrics_lib.StepMetrics(
      first_step=epoch * steps_per_epoch + 1
    )
    try:
      while epoch < config.epochs:
        order = np.random.default_rng([config.seed, epoch]).permutation(
          len(dataset.train_images)
        )
        step_metrics.reset()
        learning_rate = scheduler.learning_rate
        for batch_index in range(steps_per_epoch):
          indices = order[
            batch_index * batch_size : (batch_index + 1) * batch_size
          ]
          local = indices[rows]
          images, labels = sharding_lib.put_batch(
            mesh,
            (dataset.train_images[local], dataset.train_labels[local]),
            batch_size,
          )
          state, step_values = train_step(state, images, labels)
          step_metrics.add(step_values)
          if (
            step_metrics.num_pending >= _LOG_EVERY_STEPS
            or batch_index == steps_per_epoch - 1
          ):
            flushed = step_metrics.num_pending
            losses = step_metrics.flush()["loss"]
            bar.update(
              flushed,
              flushed * batch_size,
              float(losses[-1]),
              epoch=str(epoch + 1),
            )
        sums, count = step_metrics.totals()
        val_loss, val_acc = evaluate(dataset.val_images, dataset.val_labels)
        epoch += 1
        record = {
          "epoch": epoch,
          "step": epoch * steps_per_epoch,
          "train_loss": sums["loss"] / count,
          "train_acc": sums["correct"] / (count * batch_size),
          "val_loss": val_loss,
          "val_acc": val_acc,
          "lr": learning_rate,
        }
        metrics.append(record)
        bar.write(
          f"epoch {epoch}: train loss {record['train_loss']:.4f} acc "
          f"{record['train_acc']:.4f}, val loss {val_loss:.4f} acc "
          f"{val_acc:.4f}, lr {learning_rate:.3g}"
        )
        if scheduler.step(val_loss) != learning_rate:
          state = state._replace(
            opt_state=optimizers.set_learning_rate(
              state.opt_state, scheduler.learning_rate
            )
          )
          bar.write(f"val loss plateaued: lr -> {scheduler.learning_rate:.3g}")
        if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
          if not train_state_lib.all_finite(state.params):
            raise step_metrics_lib.NonFiniteLossError(
              epoch * steps_per_epoch,
              float("nan"),
              what="The parameters hold NaN or infinite values",
            )
          checkpointer.save(
            epoch * steps_per_epoch,
            state,
            {
              "epoch": epoch,
              "step": epoch * steps_per_epoch,
              "plateau": scheduler.state_dict(),
              "metrics_records": len(metrics),
            },
          )
        bar.restart_clock()
    finally:
      bar.close()

    test_loss, test_acc = evaluate(dataset.test_images, dataset.test_labels)
    final = {
      "final": True,
      "epoch": epoch,
      "step": epoch * steps_per_epoch,
      "test_loss": test_loss,
      "test_acc": test_acc,
    }
    metrics.append(final)
    log(f"test loss {test_loss:.4f}, test accuracy {test_acc:.4f}")
  history = [record for record in metrics.records if not record.get("final")]
  return TrainResult(history=history, final=final, state=state, out_dir=out_dir)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """Parses the command line of ``python -m examples.cifar10.train``."""
  parser = argparse.ArgumentParser(
    prog="python -m examples.cifar10.train",
    description="Train the EXAdam paper's CIFAR-10 CNN.",
  )
  cli.add_training_arguments(parser, presets=tuple(TRAINING_PRESETS))
  parser.add_argument(
    "--variant",
    choices=("paper", "notebook"),
    default="paper",
    help="architecture as the paper describes it or as the authors' notebook "
    "computes it (default: %(default)s)",
  )
  parser.add_argument(
    "--epochs", type=cli.positive_int, help="training epochs (paper: 100)"
  )
  parser.add_argument(
    "--val-size",
    type=cli.positive_int,
    default=10_000,
    help="training images held out for validation (default: %(default)s)",
  )
  parser.add_argument(
    "--max-train-images",
    type=cli.positive_int,
    help="train on at most the first N training images (paper: all 40000; "
    "the tiny preset: 4096)",
  )
  parser.add_argument(
    "--no-augment",
    action="store_true",
    help="train without random flips and warps",
  )
  parser.add_argument(
    "--checkpoint-every",
    type=cli.positive_int,
    default=1,
    help="epochs between checkpoints (default: %(default)s)",
  )
  return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> CNNTrainConfig:
  """The run configuration the parsed command line asks for."""
  switches = cli.exadam_switches(args)
  return CNNTrainConfig.for_preset(
    args.preset,
    variant=args.variant,
    optimizer=args.optimizer,
    weight_decay=args.weight_decay,
    cross_moment_debiasing=switches.cross_moment_debiasing,
    gradient_acceleration=switches.gradient_acceleration,
    dynamic_step_size=switches.dynamic_step_size,
    val_size=args.val_size,
    augment=not args.no_augment,
    checkpoint_every=args.checkpoint_every,
    keep_checkpoints=args.keep_checkpoints,
    seed=args.seed,
    dtype=args.dtype,
    data_dir=args.data_dir,
    download=not args.no_download,
    out_dir=args.out_dir,
    resume=args.resume,
    num_devices=args.num_devices,
    progress=not args.no_progress,
    **cli.given(
      args,
      {
        "lr": "learning_rate",
        "epochs": "epochs",
        "batch_size": "batch_size",
        "max_train_images": "max_train_images",
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
