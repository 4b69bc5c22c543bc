"""Fully sharded data parallelism (``--fsdp``) on the eight test devices."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax
import pytest

from examples.cifar10 import configs as cnn_configs
from examples.cifar10 import train as cnn_train
from examples.common import sharding
from examples.mingpt import configs
from examples.mingpt import train as gpt_train
from examples.mingpt.model import GPTConfig

# Each test starts subprocesses or trains for several seconds.
pytestmark = pytest.mark.slow


def _train(text_file, out_dir, fsdp: bool):
  return gpt_train.train(
    dataclasses.replace(
      configs.PRESETS["tiny"],
      model=GPTConfig(block_size=16, n_embd=16, n_head=2, n_layer=1),
      text=str(text_file),
      out_dir=str(out_dir),
      iters=4,
      batch_size=8,
      eval_interval=2,
      eval_iters=2,
      checkpoint_every=2,
      sample_tokens=0,
      fsdp=fsdp,
      progress=False,
    )
  )


def test_fsdp_trains_like_data_parallelism_on_a_quarter_of_the_memory(
  tmp_path,
):
  text_file = tmp_path / "text.txt"
  text_file.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
  plain = _train(text_file, tmp_path / "plain", fsdp=False)
  sharded = _train(text_file, tmp_path / "fsdp", fsdp=True)
  for record, reference in zip(sharded.history, plain.history, strict=True):
    for name in ("train_loss", "val_loss"):
      np.testing.assert_allclose(record[name], reference[name], rtol=1e-5)
  params = jax.tree.leaves(sharded.state.params)
  assert (
    sum(not p.sharding.is_fully_replicated for p in params) >= len(params) - 2
  )
  for name in ("mu", "nu"):
    moments = jax.tree.leaves(optax.tree.get(sharded.state.opt_state, name))
    assert [m.sharding for m in moments] == [p.sharding for p in params]
  state = lambda result: (result.state.params, result.state.opt_state)  # noqa: E731
  assert sharding.bytes_per_device(state(sharded)) < (
    sharding.bytes_per_device(state(plain)) / 4
  )


def _train_cnn(cifar_dir, out_dir, fsdp: bool):
  return cnn_train.train(
    dataclasses.replace(
      cnn_configs.PRESETS["tiny"],
      data_dir=str(cifar_dir),
      out_dir=str(out_dir),
      epochs=1,
      batch_size=16,
      val_size=16,
      fsdp=fsdp,
      progress=False,
    )
  )


def test_cnn_fsdp_trains_like_data_parallelism(cifar_dir, tmp_path):
  plain = _train_cnn(cifar_dir, tmp_path / "plain", fsdp=False)
  sharded = _train_cnn(cifar_dir, tmp_path / "fsdp", fsdp=True)
  # Sharded gradients are summed in another order; EXAdam's sign-like first
  # steps amplify that rounding, so the evaluations after the updates agree
  # to about 2e-5 while the training losses of the steps agree to 1e-5.
  for record, reference in zip(sharded.history, plain.history, strict=True):
    np.testing.assert_allclose(
      record["train_loss"], reference["train_loss"], rtol=1e-5
    )
    np.testing.assert_allclose(
      record["val_loss"], reference["val_loss"], rtol=1e-4
    )
  np.testing.assert_allclose(
    sharded.final["test_loss"], plain.final["test_loss"], rtol=1e-4
  )
  params = jax.tree.leaves(sharded.state.params)
  assert any(not p.sharding.is_fully_replicated for p in params)
  for name in ("mu", "nu"):
    moments = jax.tree.leaves(optax.tree.get(sharded.state.opt_state, name))
    assert [m.sharding for m in moments] == [p.sharding for p in params]
