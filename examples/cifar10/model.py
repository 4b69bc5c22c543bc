"""The CIFAR-10 convolutional network of the EXAdam paper (section 3.1) in Flax NNX.

Three convolutional blocks (64, 128 and 256 filters by default), each made of
3x3 'same' convolutions with batch norm and ReLU, a residual block, 2x2 max
pooling and dropout; then a dense hidden layer and a linear classifier. The
layout is NHWC: images of shape ``(batch, 32, 32, 3)`` map to logits of shape
``(batch, num_classes)``.

Two variants are available through :class:`CNNConfig`:

* ``"paper"``: the architecture as the paper describes it (3,223,882 trainable
  parameters with the default widths), with two convolutions at the entry of
  each block and dropout after the dense hidden layer.
* ``"notebook"``: what the authors' notebook actually computes. Its blocks
  apply only the first entry convolution and it has no dropout after the dense
  hidden layer. The notebook declares the unused second convolution and its
  batch norm; they receive no gradient there, so this port leaves them out
  (2,448,394 trainable parameters with the default widths; PyTorch's count of
  the notebook model, which includes the unused layers, is 3,223,882).

Initialisation and batch norm follow PyTorch's defaults, so that the
reproduction starts from the same distributions as the authors' code:
convolution and dense weights and biases are drawn from
:math:`U(-1/\\sqrt{\\text{fan\\_in}}, 1/\\sqrt{\\text{fan\\_in}})`; batch norm
uses epsilon 1e-5 and running statistics
:math:`s \\leftarrow 0.9 s + 0.1 s_\\text{batch}` (PyTorch's momentum 0.1;
flax's running variance uses the biased batch variance where PyTorch uses the
unbiased one, a factor of :math:`n/(n-1)` with :math:`n \\ge 128 \\cdot 8 \\cdot 8`
values per channel in the paper's setting).

Training and evaluation differ only in the ``train`` argument of the call, as
in Linen: with ``train=True`` batch norm normalises with the batch statistics
and updates its running averages, and dropout draws its masks from the
``dropout`` stream of the ``rngs`` passed to the call; with ``train=False``
(the default) batch norm uses the running averages and dropout is off. The
model holds no random state of its own, so a jitted training step gets its
dropout randomness from the key it is given.

2x2 max pooling is computed as a maximum over a reshaped array, which XLA
compiles to faster code on the CPU than a reduce-window; it equals
:func:`flax.nnx.max_pool` (the tests check values and gradients).

Each convolution's input passes through :func:`materialize`, an identity
that keeps XLA from fusing the batch norm and ReLU that produce it into the
transpose that the weight gradient reads (see there); the result equals a
plain ``nnx.Conv`` on the same input (the tests check values and gradients).
"""

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
# PyTorch's BatchNorm2d defaults: momentum 0.1 weights the new batch statistic,
# flax's momentum weights the old running average.
_BATCH_NORM_MOMENTUM = 0.9
_BATCH_NORM_EPSILON = 1e-5
# PyTorch's kaiming_uniform_(a=sqrt(5)) for Conv2d and Linear weights:
# gain**2 = 2 / (1 + 5) = 1/3, bound = sqrt(3 * gain**2 / fan_in) = 1/sqrt(fan_in).
_torch_kernel_init = jax.nn.initializers.variance_scaling(
  1.0 / 3.0, mode="fan_in", distribution="uniform"
)


def _torch_bias_init(fan_in: int) -> jax.nn.initializers.Initializer:
  """PyTorch's default bias initialiser for Conv2d and Linear layers.

  Args:
    fan_in: number of inputs to one output unit (for a convolution,
      ``in_channels * kernel_height * kernel_width``).

  Returns:
    An initialiser drawing from
    :math:`U(-1/\\sqrt{\\text{fan\\_in}}, 1/\\sqrt{\\text{fan\\_in}})`.
  """
  bound = 1.0 / math.sqrt(fan_in)

  def init(
    key: jax.Array,
    shape: tuple[int, ...],
    dtype: jax.typing.DTypeLike = jnp.float32,
  ) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

  return init


