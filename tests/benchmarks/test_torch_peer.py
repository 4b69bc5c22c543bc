"""Tests of the PyTorch peers of the training steps (skipped without torch).

The peers copy our models' sizes instead of importing them, so these tests are
what keeps the two sides the same: sizes and parameter counts against the
Flax models, and the augmentation against :mod:`examples.cifar10.augment`.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from benchmarks.throughput import torch_peer
from examples.cifar10 import augment as augment_lib
from examples.cifar10 import configs as cnn_configs
from examples.cifar10 import model as cnn_lib
from examples.mingpt import model as gpt_lib

# torch_peer imports without PyTorch; its tests need it.
torch = pytest.importorskip("torch")

ALL_STEPS = [(m, p) for m in torch_peer.MODELS for p in torch_peer.PRESETS]


def _flax_model(model: str, preset: str) -> nnx.Module:
  if model == "cnn":
    return cnn_lib.CNN(cnn_lib.CNN_PRESETS[preset], rngs=nnx.Rngs(0))
  return gpt_lib.MinGPT(
    gpt_lib.GPT_PRESETS[preset],
    vocab_size=torch_peer.VOCAB_SIZE,
    rngs=nnx.Rngs(0),
  )


def test_available():
  assert torch_peer.available()


@pytest.mark.parametrize(("model", "preset"), ALL_STEPS)
def test_parameter_count_equals_flax_model(model, preset):
  # Shapes only: eval_shape neither initialises nor allocates the paper models.
  abstract = nnx.eval_shape(lambda: _flax_model(model, preset))
  params = jax.tree.leaves(nnx.state(abstract, nnx.Param))
  flax_count = sum(math.prod(leaf.shape) for leaf in params)
  assert torch_peer.parameter_count(model, preset) == flax_count


@pytest.mark.parametrize("preset", torch_peer.PRESETS)
def test_sizes_equal_flax_presets(preset):
  cnn = cnn_lib.CNN_PRESETS[preset]
  peer_cnn = torch_peer.CNN_PRESETS[preset]
  assert cnn.variant == "paper"
  assert cnn.widths == peer_cnn.widths
  assert cnn.dense_features == peer_cnn.dense_features
  assert cnn.dropout_rate == torch_peer.CNN_DROPOUT_RATE
  assert cnn.num_classes == torch_peer.NUM_CLASSES
  # The JAX worker trains the CNN at the paper's batch at both sizes.
  assert peer_cnn.batch_size == cnn_configs.PRESETS["paper"].batch_size
  gpt = gpt_lib.GPT_PRESETS[preset]
  peer_gpt = torch_peer.GPT_PRESETS[preset]
  for name in ("block_size", "n_embd", "n_head", "n_layer"):
    assert getattr(gpt, name) == getattr(peer_gpt, name), name
  assert gpt.dropout_rate == torch_peer.GPT_DROPOUT_RATE


def test_augmentation_constants_match():
  for name in (
    "MAX_ROTATION_DEGREES",
    "MAX_TRANSLATION_FRACTION",
    "SCALE_RANGE",
    "FLIP_PROBABILITY",
    "BLACK",
  ):
    assert getattr(torch_peer, name) == getattr(augment_lib, name), name


def test_warp_matches_apply_affine():
  # A non-square image catches a mix-up of the two axes' scalings.
  batch, height, width = 16, 12, 20
  images = np.random.default_rng(0).integers(
    0, 256, (batch, height, width, 3), dtype=np.uint8
  )
  params = augment_lib.sample_affine_params(
    jax.random.key(1), batch, height, width
  )
  expected = augment_lib.apply_affine(
    augment_lib.normalize(jnp.asarray(images)), params
  )
  nchw = torch.from_numpy(images).permute(0, 3, 1, 2)
  warped = torch_peer._warp(
    torch_peer._normalize(nchw),
    *(torch.from_numpy(np.array(leaf)) for leaf in params),
  )
  np.testing.assert_allclose(
    warped.permute(0, 2, 3, 1).numpy(), np.asarray(expected), atol=1e-4
  )


@pytest.mark.parametrize("model", torch_peer.MODELS)
def test_tiny_step_is_finite_and_deterministic(model):
  first = torch_peer.make_step(model, "tiny", threads=1, seed=3)
  second = torch_peer.make_step(model, "tiny", threads=1, seed=3)
  # Interleaved calls: each step function draws from its own random stream.
  losses = [(first(), second()) for _ in range(2)]
  for a, b in losses:
    assert math.isfinite(a)
    assert a == b


def test_unknown_names_are_rejected():
  with pytest.raises(ValueError, match="model must be one of"):
    torch_peer.examples_per_step("resnet", "tiny")
  with pytest.raises(ValueError, match="preset must be one of"):
    torch_peer.parameter_count("cnn", "huge")
  with pytest.raises(ValueError, match="threads"):
    torch_peer.make_step("cnn", "tiny", threads=0)
