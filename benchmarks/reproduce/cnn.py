"""Experiment 1 (CIFAR-10 CNN) as batched runs of one optimizer.

The protocol is that of :mod:`examples.cifar10.train`, whose functions this
module calls: each run is initialised from its seed, epoch ``e`` visits the
training images in :func:`~examples.cifar10.train.epoch_order`, every step is
:func:`~examples.cifar10.train.train_step`, and after each epoch the mean
validation loss and accuracy (:func:`~examples.cifar10.train.eval_step` over
:func:`~examples.cifar10.train.padded_batches`) drive PyTorch's
``ReduceLROnPlateau`` (one scheduler per run, on the host, made by
:func:`~examples.cifar10.train.plateau_scheduler` and stepped by
:func:`~examples.cifar10.train.step_plateau`); after the last epoch the test
set is evaluated. Each run's records are the trainer's
(:func:`~examples.cifar10.train.epoch_record`,
:func:`~examples.cifar10.train.final_record`) with the run's identity added.

Unlike the trainer, the runs of an arm are stacked along a leading run axis
and trained by vmapped calls (one per epoch, a ``lax.scan`` over its steps,
or one per step; see :mod:`benchmarks.reproduce.runs`). Step by step the
arithmetic is the trainer's; whole trajectories agree only up to
floating-point noise, because XLA compiles a step differently inside a loop
or a ``vmap``, and such differences grow over training.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.reproduce import runs as runs_lib
from benchmarks.reproduce.presets import CNN
from benchmarks.reproduce.runs import RunSpec
from examples.cifar10 import configs
from examples.cifar10 import data as data_lib
from examples.cifar10 import model as model_lib
from examples.cifar10 import train as cnn_train
from examples.common import plateau, sharding


def load(protocol: configs.Config, data_dir: str | None, download: bool):
  """CIFAR-10 split and limited as ``protocol`` asks."""
  dataset = cnn_train.load(protocol, data_dir, download)
  return data_lib.limit_train_images(dataset, protocol.max_train_images)


def _train_steps(
  graphdef,
  update,
  augment: bool,
  num_steps: int,
  scan: bool,
  state,
  batch_indices: jax.Array,
  images: jax.Array,
  labels: jax.Array,
):
  """One run's steps on ``batch_indices`` ``(num_steps, B)``.

  Returns:
    The state and the steps' ``(losses, correct counts)``.
  """

  def step(state, indices, images, labels):
    state, metrics = cnn_train.train_step(
      state,
      images[indices],
      labels[indices],
      graphdef=graphdef,
      update=update,
      augment=augment,
    )
    return state, (metrics["loss"], metrics["correct"])

  return runs_lib.steps(step, num_steps, scan)(
    state, batch_indices, images, labels
  )


def _evaluate(graphdef, state, indices, weights, images, labels):
  """One run's summed loss and correct count over padded batches."""

  def add_batch(totals, batch):
    batch_indices, batch_weights = batch
    sums = cnn_train.eval_step(
      state,
      images[batch_indices],
      labels[batch_indices],
      batch_weights,
      graphdef=graphdef,
    )
    return (totals[0] + sums[0], totals[1] + sums[1]), None

  zero = jnp.zeros((), jnp.float32)
  totals, _ = jax.lax.scan(add_batch, (zero, zero), (indices, weights))
  return totals


@functools.lru_cache(maxsize=64)
def compiled_train_steps(
  graphdef, update, augment: bool, num_steps: int, scan: bool
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
        _train_steps, graphdef, update, augment, num_steps, scan
      ),
      in_axes=(0, 0, None, None),
    ),
    donate_argnums=0,
  )


@functools.lru_cache(maxsize=64)
def compiled_evaluation(graphdef) -> Any:
  """The jitted, run-batched evaluation (shared by every optimizer).

  Returns:
    ``evaluate(state, indices, weights, images, labels)`` returning per-run
    summed losses and correct counts.
  """
  return jax.jit(
    jax.vmap(
      functools.partial(_evaluate, graphdef),
      in_axes=(0, None, None, None, None),
    )
  )