@dataclasses.dataclass(frozen=True)
class CNNConfig:
  """Hyperparameters of :class:`CNN`.

  Each field's docstring is also its option's ``--help`` in the trainer
  (:mod:`examples.common.cli`), so it is written as plain sentences, each
  line ending one.

  Raises:
    ValueError: If a field is out of range (checked on construction), saying
      what to change.
  """

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
  The notebook's blocks apply one entry convolution instead of two.
  It has no dropout after the dense hidden layer."""
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
    if isinstance(rate, bool) or not isinstance(rate, int | float):
      raise ValueError(f"dropout_rate must be a float in [0, 1), got {rate!r}.")
    if not 0.0 <= rate < 1.0:
      raise ValueError(f"dropout_rate must lie in [0, 1), got {rate!r}.")
    variants = typing.get_args(CNNVariant)
    if self.variant not in variants:
      raise ValueError(
        f"variant must be one of {variants}, got {self.variant!r}."
      )
    object.__setattr__(self, "widths", widths)
    for name in ("dtype", "param_dtype"):
      object.__setattr__(
        self, name, config_lib.float_dtype(name, getattr(self, name)).name
      )


CNN_PRESETS: dict[str, CNNConfig] = {
  "paper": CNNConfig(),
  "tiny": CNNConfig(widths=(8, 16, 32), dense_features=32),
}
"""Named configurations: the paper's network and a tiny one for CPU smoke runs."""


def materialize(x: jax.Array) -> jax.Array:
  """Returns ``x`` unchanged, computed into a buffer of its own.

  XLA's CPU weight gradient of a convolution reads its input transposed
  (channels first, batch last). Left alone, XLA fuses the elementwise batch
  norm and ReLU that produce the input into that transpose, and the fused
  loop reads the convolution's output in transposed, cache-hostile order: for
  a ``(128, 32, 32, 64)`` activation it took 150-165 ms where the same
  transpose of a materialized array took 20 ms (one core). XLA's CPU backend
  removes optimization barriers before fusion, so a conditional, which XLA
  fuses neither into nor through, holds the value: its predicate is always
  true but not a constant XLA can fold, and the other branch is never taken.
  The conditional's copy costs about one elementwise pass. Other backends
  get ``x`` as it is: the fusion is the CPU's problem, and there the
  predicate's read of one element would cost a collective on sharded input.

  Args:
    x: any non-empty array.

  Returns:
    ``x``, bit for bit; its gradient passes through unchanged too.
  """
  if jax.default_backend() != "cpu":
    return x
  first = lax.bitcast_convert_type(
    lax.stop_gradient(x).reshape(-1)[0].astype(jnp.float32), jnp.uint32
  )
  always = (first | jnp.uint32(1)) != 0
  return lax.cond(always, lambda value: value, jnp.zeros_like, x)


class ConvBatchNorm(nnx.Module):
  """A 3x3 'same' convolution followed by batch norm (no activation).

  Args:
    in_features: number of input channels.
    out_features: number of output channels.
    config: supplies the dtypes.
    rngs: random streams for parameter initialisation.
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    config: CNNConfig,
    *,
    rngs: nnx.Rngs,
  ):
    fan_in = in_features * math.prod(_KERNEL_SIZE)
    self.conv = nnx.Conv(
      in_features,
      out_features,
      _KERNEL_SIZE,
      padding="SAME",
      kernel_init=_torch_kernel_init,
      bias_init=_torch_bias_init(fan_in),
      dtype=config.dtype,
      param_dtype=config.param_dtype,
      rngs=rngs,
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
    """Maps ``(batch, height, width, in_features)`` to ``(..., out_features)``."""
    return self.norm(self.conv(materialize(x)), use_running_average=not train)


class ResidualBlock(nnx.Module):
  """``relu(x + bn(conv(relu(bn(conv(x))))))`` with a constant channel count.

  Args:
    features: number of input and output channels.
    config: supplies the dtypes.
    rngs: random streams for parameter initialisation.
  """

  def __init__(self, features: int, config: CNNConfig, *, rngs: nnx.Rngs):
    self.first = ConvBatchNorm(features, features, config, rngs=rngs)
    self.second = ConvBatchNorm(features, features, config, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Maps ``(batch, height, width, features)`` to the same shape."""
    hidden = jax.nn.relu(self.first(x, train=train))
    return jax.nn.relu(x + self.second(hidden, train=train))


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling with stride 2 of an NHWC batch with even sides.

  Equal in value to ``nnx.max_pool(x, (2, 2), strides=(2, 2))``. The
  gradients differ only where a window holds several equal maxima: this
  splits the gradient among them, ``nnx.max_pool`` routes it to one; both
  are valid subgradients. Here every pooled input comes out of a ReLU: tied
  zeros pass no gradient on through it, and tied positive maxima practically
  never occur in float32 (they do in bfloat16, about one window in 70).
  """
  batch, height, width, channels = x.shape
  windows = x.reshape(batch, height // 2, 2, width // 2, 2, channels)
  return jnp.max(windows, axis=(2, 4))


class ConvBlock(nnx.Module):
  """One of the network's blocks; halves the image side.

  Computes ``relu(bn(conv(x)))`` (twice in the ``"paper"`` variant, once in the
  ``"notebook"`` variant), then a :class:`ResidualBlock`, 2x2 max pooling with
  stride 2 and dropout.

  Args:
    in_features: number of input channels.
    out_features: number of filters of every convolution in the block.
    config: supplies the variant, dropout rate and dtypes.
    rngs: random streams for parameter initialisation.
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    config: CNNConfig,
    *,
    rngs: nnx.Rngs,
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
    """Maps ``(batch, h, w, in_features)`` to ``(batch, h/2, w/2, out_features)``."""
    x = jax.nn.relu(self.first_conv(x, train=train))
    if self.second_conv is not None:
      x = jax.nn.relu(self.second_conv(x, train=train))
    x = max_pool_2x2(self.residual(x, train=train))
    return self.dropout(x, deterministic=not train, rngs=rngs)


