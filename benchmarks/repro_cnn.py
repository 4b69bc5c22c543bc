"""Experiment 1 (CIFAR-10 CNN) as batched runs of one optimizer.

The protocol is that of :mod:`examples.cifar10.train`, step for step:

* every run is initialised by
  :func:`examples.common.train_state.init_train_state` from its seed;
* epoch ``e`` visits the training images in the order
  ``numpy.random.default_rng([seed, e]).permutation(N)`` in batches of
  ``batch_size``, dropping the last partial batch;
* step ``t`` flips and warps its images (:func:`examples.cifar10.augment.augment`)
  and draws its dropout masks from keys split off ``(seed, t)``;
* after each epoch the mean validation loss and accuracy (evaluation mode)
  are computed and drive PyTorch's ``ReduceLROnPlateau`` (one scheduler per
  run, on the host); the training loss and accuracy are running means over
  the epoch's batches in training mode, as the paper's PyTorch loop reports
  them;
* after the last epoch the test set is evaluated.

Unlike the trainer, the runs of an arm are stacked along a leading run axis
and trained by vmapped calls (one per epoch, a ``lax.scan`` over its steps,
or one per step; see :mod:`benchmarks.repro_runs`), and the data may be a
subset (the preset's ``train_size``, ``val_size`` and ``test_size``, taken
from the start of each split). Step by step the arithmetic is the trainer's;
whole trajectories agree only up to floating-point noise, because XLA
compiles a step differently inside a loop or a ``vmap`` (and routes the
gradient of tied maxima in max pooling differently), and such differences
grow over training.
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
from benchmarks.repro_presets import CNN, CNNProtocol
from benchmarks.repro_runs import RunSpec
from examples.cifar10 import augment as augment_lib
from examples.cifar10 import data as data_lib
from examples.cifar10 import model as model_lib
from examples.cifar10 import train as cnn_train
from examples.common import plateau, sharding
from examples.common import train_state as train_state_lib


def _head(array: np.ndarray, size: int | None, what: str) -> np.ndarray:
  if size is None:
    return array
  if not 1 <= size <= len(array):
    raise ValueError(
      f"The protocol asks for {size} {what} images, but the split has "
      f"{len(array)}; use a size between 1 and {len(array)}, or None for all."
    )
  return array[:size]


def subset(
  dataset: data_lib.Cifar10, protocol: CNNProtocol
) -> data_lib.Cifar10:
  """The first ``train_size``/``val_size``/``test_size`` images of each split.

  Args:
    dataset: CIFAR-10 in the paper's split.
    protocol: Supplies the sizes (None keeps a split whole).

  Returns:
    The reduced data set.

  Raises:
    ValueError: If a size exceeds its split.
  """
  return data_lib.Cifar10(
    train_images=_head(dataset.train_images, protocol.train_size, "training"),
    train_labels=_head(dataset.train_labels, protocol.train_size, "training"),
    val_images=_head(dataset.val_images, protocol.val_size, "validation"),
    val_labels=_head(dataset.val_labels, protocol.val_size, "validation"),
    test_images=_head(dataset.test_images, protocol.test_size, "test"),
    test_labels=_head(dataset.test_labels, protocol.test_size, "test"),
  )


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
  if num_batches is None:
    num_batches = needed
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


def epoch_order(
  seed: int, epoch: int, num_train: int, batch_size: int
) -> np.ndarray:
  """The trainer's batches of epoch ``epoch`` (0-based) for ``seed``.

  Returns:
    ``int32`` indices of shape ``(num_train // batch_size, batch_size)``.
  """
  steps = num_train // batch_size
  order = np.random.default_rng([seed, epoch]).permutation(num_train)
  return order[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)


def _train_step(
  definition: train_state_lib.ModelDefinition,
  update: optax.TransformUpdateExtraArgsFn,
  augment: bool,
  state: train_state_lib.TrainState,
  images: jax.Array,
  labels: jax.Array,
) -> tuple[train_state_lib.TrainState, tuple[jax.Array, jax.Array]]:
  """One update of one run on a batch of uint8 images: the trainer's step."""
  state, metrics = cnn_train.train_step(
    definition, update, augment, state, images, labels
  )
  return state, (metrics["loss"], metrics["correct"])


def _train_steps(
  definition: train_state_lib.ModelDefinition,
  update: optax.TransformUpdateExtraArgsFn,
  augment: bool,
  num_steps: int,
  scan: bool,
  state: train_state_lib.TrainState,
  batch_indices: jax.Array,
  images: jax.Array,
  labels: jax.Array,
) -> tuple[train_state_lib.TrainState, tuple[jax.Array, jax.Array]]:
  """One run's steps on ``batch_indices`` ``(num_steps, B)``.

  Returns:
    The state and the steps' ``(losses, correct counts)``.
  """

  def step(state, indices, images, labels):
    return _train_step(
      definition, update, augment, state, images[indices], labels[indices]
    )

  return repro_runs.steps(step, num_steps, scan)(
    state, batch_indices, images, labels
  )


def _evaluate(
  definition: train_state_lib.ModelDefinition,
  state: train_state_lib.TrainState,
  indices: jax.Array,
  weights: jax.Array,
  images: jax.Array,
  labels: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """One run's summed loss and correct count over padded batches."""
  model = train_state_lib.merge_for_eval(
    definition, state.params, state.model_state
  )

  def add_batch(totals, batch):
    batch_indices, batch_weights = batch
    logits = model(augment_lib.normalize(images[batch_indices]))
    batch_labels = labels[batch_indices]
    losses = optax.softmax_cross_entropy_with_integer_labels(
      logits, batch_labels
    )
    correct = (jnp.argmax(logits, axis=-1) == batch_labels).astype(jnp.float32)
    return (
      totals[0] + jnp.sum(losses * batch_weights),
      totals[1] + jnp.sum(correct * batch_weights),
    ), None

  zero = jnp.zeros((), jnp.float32)
  totals, _ = jax.lax.scan(add_batch, (zero, zero), (indices, weights))
  return totals


@functools.lru_cache(maxsize=64)
def compiled_train_steps(
  definition: train_state_lib.ModelDefinition,
  update: optax.TransformUpdateExtraArgsFn,
  augment: bool,
  num_steps: int,
  scan: bool,
) -> Any:
  """The jitted, run-batched training steps, compiled once per setting.

  Returns:
    ``train_steps(state, batch_indices, images, labels)`` with a leading run
    axis on ``state`` (donated) and ``batch_indices`` ``(R, num_steps, B)``,
    returning the state and per-step ``(losses, correct counts)``.
  """
  return jax.jit(
    jax.vmap(
      functools.partial(
        _train_steps, definition, update, augment, num_steps, scan
      ),
      in_axes=(0, 0, None, None),
    ),
    donate_argnums=0,
  )


@functools.lru_cache(maxsize=64)
def compiled_evaluation(definition: train_state_lib.ModelDefinition) -> Any:
  """The jitted, run-batched evaluation (shared by every optimizer).

  Returns:
    ``evaluate(state, indices, weights, images, labels)`` returning per-run
    summed losses and correct counts.
  """
  return jax.jit(
    jax.vmap(
      functools.partial(_evaluate, definition),
      in_axes=(0, None, None, None, None),
    )
  )


class CNNRunGroup:
  """The runs of one arm in experiment 1, trained epoch by epoch.

  Args:
    runs: Runs of one arm (different seeds and/or learning rates).
    protocol: The training protocol.
    dataset: The data, already reduced with :func:`subset`.
    mesh: A one-device mesh holding every array.
    execution: How runs and steps are cut into calls; None picks
      :meth:`benchmarks.repro_runs.Execution.for_platform`.

  Raises:
    ValueError: If the runs do not share one arm, or the training set is
      smaller than one batch.
  """

  experiment = CNN

  def __init__(
    self,
    runs: Sequence[RunSpec],
    protocol: CNNProtocol,
    dataset: data_lib.Cifar10,
    mesh: jax.sharding.Mesh,
    execution: repro_runs.Execution | None = None,
  ):
    self.protocol = protocol
    self.num_train = len(dataset.train_images)
    if self.num_train < protocol.batch_size:
      raise ValueError(
        f"The training set has {self.num_train} images, fewer than one batch "
        f"of {protocol.batch_size}; use a larger train_size or smaller batch."
      )
    self.steps_per_epoch = self.num_train // protocol.batch_size
    if execution is None:
      execution = repro_runs.Execution.for_platform(
        mesh.devices.flat[0].platform
      )
    self.execution = execution
    spec = train_state_lib.ModelSpec(model_lib.CNN, protocol.model_config())
    self.batched = repro_runs.BatchedRuns(spec, runs, mesh, execution.run_batch)
    self.runs = self.batched.runs
    self._steps_per_call = self.steps_per_epoch if execution.scan_chunks else 1
    self._train_steps = compiled_train_steps(
      self.batched.definition,
      self.batched.update,
      protocol.augment,
      self._steps_per_call,
      execution.scan_chunks,
    )
    self._evaluate = compiled_evaluation(self.batched.definition)
    self._data = sharding.replicate(mesh, dataset)
    # Validation and test batches padded to one count: one compilation.
    num_batches = max(
      -(-len(images) // protocol.batch_size)
      for images in (dataset.val_images, dataset.test_images)
    )
    self._eval_batches = {
      split: sharding.replicate(
        mesh, padded_batches(len(images), protocol.batch_size, num_batches)
      )
      for split, images in (
        ("val", dataset.val_images),
        ("test", dataset.test_images),
      )
    }
    self._split_sizes = {
      "val": len(dataset.val_images),
      "test": len(dataset.test_images),
    }
    self.schedulers = [
      plateau.ReduceLROnPlateau(
        learning_rate=float(rate),
        factor=protocol.plateau_factor,
        patience=protocol.plateau_patience,
      )
      for rate in self.batched.learning_rates()
    ]
    self.chunks_done = 0

  @property
  def num_chunks(self) -> int:
    """Epochs in the protocol."""
    return self.protocol.epochs

  def start(self) -> list[dict[str, Any]]:
    """Records before training: none for this experiment."""
    return []

  def _evaluate_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-run mean loss and accuracy over a whole split."""
    indices, weights = self._eval_batches[split]
    images, labels = {
      "val": (self._data.val_images, self._data.val_labels),
      "test": (self._data.test_images, self._data.test_labels),
    }[split]
    loss_sums, correct_sums = self.batched.evaluate(
      self._evaluate, (indices, weights, images, labels)
    )
    size = self._split_sizes[split]
    return loss_sums / size, correct_sums / size

  def run_chunk(self) -> list[dict[str, Any]]:
    """Trains every run for one epoch, then validates and steps the scheduler.

    Returns:
      One record per run with ``epoch``, ``step``, ``train_loss``,
      ``train_acc``, ``val_loss``, ``val_acc`` and ``lr`` (the rate used in
      the epoch); accuracies are fractions.
    """
    epoch = self.chunks_done
    batch_indices = np.stack(
      [
        epoch_order(run.seed, epoch, self.num_train, self.protocol.batch_size)
        for run in self.runs
      ]
    )
    used_rates = self.batched.learning_rates()
    calls = [
      self.batched.step(
        self._train_steps,
        per_run=(batch_indices[:, first : first + self._steps_per_call],),
        shared=(self._data.train_images, self._data.train_labels),
      )
      for first in range(0, self.steps_per_epoch, self._steps_per_call)
    ]
    losses, correct = repro_runs.join_calls(calls)
    val_loss, val_acc = self._evaluate_split("val")
    self.chunks_done += 1
    examples = self.steps_per_epoch * self.protocol.batch_size
    records = []
    for index, run in enumerate(self.runs):
      records.append(
        {
          **run.identity(),
          "experiment": CNN,
          "kind": "eval",
          "epoch": self.chunks_done,
          "step": self.chunks_done * self.steps_per_epoch,
          "train_loss": float(np.mean(losses[index], dtype=np.float64)),
          "train_acc": float(np.sum(correct[index])) / examples,
          "val_loss": float(val_loss[index]),
          "val_acc": float(val_acc[index]),
          "lr": float(used_rates[index]),
        }
      )
    previous = [scheduler.learning_rate for scheduler in self.schedulers]
    new_rates = [
      scheduler.step(record["val_loss"])
      for scheduler, record in zip(self.schedulers, records, strict=True)
    ]
    if new_rates != previous:
      self.batched.set_learning_rates(new_rates)
    return records

  def finish(self) -> list[dict[str, Any]]:
    """Evaluates the test set; one ``final`` record per run."""
    test_loss, test_acc = self._evaluate_split("test")
    return [
      {
        **run.identity(),
        "experiment": CNN,
        "kind": "final",
        "epoch": self.chunks_done,
        "step": self.chunks_done * self.steps_per_epoch,
        "test_loss": float(test_loss[index]),
        "test_acc": float(test_acc[index]),
      }
      for index, run in enumerate(self.runs)
    ]