class CNNRunGroup:
  """The runs of one arm in experiment 1, trained epoch by epoch.

  Args:
    runs: Runs of one arm (different seeds and/or learning rates).
    protocol: The training protocol, a CNN trainer configuration.
    dataset: The data, as :func:`load` returns it.
    mesh: A one-device mesh holding every array.
    execution: How runs and steps are cut into calls; None picks
      :meth:`benchmarks.reproduce.runs.Execution.for_platform`.

  Raises:
    ValueError: If the runs do not share one arm, or the training set is
      smaller than one batch.
  """

  experiment = CNN

  def __init__(
    self,
    runs: Sequence[RunSpec],
    protocol: configs.Config,
    dataset: data_lib.Cifar10,
    mesh: jax.sharding.Mesh,
    execution: runs_lib.Execution | None = None,
  ):
    self.protocol = protocol
    self.num_train = len(dataset.train_images)
    self.steps_per_epoch = data_lib.steps_per_epoch(
      self.num_train, protocol.batch_size
    )
    if execution is None:
      execution = runs_lib.Execution.for_platform(mesh.devices.flat[0].platform)
    self.execution = execution
    self.batched = runs_lib.BatchedRuns(
      lambda rngs: model_lib.CNN(protocol.model, rngs=rngs),
      runs,
      mesh,
      execution.run_batch,
      protocol.learning_rate_schedule(protocol.epochs * self.steps_per_epoch),
    )
    self.runs = self.batched.runs
    self._steps_per_call = self.steps_per_epoch if execution.scan_chunks else 1
    self._train_steps = compiled_train_steps(
      self.batched.graphdef,
      self.batched.update,
      protocol.augment,
      self._steps_per_call,
      execution.scan_chunks,
    )
    self._evaluate = compiled_evaluation(self.batched.graphdef)
    self._data = sharding.replicate(mesh, dataset)
    # Validation and test batches padded to one count: one compilation.
    num_batches = max(
      -(-len(images) // protocol.batch_size)
      for images in (dataset.val_images, dataset.test_images)
    )
    self._eval_batches = {
      split: sharding.replicate(
        mesh,
        cnn_train.padded_batches(len(images), protocol.batch_size, num_batches),
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
      cnn_train.plateau_scheduler(protocol, float(rate))
      for rate in self.batched.learning_rates()
    ]
    self.chunks_done = 0

  @property
  def num_chunks(self) -> int:
    """Epochs in the protocol."""
    return self.protocol.epochs

  @property
  def position(self) -> int:
    """Training steps done by every run."""
    return self.chunks_done * self.steps_per_epoch

  def host_state(self) -> dict[str, Any]:
    """The progress that lives on the host, for a checkpoint."""
    return {
      "chunks_done": self.chunks_done,
      "schedulers": [scheduler.state_dict() for scheduler in self.schedulers],
    }

  def load_host_state(self, state: dict[str, Any]) -> None:
    """Restores what :meth:`host_state` returned."""
    self.chunks_done = int(state["chunks_done"])
    self.schedulers = [
      plateau.ReduceLROnPlateau.from_state_dict(saved)
      for saved in state["schedulers"]
    ]

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
        cnn_train.epoch_order(
          run.seed, epoch, self.num_train, self.protocol.batch_size
        )
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
    losses, correct = runs_lib.join_calls(calls)
    val_loss, val_acc = self._evaluate_split("val")
    self.chunks_done += 1
    examples = self.steps_per_epoch * self.protocol.batch_size
    schedule_factor = self.batched.schedule.at(self.position - 1)
    records = [
      {
        **run.identity(),
        "experiment": CNN,
        "kind": "eval",
        **cnn_train.epoch_record(
          self.chunks_done,
          self.steps_per_epoch,
          (
            float(np.mean(losses[index], dtype=np.float64)),
            float(np.sum(correct[index])) / examples,
          ),
          (float(val_loss[index]), float(val_acc[index])),
          float(used_rates[index]) * schedule_factor,
        ),
      }
      for index, run in enumerate(self.runs)
    ]
    lowered = [
      cnn_train.step_plateau(scheduler, record["val_loss"])
      for scheduler, record in zip(self.schedulers, records, strict=True)
    ]
    if any(lowered):
      self.batched.set_learning_rates(
        [scheduler.learning_rate for scheduler in self.schedulers]
      )
    return records

  def finish(self) -> list[dict[str, Any]]:
    """Evaluates the test set; one ``final`` record per run."""
    test_loss, test_acc = self._evaluate_split("test")
    return [
      {
        **run.identity(),
        "experiment": CNN,
        "kind": "final",
        **cnn_train.final_record(
          self.chunks_done,
          self.steps_per_epoch,
          (float(test_loss[index]), float(test_acc[index])),
        ),
      }
      for index, run in enumerate(self.runs)
    ]
