"""Trains the EXAdam paper's CIFAR-10 CNN (section 3.1).

Usage::

  python -m examples.cifar10.train --preset tiny --optimizer exadam \\
      --data-dir DATA_DIR

Training images are randomly flipped and warped (rotation, translation,
zoom) on the device inside the jitted step; validation and test images are
not. After each epoch the validation loss drives PyTorch's
``ReduceLROnPlateau``; after the last epoch the test set is evaluated.

Each epoch visits the training images in the order of a permutation drawn
from ``(seed, epoch)`` and drops the last partial batch (40,000 images at
batch 128: 312 steps, 64 images left out, a different 64 each epoch), so that
every batch has the same shape and splits evenly over the devices. The
augmentation and dropout randomness of step ``t`` derives from ``(seed, t)``.
A run resumed from a checkpoint therefore continues exactly as if it had not
stopped, also from the middle of an epoch. Every process of a multi-host run
reads the data set and puts only the rows of each batch that its own devices
hold (:func:`examples.common.sharding.put_batch`).

The run's folder holds ``config.json``, ``metrics.jsonl`` and
``checkpoints/``. ``metrics.jsonl`` has one record per epoch with ``epoch``,
``step``, ``train_loss`` and ``train_acc`` (running means over the epoch's
training batches, in training mode, as the paper's PyTorch loop computes
them), ``val_loss``, ``val_acc``, ``lr`` (the learning rate used in that
epoch) and the throughput; then a final record ``{"final": true,
"test_loss": ..., "test_acc": ...}``. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from examples.cifar10 import augment as augment_lib
from examples.cifar10 import configs
from examples.cifar10 import data as data_lib
from examples.cifar10 import model as model_lib
from examples.common import cli, optimizers, plateau, sharding, training_run
from examples.common import train_state as train_state_lib

TRAIN_STREAM = 0
"""The random stream of augmentation and dropout (see ``step_key``)."""


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
  out_dir: Any


def epoch_order(
  seed: int, epoch: int, num_train: int, batch_size: int
) -> np.ndarray:
  """The batches of epoch ``epoch`` (0-based): ``(steps, batch_size)`` indices.

  A permutation drawn from ``(seed, epoch)``, cut into full batches; the last
  partial batch is dropped.
  """
  steps = num_train // batch_size
  order = np.random.default_rng([seed, epoch]).permutation(num_train)
  return order[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)


def padded_batches(
  num_examples: int, batch_size: int, num_batches: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Indices and 0/1 weights of batches covering every example once.

  Args:
    num_examples: Size of the split.
    batch_size: Examples per batch.
    num_batches: Pad to this many batches (at least the
      ``ceil(num_examples / batch_size)`` needed); None pads no further.

  Returns:
    ``(indices, weights)``, both ``(num_batches, batch_size)``; padding
    entries point at example 0 with weight 0.

  Raises:
    ValueError: If ``num_batches`` is too small to cover the split.
  """
  needed = -(-num_examples // batch_size)
  num_batches = needed if num_batches is None else num_batches
  if num_batches < needed:
    raise ValueError(
      f"{num_batches} batches of {batch_size} cannot cover {num_examples} "
      f"examples; {needed} are needed."
    )
  flat = np.arange(num_batches * batch_size)
  weights = (flat < num_examples).astype(np.float32)
  indices = np.where(weights > 0, flat, 0).astype(np.int32)
  return (
    indices.reshape(num_batches, batch_size),
    weights.reshape(num_batches, batch_size),
  )


def train_step(
  state: train_state_lib.TrainState,
  images: jax.Array,
  labels: jax.Array,
  *,
  graphdef: nnx.GraphDef,
  update: optax.TransformUpdateExtraArgsFn,
  augment: bool,
) -> tuple[train_state_lib.TrainState, dict[str, jax.Array]]:
  """One optimizer update on a batch of uint8 images (jitted by the caller)."""
  augment_key, dropout_key = jax.random.split(
    train_state_lib.step_key(state, TRAIN_STREAM)
  )
  inputs = augment_lib.normalize(images)
  if augment:
    inputs = augment_lib.augment(augment_key, inputs)

  def batch_loss(params):
    # Copies of the batch statistics, made in this trace so that the forward
    # pass may update them.
    model = nnx.merge(graphdef, params, state.model_state, copy=True)
    logits = model(inputs, train=True, rngs=nnx.Rngs(dropout=dropout_key))
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return losses.mean(), (logits, nnx.state(model, nnx.BatchStat))

  (loss, (logits, model_state)), grads = jax.value_and_grad(
    batch_loss, has_aux=True
  )(state.params)
  updates, opt_state = update(grads, state.opt_state, state.params)
  new_state = state._replace(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    model_state=model_state,
    opt_state=opt_state,
  )
  correct = jnp.sum(jnp.argmax(logits, axis=-1) == labels)
  return new_state, {"loss": loss, "correct": correct}


def eval_step(
  state: train_state_lib.TrainState,
  images: jax.Array,
  labels: jax.Array,
  weights: jax.Array,
  *,
  graphdef: nnx.GraphDef,
) -> tuple[jax.Array, jax.Array]:
  """Summed loss and correct count over a padded batch (padding weighs 0)."""
  model = nnx.merge(graphdef, state.params, state.model_state)
  logits = model(augment_lib.normalize(images))
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return jnp.sum(losses * weights), jnp.sum(correct * weights)


def evaluate_split(
  eval_fn: Any,
  state: train_state_lib.TrainState,
  mesh: jax.sharding.Mesh,
  rows: np.ndarray,
  images: np.ndarray,
  labels: np.ndarray,
  batch_size: int,
) -> tuple[float, float]:
  """Mean loss and accuracy of ``eval_fn`` over a whole split.

  Each process feeds its ``rows`` of every padded global batch.
  """
  sums = []
  for indices, weights in zip(
    *padded_batches(len(images), batch_size), strict=True
  ):
    local = indices[rows]
    batch = (images[local], labels[local], weights[rows])
    sums.append(eval_fn(state, *sharding.put_batch(mesh, batch, batch_size)))
  loss_sum, correct_sum = np.sum(jax.device_get(sums), axis=0)
  return float(loss_sum) / len(images), float(correct_sum) / len(images)


def load(
  config: configs.Config, data_dir: str | None, download: bool
) -> data_lib.Cifar10:
  """CIFAR-10 from ``data_dir``, split with ``config.val_size``."""
  return data_lib.load_cifar10(
    data_dir,
    download=download,
    val_size=config.val_size,
    verify=config.verify_data,
  )


def jitted_steps(
  config: configs.Config,
  graphdef: nnx.GraphDef,
  update: optax.TransformUpdateExtraArgsFn,
) -> tuple[Any, Any]:
  """The jitted :func:`train_step` (donating the state) and :func:`eval_step`.

  Returns:
    ``step_fn(state, images, labels)`` and ``eval_fn(state, images, labels,
    weights)``.
  """
  step_fn = jax.jit(
    functools.partial(
      train_step, graphdef=graphdef, update=update, augment=config.augment
    ),
    donate_argnums=0,
  )
  return step_fn, jax.jit(functools.partial(eval_step, graphdef=graphdef))


def put_batches(
  mesh: jax.sharding.Mesh,
  rows: np.ndarray,
  dataset: data_lib.Cifar10,
  order: np.ndarray,
  batch_size: int,
) -> Iterator[tuple[jax.Array, jax.Array]]:
  """The training batches of ``order`` (a global batch of indices a row).

  Each batch is put on the devices when it is needed; each process puts its
  ``rows`` of it (:func:`examples.common.sharding.put_batch`).
  """
  for indices in order:
    local = indices[rows]
    yield sharding.put_batch(
      mesh,
      (dataset.train_images[local], dataset.train_labels[local]),
      batch_size,
    )


def train_epoch(
  run: training_run.TrainingRun,
  step_fn: Any,
  state: train_state_lib.TrainState,
  batches: Iterable[tuple[jax.Array, jax.Array]],
) -> tuple[train_state_lib.TrainState, int]:
  """Trains on ``batches`` until they run out or a stop is requested.

  Returns:
    The state and the number of batches trained on.
  """
  done = 0
  for images, labels in batches:
    state, metrics = step_fn(state, images, labels)
    run.log_step(metrics)
    done += 1
    if run.stop_requested:
      break
  return state, done


def lower_rate_on_plateau(
  run: training_run.TrainingRun,
  state: train_state_lib.TrainState,
  scheduler: plateau.ReduceLROnPlateau,
  val_loss: float,
) -> train_state_lib.TrainState:
  """Steps ``scheduler`` on an epoch's validation loss; sets a lowered rate."""
  if not step_plateau(scheduler, val_loss):
    return state
  run.print(f"val loss plateaued: lr -> {scheduler.learning_rate:.3g}")
  return state._replace(
    opt_state=optimizers.set_learning_rate(
      state.opt_state, scheduler.learning_rate
    )
  )


# What an epoch writes and how it steps the plateau scheduler, shared with
# benchmarks.reproduce.cnn, which trains many runs at once.


def plateau_scheduler(
  config: configs.Config, learning_rate: float
) -> plateau.ReduceLROnPlateau:
  """A run's ``ReduceLROnPlateau``, starting at ``learning_rate``."""
  return plateau.ReduceLROnPlateau(
    learning_rate=learning_rate,
    factor=config.plateau_factor,
    patience=config.plateau_patience,
  )


def step_plateau(scheduler: plateau.ReduceLROnPlateau, val_loss: float) -> bool:
  """Steps ``scheduler`` on an epoch's validation loss; whether the rate fell."""
  learning_rate = scheduler.learning_rate
  return scheduler.step(val_loss) != learning_rate


def epoch_record(
  epoch: int,
  steps_per_epoch: int,
  train: tuple[float, float],
  val: tuple[float, float],
  learning_rate: float,
) -> dict[str, Any]:
  """The record of an epoch.

  Args:
    epoch: The epochs done (1 after the first).
    steps_per_epoch: Training steps per epoch.
    train: The epoch's mean training loss and accuracy.
    val: The validation loss and accuracy after it.
    learning_rate: The rate of the epoch's last step.

  Returns:
    ``epoch``, ``step``, ``train_loss``, ``train_acc``, ``val_loss``,
    ``val_acc`` and ``lr``.
  """
  return {
    "epoch": epoch,
    "step": epoch * steps_per_epoch,
    "train_loss": train[0],
    "train_acc": train[1],
    "val_loss": val[0],
    "val_acc": val[1],
    "lr": learning_rate,
  }


def final_record(
  epoch: int, steps_per_epoch: int, test: tuple[float, float]
) -> dict[str, Any]:
  """The fields of the final record: ``epoch``, ``step``, ``test_loss`` and
  ``test_acc`` (the test loss and accuracy in ``test``)."""
  return {
    "epoch": epoch,
    "step": epoch * steps_per_epoch,
    "test_loss": test[0],
    "test_acc": test[1],
  }


def train(
  config: configs.Config, dataset: data_lib.Cifar10 | None = None
) -> TrainResult:
  """Trains the CNN as configured, writing the run folder.

  Args:
    config: The run's settings.
    dataset: The images to use; None loads CIFAR-10 from ``config.data_dir``
      (split with ``config.val_size``).

  Returns:
    The metric history, the final test record and the final state.

  Raises:
    examples.common.training_run.NonFiniteLossError: If a training loss is
      NaN or infinite; the checkpoints written before stay.
    examples.common.training_run.RunStopped: After SIGTERM or Ctrl-C, once a
      checkpoint at the current step is written.
    FileExistsError: If the run folder holds a run and ``resume`` is false.
    ValueError: If the settings are inconsistent (the batch does not split
      over the devices, no validation set, resuming with other settings).
  """
  if dataset is None:
    dataset = load(config, config.data_dir, config.download)
  dataset = data_lib.limit_train_images(dataset, config.max_train_images)
  mesh = sharding.make_data_mesh(config.num_devices)
  batch_size = config.batch_size
  sharding.check_batch_size(batch_size, mesh)
  num_train = len(dataset.train_images)
  steps_per_epoch = data_lib.steps_per_epoch(num_train, batch_size)
  schedule = config.learning_rate_schedule(config.epochs * steps_per_epoch)
  optimizer = optimizers.make_optimizer(
    config.optimizer,
    config.lr,
    weight_decay=config.weight_decay,
    switches=config.switches,
    schedule=schedule,
  )
  graphdef, state = train_state_lib.init_train_state(
    lambda rngs: model_lib.CNN(config.model, rngs=rngs),
    optimizer,
    config.seed,
    mesh,
    fsdp=config.fsdp,
  )
  step_fn, eval_fn = jitted_steps(config, graphdef, optimizer.update)
  rows = sharding.local_rows(mesh, batch_size)  # this process's share
  learning_rate = optimizers.initial_learning_rate(config.optimizer, config.lr)

  def evaluate(images, labels) -> tuple[float, float]:
    return evaluate_split(
      eval_fn, state, mesh, rows, images, labels, batch_size
    )

  with training_run.TrainingRun(
    config,
    "cifar10",
    total_steps=config.epochs * steps_per_epoch,
    unit="images",
    examples_per_step=batch_size,
  ) as run:
    state, progress = run.restore(state)
    epoch, batch = progress.get("epoch", 0), progress.get("batch", 0)
    scheduler = plateau_scheduler(config, learning_rate)
    if progress:
      scheduler = plateau.ReduceLROnPlateau.from_state_dict(progress["plateau"])

    def save() -> None:
      run.save(
        epoch * steps_per_epoch + batch,
        state,
        {"epoch": epoch, "batch": batch, "plateau": scheduler.state_dict()},
      )

    while epoch < config.epochs:
      order = epoch_order(config.seed, epoch, num_train, batch_size)
      batches = put_batches(mesh, rows, dataset, order[batch:], batch_size)
      state, done = train_epoch(run, step_fn, state, batches)
      batch += done
      if run.stop_requested:  # SIGTERM or Ctrl-C: save here and end
        save()
        break
      means = run.running_means()
      train_loss_acc = (means["loss"], means["correct"] / batch_size)
      val = evaluate(dataset.val_images, dataset.val_labels)
      epoch, batch = epoch + 1, 0
      lr = scheduler.learning_rate * schedule.at(epoch * steps_per_epoch - 1)
      run.record(epoch_record(epoch, steps_per_epoch, train_loss_acc, val, lr))
      state = lower_rate_on_plateau(run, state, scheduler, val[0])
      if run.stop_requested:
        save()
        break
      if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
        save()
    if run.stop_requested:
      raise run.stopped()
    test = evaluate(dataset.test_images, dataset.test_labels)
    final = {"final": True, **final_record(epoch, steps_per_epoch, test)}
    run.record(final)
  history = [record for record in run.records if not record.get("final")]
  return TrainResult(history, final, state, run.out_dir)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs ``python -m examples.cifar10.train``; returns the exit status."""
  return cli.main(
    train,
    configs.PRESETS,
    argv,
    prog="python -m examples.cifar10.train",
    description="Train the EXAdam paper's CIFAR-10 CNN.",
  )


if __name__ == "__main__":
  raise SystemExit(main())
