"""The EXAdam paper's CIFAR-10 CNN (section 3.1) in Flax NNX: 3,223,882
parameters by default, 2,448,394 as ``"notebook"``, which omits a conv and
batch norm its authors declare (PyTorch counts them) but never apply."""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Literal

import chex
import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from examples.common import config as config_lib

IMAGE_SHAPE = (32, 32, 3)
"""Shape ``(height, width, channels)`` of one input image."""

CNNVariant = Literal["paper", "notebook"]

_KERNEL_SIZE = (3, 3)
_MAX_BLOCKS = IMAGE_SHAPE[0].bit_length() - 1  # 32 = 2**5: five halvings
# PyTorch's defaults, as in the authors' code.
_BATCH_NORM_MOMENTUM = 0.9  # PyTorch's 0.1 weighs the new statistic
_BATCH_NORM_EPSILON = 1e-5  # PyTorch's running variance is n/(n-1) flax's
# PyTorch's kaiming_uniform_(a=sqrt(5)) for weights: U(+-1/sqrt(fan_in)).
_kaiming_uniform = jax.nn.initializers.variance_scaling(
  1.0 / 3.0, mode="fan_in", distribution="uniform"
)


def _torch_kernel_init(key, shape, dtype=jnp.float32):
  # Drawn as the (fan_in, out) matrix the kernel flattens to: the same
  # numbers (JAX numbers the draws in row-major order), which XLA:CPU
  # compiles in much less time than a draw of the 4-D kernel.
  matrix = _kaiming_uniform(key, (math.prod(shape[:-1]), shape[-1]), dtype)
  return matrix.reshape(shape)


def _torch_layer(layer, in_features, out_features, config, rngs, **kwargs):
  fan_in = in_features * math.prod(kwargs.get("kernel_size", ()))
  bound = 1.0 / math.sqrt(fan_in)

  def bias_init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

  return layer(
    in_features,
    out_features,
    kernel_init=_torch_kernel_init,
    bias_init=bias_init,
    dtype=config.dtype,
    param_dtype=config.param_dtype,
    rngs=rngs,
    **kwargs,
  )


@dataclasses.dataclass(frozen=True)
class CNNConfig:
  """Hyperparameters of :class:`CNN`; a ValueError says which is invalid."""

  widths: tuple[int, ...] = (64, 128, 256)
  """Filters of each convolutional block, one number per block.
  Each block halves the image side, so at most 5 blocks fit a 32x32 image."""
  dense_features: int = 128
  """Width of the dense hidden layer."""
  dropout_rate: float = 0.25
  """Dropout probability after each block, in [0, 1).
  The paper variant also applies it after the dense hidden layer."""
  variant: CNNVariant = "paper"
  """Architecture: the paper's (paper) or the authors' notebook's (notebook).
  The notebook's has one entry convolution a block, no dense-layer dropout."""
  num_classes: int = 10
  """Number of classes, one output logit each."""
  dtype: str = "float32"
  """Computation dtype (bfloat16 for mixed precision)."""
  param_dtype: str = "float32"
  """Dtype of the parameters and batch statistics."""

  def __post_init__(self) -> None:
    if not isinstance(self.widths, tuple | list):
      raise ValueError(
        "widths must be a tuple of filter counts, one per block, "
        f"got {self.widths!r}."
      )
    widths = tuple(self.widths)
    if not widths:
      raise ValueError("widths must name at least one block, got ().")
    for index, width in enumerate(widths):
      config_lib.check_positive(f"widths[{index}]", width)
    if len(widths) > _MAX_BLOCKS:
      raise ValueError(
        f"widths has {len(widths)} blocks, but each block halves the "
        f"{IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} image; use at most "
        f"{_MAX_BLOCKS} blocks."
      )
    config_lib.check_positive("dense_features", self.dense_features)
    config_lib.check_positive("num_classes", self.num_classes)
    rate = self.dropout_rate
    is_number = isinstance(rate, int | float) and not isinstance(rate, bool)
    if not (is_number and 0.0 <= rate < 1.0):
      raise ValueError(f"dropout_rate must be a float in [0, 1), got {rate!r}.")
    variants = typing.get_args(CNNVariant)
    if self.variant not in variants:
      raise ValueError(
        f"variant must be one of {variants}, got {self.variant!r}."
      )
    object.__setattr__(self, "widths", widths)
    for name in ("dtype", "param_dtype"):
      dtype = config_lib.float_dtype(name, getattr(self, name))
      object.__setattr__(self, name, dtype.name)


CNN_PRESETS: dict[str, CNNConfig] = {
  "paper": CNNConfig(),
  "tiny": CNNConfig(widths=(8, 16, 32), dense_features=32),
}
"""Named configurations: the paper's network and a tiny one for CPU runs."""


def materialize(x: jax.Array) -> jax.Array:
  """Returns non-empty ``x`` (and gradient) bit for bit in a new buffer, so that
  XLA:CPU, which drops optimization barriers, cannot fuse a conv input's batch
  norm and ReLU into a slow weight-gradient transpose; elsewhere ``x`` as is."""
  if jax.default_backend() != "cpu":
    return x
  first = lax.bitcast_convert_type(
    lax.stop_gradient(x).reshape(-1)[0].astype(jnp.float32), jnp.uint32
  )
  always = (first | jnp.uint32(1)) != 0
  return lax.cond(always, lambda value: value, jnp.zeros_like, x)


