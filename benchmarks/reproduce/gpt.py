"""Experiment 2 (MinGPT on tiny Shakespeare) as batched runs of one optimizer.

The protocol is that of :mod:`examples.mingpt.train`, whose functions this
module calls: each run is initialised from its seed, every step is
:func:`~examples.mingpt.train.train_step` (a random batch and dropout masks
from ``(seed, t)``), and before training and every ``eval_interval``
iterations :func:`~examples.mingpt.train.eval_step` estimates the loss of
each split with the trainer's key streams.

Unlike the trainer, the runs of an arm are stacked along a leading run axis
and trained by vmapped calls (one per evaluation interval, a ``lax.scan`` over
its iterations, or one per iteration; see :mod:`benchmarks.reproduce.runs`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from benchmarks.reproduce import runs as runs_lib
from benchmarks.reproduce.presets import GPT
from benchmarks.reproduce.runs import RunSpec
from examples.common import sharding
from examples.mingpt import configs
from examples.mingpt import data as data_lib
from examples.mingpt import model as model_lib
from examples.mingpt import train as gpt_train


def load(protocol: configs.Config, data_dir: str | None, download: bool):
  """The text of the protocol: tiny Shakespeare unless it names another."""
  del download  # tiny Shakespeare ships with the examples.
  return data_lib.load_text(
    data_dir, protocol.text, verify=protocol.verify_data
  )


def _train_steps(
  graphdef, update, batch_size, block_size, num_steps, scan, state, data
):
  """One run's ``num_steps`` updates; returns the state and their losses."""

  def step(state, _, data):
    state, metrics = gpt_train.train_step(
      state,
      data,
      graphdef=graphdef,
      update=update,
      batch_size=batch_size,
      block_size=block_size,
    )
    return state, metrics["loss"]

  return runs_lib.steps(step, num_steps, scan)(state, None, data)


@functools.lru_cache(maxsize=64)
def compiled_train_steps(
  graphdef, update, batch_size: int, block_size: int, num_steps: int, scan: bool
) -> Any:
  """The jitted, run-batched training steps.

  Returns:
    ``train_steps(state, train_data)`` with a leading run axis on ``state``
    (donated), returning the state and the losses ``(R, num_steps)``.
  """
  return jax.jit(
    jax.vmap(
      functools.partial(
        _train_steps, graphdef, update, batch_size, block_size, num_steps, scan
      ),
      in_axes=(0, None),
    ),
    donate_argnums=0,
  )


@functools.lru_cache(maxsize=64)
def compiled_evaluation(
  graphdef, batch_size: int, block_size: int, eval_iters: int
) -> Any:
  """The jitted, run-batched evaluation.

  Returns:
    ``evaluate(state, train_data, val_data)`` returning per-run
    ``(train_loss, val_loss)``.
  """
  estimate = functools.partial(
    gpt_train.eval_step,
    graphdef=graphdef,
    batch_size=batch_size,
    block_size=block_size,
    eval_iters=eval_iters,
  )

  def evaluate_run(state, train_data, val_data):
    return (
      estimate(state, train_data, gpt_train.EVAL_TRAIN_STREAM),
      estimate(state, val_data, gpt_train.EVAL_VAL_STREAM),
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
    protocol: The training protocol, a MinGPT trainer configuration.
    corpus: The character corpus.
    mesh: A one-device mesh holding every array.
    execution: How runs and steps are cut into calls; None picks
      :meth:`benchmarks.reproduce.runs.Execution.for_platform`.

  Raises:
    ValueError: If the runs do not share one arm, or a split of the text is
      shorter than one window.
  """

  experiment = GPT

  def __init__(
    self,
    runs: Sequence[RunSpec],
    protocol: configs.Config,
    corpus: data_lib.CharCorpus,
    mesh: jax.sharding.Mesh,
    execution: runs_lib.Execution | None = None,
  ):
    self.protocol = protocol
    self.block_size = protocol.model.block_size
    data_lib.check_corpus(corpus, self.block_size)
    if execution is None:
      execution = runs_lib.Execution.for_platform(mesh.devices.flat[0].platform)
    self.execution = execution
    self.batched = runs_lib.BatchedRuns(
      lambda rngs: model_lib.MinGPT(
        protocol.model, corpus.vocab_size, rngs=rngs
      ),
      runs,
      mesh,
      execution.run_batch,
      protocol.learning_rate_schedule(protocol.iters),
    )
    self.runs = self.batched.runs
    self._evaluate = compiled_evaluation(
      self.batched.graphdef,
      protocol.batch_size,
      self.block_size,
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

  @property
  def position(self) -> int:
    """Training steps done by every run."""
    return self.steps_done

  def host_state(self) -> dict[str, Any]:
    """The progress that lives on the host, for a checkpoint."""
    return {"chunks_done": self.chunks_done, "steps_done": self.steps_done}

  def load_host_state(self, state: dict[str, Any]) -> None:
    """Restores what :meth:`host_state` returned."""
    self.chunks_done = int(state["chunks_done"])
    self.steps_done = int(state["steps_done"])

  def _eval_records(
    self, running_losses: np.ndarray | None
  ) -> list[dict[str, Any]]:
    train_loss, val_loss = self.batched.evaluate(
      self._evaluate, (self._train_data, self._val_data)
    )
    rates = self.batched.learning_rates() * self.batched.schedule.at(
      max(self.steps_done - 1, 0)
    )
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
      self.batched.graphdef,
      self.batched.update,
      self.protocol.batch_size,
      self.block_size,
      steps_per_call,
      self.execution.scan_chunks,
    )
    calls = [
      self.batched.step(train_steps, shared=(self._train_data,))
      for _ in range(num_steps // steps_per_call)
    ]
    self.chunks_done += 1
    self.steps_done += num_steps
    return self._eval_records(runs_lib.join_calls(calls))

  def finish(self) -> list[dict[str, Any]]:
    """Nothing is evaluated after training in this experiment."""
    return []
