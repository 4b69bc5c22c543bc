"""Trains the EXAdam paper's CIFAR-10 CNN (section 3.1).

Run ``python -m examples.cifar10.train --preset tiny --data-dir DATA_DIR``. All
randomness derives from the seed: a resumed run continues exactly."""

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
  """A finished run: epoch ``history`` (``metrics.jsonl``, resumes included),
  the ``final`` record (test metrics), final ``state`` and run ``out_dir``."""

  history: list[dict[str, Any]]
  final: dict[str, Any]
  state: train_state_lib.TrainState
  out_dir: Any


def epoch_order(
  seed: int, epoch: int, num_train: int, batch_size: int
) -> np.ndarray:
  """Full batches (even over devices) of a ``(seed, epoch)`` permutation."""
  steps = num_train // batch_size
  order = np.random.default_rng([seed, epoch]).permutation(num_train)
  return order[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)


def padded_batches(
  num_examples: int, batch_size: int, num_batches: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Indices and 0/1 weights of ``num_batches`` (None: fewest) covering all."""
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
  shape = (num_batches, batch_size)
  return indices.reshape(shape), weights.reshape(shape)


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
    # Copies of the batch statistics, so that the forward pass may update them.
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
  """Mean loss and accuracy over a split; this process feeds its ``rows``."""
  sums = []
  batches = padded_batches(len(images), batch_size)
  for indices, weights in zip(*batches, strict=True):
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
  """:func:`train_step` (donating the state) and :func:`eval_step`, jitted."""
  step_fn = jax.jit(
    functools.partial(
      train_step, graphdef=graphdef, update=update, augment=config.augment
    ),
    donate_argnums=0,
  )
  return step_fn, jax.jit(functools.partial(eval_step, graphdef=graphdef))


def train_epoch(
  run: training_run.TrainingRun,
  step_fn: Any,
  state: train_state_lib.TrainState,
  dataset: data_lib.Cifar10,
  order: np.ndarray,
  rows: np.ndarray,
  mesh: jax.sharding.Mesh,
) -> tuple[train_state_lib.TrainState, int]:
  """Trains on ``order``'s batches until done or stopped -> (state, batches)."""
  done = 0
  for indices in order:
    local = indices[rows]
    batch = (dataset.train_images[local], dataset.train_labels[local])
    state, metrics = step_fn(
      state, *sharding.put_batch(mesh, batch, len(indices))
    )
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
  rate = scheduler.learning_rate
  run.print(f"val loss plateaued: lr -> {rate:.3g}")
  opt_state = optimizers.set_learning_rate(state.opt_state, rate)
  return state._replace(opt_state=opt_state)


def plateau_scheduler(
  config: configs.Config, learning_rate: float
) -> plateau.ReduceLROnPlateau:
  """A ``ReduceLROnPlateau`` from ``learning_rate`` (benchmarks share these)."""
  return plateau.ReduceLROnPlateau(
    learning_rate=learning_rate,
    factor=config.plateau_factor,
    patience=config.plateau_patience,
  )


def step_plateau(scheduler: plateau.ReduceLROnPlateau, val_loss: float) -> bool:
  """Steps ``scheduler`` on a validation loss; returns whether the rate fell."""
  learning_rate = scheduler.learning_rate
  return scheduler.step(val_loss) != learning_rate


def epoch_record(
  epoch: int,
  steps_per_epoch: int,
  train: tuple[float, float],
  val: tuple[float, float],
  learning_rate: float,
) -> dict[str, Any]:
  """``epoch`` (done), ``step``, ``train_loss``/``train_acc`` (running means, as
  PyTorch), ``val_loss``/``val_acc`` (after it) and ``lr`` (its last step's)."""
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
  """The final record: ``epoch``, ``step``, ``test_loss`` and ``test_acc``."""
  return {
    "epoch": epoch,
    "step": epoch * steps_per_epoch,
    "test_loss": test[0],
    "test_acc": test[1],
  }


def init_state(
  config: configs.Config, mesh: jax.sharding.Mesh, schedule: optax.Schedule
) -> tuple[nnx.GraphDef, train_state_lib.TrainState, Any]:
  """The CNN's graph definition, initial state and optimizer update."""
  optimizer = config.make_optimizer(schedule)
  graphdef, state = train_state_lib.init_train_state(
    lambda rngs: model_lib.CNN(config.model, rngs=rngs),
    optimizer,
    config.seed,
    mesh,
    fsdp=config.fsdp,
  )
  return graphdef, state, optimizer.update


def train(
  config: configs.Config, dataset: data_lib.Cifar10 | None = None
) -> TrainResult:
  """Trains the CNN on ``dataset`` (None: CIFAR-10 from ``config.data_dir``);
  raises ``RunStopped`` once checkpointed after SIGTERM or Ctrl-C, ValueError
  for inconsistent settings (e.g. a batch not splitting over the devices)."""
  if dataset is None:
    dataset = load(config, config.data_dir, config.download)
  dataset = data_lib.limit_train_images(dataset, config.max_train_images)
  mesh = sharding.make_data_mesh(config.num_devices)
  batch_size = config.batch_size
  sharding.check_batch_size(batch_size, mesh)
  num_train = len(dataset.train_images)
  steps_per_epoch = data_lib.steps_per_epoch(num_train, batch_size)
  schedule = config.learning_rate_schedule(config.epochs * steps_per_epoch)
  graphdef, state, update = init_state(config, mesh, schedule)
  step_fn, eval_fn = jitted_steps(config, graphdef, update)
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
      order = epoch_order(config.seed, epoch, num_train, batch_size)[batch:]
      state, done = train_epoch(run, step_fn, state, dataset, order, rows, mesh)
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
  return cli.main(train, configs.PRESETS, argv)


if __name__ == "__main__":
  raise SystemExit(main())