class ConvBatchNorm(nnx.Module):
  """A 3x3 'same' convolution of the :func:`materialize`d input; batch norm."""

  def __init__(
    self, in_features: int, out_features: int, config: CNNConfig, *, rngs
  ):
    self.conv = _torch_layer(
      nnx.Conv,
      in_features,
      out_features,
      config,
      rngs,
      kernel_size=_KERNEL_SIZE,
      padding="SAME",
    )
    self.norm = nnx.BatchNorm(
      out_features,
      momentum=_BATCH_NORM_MOMENTUM,
      epsilon=_BATCH_NORM_EPSILON,
      dtype=config.dtype,
      param_dtype=config.param_dtype,
      rngs=rngs,
    )

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    return self.norm(self.conv(materialize(x)), use_running_average=not train)


class ResidualBlock(nnx.Module):
  """``relu(x + bn(conv(relu(bn(conv(x))))))`` with a constant channel count."""

  def __init__(self, features: int, config: CNNConfig, *, rngs: nnx.Rngs):
    self.first = ConvBatchNorm(features, features, config, rngs=rngs)
    self.second = ConvBatchNorm(features, features, config, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    hidden = jax.nn.relu(self.first(x, train=train))
    return jax.nn.relu(x + self.second(hidden, train=train))


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling, stride 2, of an even-sided NHWC batch: faster on CPU than
  ``nnx.max_pool``; tied maxima (after ReLU, zeros or rare) share gradients."""
  batch, height, width, channels = x.shape
  windows = x.reshape(batch, height // 2, 2, width // 2, 2, channels)
  return jnp.max(windows, axis=(2, 4))


class ConvBlock(nnx.Module):
  """``relu(bn(conv(x)))`` (twice if paper), residual block, pool, dropout."""

  def __init__(
    self, in_features: int, out_features: int, config: CNNConfig, *, rngs
  ):
    self.first_conv = ConvBatchNorm(
      in_features, out_features, config, rngs=rngs
    )
    self.second_conv = (
      ConvBatchNorm(out_features, out_features, config, rngs=rngs)
      if config.variant == "paper"
      else None
    )
    self.residual = ResidualBlock(out_features, config, rngs=rngs)
    self.dropout = nnx.Dropout(config.dropout_rate)

  def __call__(
    self, x: jax.Array, *, train: bool, rngs: nnx.Rngs | None
  ) -> jax.Array:
    x = jax.nn.relu(self.first_conv(x, train=train))
    if self.second_conv is not None:
      x = jax.nn.relu(self.second_conv(x, train=train))
    x = max_pool_2x2(self.residual(x, train=train))
    return self.dropout(x, deterministic=not train, rngs=rngs)


class CNN(nnx.Module):
  """The EXAdam paper's CIFAR-10 classifier; dropout uses the call's ``rngs``.

  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> model = CNN(CNN_PRESETS["tiny"], rngs=nnx.Rngs(0))
  >>> model(jnp.zeros((2, 32, 32, 3))).shape
  (2, 10)
  """

  def __init__(self, config: CNNConfig, *, rngs: nnx.Rngs):
    if not isinstance(config, CNNConfig):
      raise TypeError(
        f"CNN expects a CNNConfig (e.g. CNN_PRESETS['paper']), got "
        f"{type(config).__name__}."
      )
    self.config = config
    in_widths = (IMAGE_SHAPE[2], *config.widths[:-1])
    self.blocks = nnx.List(
      [
        ConvBlock(in_width, width, config, rngs=rngs)
        for in_width, width in zip(in_widths, config.widths, strict=True)
      ]
    )
    pooled_side = IMAGE_SHAPE[0] // 2 ** len(config.widths)
    flat_features = config.widths[-1] * pooled_side * pooled_side
    dense = config.dense_features
    self.hidden = _torch_layer(nnx.Linear, flat_features, dense, config, rngs)
    self.hidden_dropout = (
      nnx.Dropout(config.dropout_rate) if config.variant == "paper" else None
    )
    self.classifier = _torch_layer(
      nnx.Linear, dense, config.num_classes, config, rngs
    )

  def __call__(
    self,
    images: jax.Array,
    *,
    train: bool = False,
    rngs: nnx.Rngs | None = None,
  ) -> jax.Array:
    """float32 logits of ``(batch, 32, 32, 3)`` floats scaled as in training;
    ``train`` uses and updates batch statistics and drops out (``rngs``)."""
    chex.assert_rank(images, 4)
    chex.assert_shape(images, (None, *IMAGE_SHAPE))
    chex.assert_type(images, float)
    x = images
    for block in self.blocks:
      x = block(x, train=train, rngs=rngs)
    x = jax.nn.relu(self.hidden(x.reshape(x.shape[0], -1)))
    if self.hidden_dropout is not None:
      x = self.hidden_dropout(x, deterministic=not train, rngs=rngs)
    logits = self.classifier(x).astype(jnp.float32)
    chex.assert_shape(logits, (images.shape[0], self.config.num_classes))
    return logits