class CNN(nnx.Module):
  """The EXAdam paper's CIFAR-10 classifier.

  Example::

    >>> import jax
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> model = CNN(CNN_PRESETS["tiny"], rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 32, 32, 3))).shape
    (2, 10)
    >>> dropout = nnx.Rngs(dropout=jax.random.key(1))
    >>> model(jnp.zeros((2, 32, 32, 3)), train=True, rngs=dropout).shape
    (2, 10)

  Args:
    config: the architecture; see :class:`CNNConfig` and :data:`CNN_PRESETS`.
    rngs: random streams; ``params`` (or ``default``) initialises the
      parameters.

  Raises:
    TypeError: if ``config`` is not a :class:`CNNConfig`.
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
    self.hidden = nnx.Linear(
      flat_features,
      config.dense_features,
      kernel_init=_torch_kernel_init,
      bias_init=_torch_bias_init(flat_features),
      dtype=config.dtype,
      param_dtype=config.param_dtype,
      rngs=rngs,
    )
    self.hidden_dropout = (
      nnx.Dropout(config.dropout_rate) if config.variant == "paper" else None
    )
    self.classifier = nnx.Linear(
      config.dense_features,
      config.num_classes,
      kernel_init=_torch_kernel_init,
      bias_init=_torch_bias_init(config.dense_features),
      dtype=config.dtype,
      param_dtype=config.param_dtype,
      rngs=rngs,
    )

  def __call__(
    self,
    images: jax.Array,
    *,
    train: bool = False,
    rngs: nnx.Rngs | None = None,
  ) -> jax.Array:
    """Classifies a batch of images.

    Args:
      images: floating array of shape ``(batch, 32, 32, 3)`` (NHWC), pixels
        scaled as the training pipeline does (the paper uses [-1, 1]).
      train: use batch statistics (and update the running averages) and
        dropout, as in training; else the running averages and no dropout.
      rngs: with ``train=True``, the ``dropout`` stream for the masks.

    Returns:
      float32 logits of shape ``(batch, num_classes)``, whatever the
      computation dtype.

    Raises:
      AssertionError: if ``images`` is not a floating array of shape
        ``(batch, 32, 32, 3)``.
    """
    chex.assert_rank(images, 4)
    chex.assert_shape(images, (None, *IMAGE_SHAPE))
    chex.assert_type(images, float)
    x = images
    for block in self.blocks:
      x = block(x, train=train, rngs=rngs)
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(self.hidden(x))
    if self.hidden_dropout is not None:
      x = self.hidden_dropout(x, deterministic=not train, rngs=rngs)
    logits = self.classifier(x).astype(jnp.float32)
    chex.assert_shape(logits, (images.shape[0], self.config.num_classes))
    return logits
