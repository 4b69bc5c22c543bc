"""CIFAR-10 pixel scaling and the paper's flip and ``RandomAffine``, batched on
device; normalizing first (uncovered pixels get :data:`BLACK`, ``fill=0``) and
sampling bilinearly (PyTorch: nearest)."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

MAX_ROTATION_DEGREES = 5.0
MAX_TRANSLATION_FRACTION = 0.1
SCALE_RANGE = (0.9, 1.1)
FLIP_PROBABILITY = 0.5
BLACK = -1.0  # The normalized value of a black pixel.


class AffineParams(NamedTuple):
  """Per-image flip-then-affine parameters, float32 ``(N,)`` unless noted:
  ``flip`` (bool, mirror first), ``angle`` (radians, counter-clockwise as
  shown), ``shift`` (``(N, 2)`` pixels right, down), ``scale`` (>1 zooms in)."""

  flip: jax.Array
  angle: jax.Array
  shift: jax.Array
  scale: jax.Array


def normalize(images: jax.Array) -> jax.Array:
  """Scales ``uint8`` pixels (else a TypeError) to ``float32`` in [-1, 1]."""
  images = jnp.asarray(images)
  if images.dtype != jnp.uint8:
    raise TypeError(
      f"normalize expects uint8 pixels in 0..255, got {images.dtype}; pass "
      "the raw images from load_cifar10."
    )
  return (images.astype(jnp.float32) / 255.0 - 0.5) / 0.5


def _check_images(images: jax.Array) -> None:
  if images.ndim != 4 or not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(
      "Expected a batch of normalized images, a floating array of shape "
      f"(N, height, width, channels); got {images.dtype} of shape "
      f"{images.shape}. Apply normalize() to uint8 images first."
    )


@functools.partial(jax.jit, static_argnames=("batch_size", "height", "width"))
def sample_affine_params(
  key: jax.Array, batch_size: int, height: int, width: int
) -> AffineParams:
  """Draws per-image parameters as the paper does, shifting by whole pixels."""
  max_angle = math.radians(MAX_ROTATION_DEGREES)
  max_shift = MAX_TRANSLATION_FRACTION * jnp.array([width, height], jnp.float32)

  def sample_one(image_key: jax.Array) -> AffineParams:
    flip_key, angle_key, shift_key, scale_key = jax.random.split(image_key, 4)
    return AffineParams(
      flip=jax.random.bernoulli(flip_key, FLIP_PROBABILITY),
      angle=jax.random.uniform(
        angle_key, (), jnp.float32, -max_angle, max_angle
      ),
      shift=jnp.round(
        jax.random.uniform(shift_key, (2,), jnp.float32, -1.0, 1.0) * max_shift
      ),
      scale=jax.random.uniform(scale_key, (), jnp.float32, *SCALE_RANGE),
    )

  return jax.vmap(sample_one)(jax.random.split(key, batch_size))


def _bilinear_sample(
  image: jax.Array, rows: jax.Array, cols: jax.Array, fill_value: float
) -> jax.Array:
  height, width, _ = image.shape
  top, left = jnp.floor(rows), jnp.floor(cols)
  row_weight = (rows - top)[..., None]
  col_weight = (cols - left)[..., None]
  top, left = top.astype(jnp.int32), left.astype(jnp.int32)

  def pixel(row: jax.Array, col: jax.Array) -> jax.Array:
    inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
    value = image[jnp.clip(row, 0, height - 1), jnp.clip(col, 0, width - 1)]
    return jnp.where(inside[..., None], value, fill_value)

  top_left = pixel(top, left)
  top_right = pixel(top, left + 1)
  bottom_left = pixel(top + 1, left)
  bottom_right = pixel(top + 1, left + 1)
  upper = top_left + (top_right - top_left) * col_weight
  lower = bottom_left + (bottom_right - bottom_left) * col_weight
  interpolated = upper + (lower - upper) * row_weight
  # Clipping to the neighbours' range removes rounding error only.
  low = jnp.minimum(
    jnp.minimum(top_left, top_right), jnp.minimum(bottom_left, bottom_right)
  )
  high = jnp.maximum(
    jnp.maximum(top_left, top_right), jnp.maximum(bottom_left, bottom_right)
  )
  return jnp.clip(interpolated, low, high)


def _transform_one(
  image: jax.Array, params: AffineParams, fill_value: float
) -> jax.Array:
  """Pixel ``p`` reads ``q = c + R(-a) (p - c - t) / s``, ``c`` the centre."""
  height, width, _ = image.shape
  rows, cols = jnp.meshgrid(
    jnp.arange(height, dtype=jnp.float32),
    jnp.arange(width, dtype=jnp.float32),
    indexing="ij",
  )
  center_row, center_col = (height - 1) / 2, (width - 1) / 2
  x = (cols - center_col - params.shift[0]) / params.scale
  y = (rows - center_row - params.shift[1]) / params.scale
  cos, sin = jnp.cos(params.angle), jnp.sin(params.angle)
  # Inverse of a counter-clockwise turn as displayed (rows point down).
  source_cols = center_col + x * cos - y * sin
  source_rows = center_row + x * sin + y * cos
  source_cols = jnp.where(params.flip, width - 1 - source_cols, source_cols)
  return _bilinear_sample(image, source_rows, source_cols, fill_value)


@jax.jit
def apply_affine(
  images: jax.Array, params: AffineParams, *, fill_value: float = BLACK
) -> jax.Array:
  """Flips and warps NHWC floats; identity ``params`` return them exactly."""
  _check_images(images)
  batch_size = images.shape[0]
  chex.assert_shape(
    [params.flip, params.angle, params.scale, params.shift],
    [(batch_size,), (batch_size,), (batch_size,), (batch_size, 2)],
  )
  transformed = jax.vmap(_transform_one, in_axes=(0, 0, None))(
    images, params, fill_value
  )
  return transformed.astype(images.dtype)


@jax.jit
def augment(key: jax.Array, images: jax.Array) -> jax.Array:
  """Flips and warps :func:`normalize`d NHWC images at random, as the paper."""
  _check_images(images)
  batch_size, height, width, _ = images.shape
  params = sample_affine_params(key, batch_size, height, width)
  return apply_affine(images, params)
