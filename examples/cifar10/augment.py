"""Pixel scaling and training augmentation for CIFAR-10, batched JAX on device.

The paper's training transform (PyTorch) is ``RandomHorizontalFlip(0.5)``,
``RandomAffine(degrees=5, translate=(0.1, 0.1), scale=(0.9, 1.1))``, then
``Normalize`` to ``[-1, 1]``. Here the images are normalized first and then
augmented; the affine transform fills uncovered pixels with ``-1.0``, the
normalized value of black, which equals ``RandomAffine``'s ``fill=0`` before
normalization. Random parameters follow ``RandomAffine``: a rotation angle
uniform in ``[-5, 5]`` degrees, a translation per axis uniform in
``[-10%, 10%]`` of the image size and rounded to whole pixels, and a scale
uniform in ``[0.9, 1.1]``, all about the image centre. Sampling is bilinear
(``RandomAffine`` defaults to nearest-neighbour).

Every function works on a whole batch at once; the random transforms are
jitted.
"""

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
  """Per-image parameters of a flip followed by an affine transform.

  Attributes:
    flip: ``bool`` ``(N,)``, whether to mirror the image left to right first.
    angle: ``float32`` ``(N,)``, rotation in radians, counter-clockwise as
      displayed (rows pointing down).
    shift: ``float32`` ``(N, 2)``, translation in pixels as ``(right, down)``.
    scale: ``float32`` ``(N,)``, zoom factor (above 1 enlarges).
  """

  flip: jax.Array
  angle: jax.Array
  shift: jax.Array
  scale: jax.Array


def normalize(images: jax.Array) -> jax.Array:
  r"""Scales ``uint8`` pixels to ``float32`` in ``[-1, 1]``.

  .. math::
    y = \frac{x / 255 - 0.5}{0.5}

  Args:
    images: ``uint8`` array of any shape.

  Returns:
    A ``float32`` array of the same shape.

  Raises:
    TypeError: If ``images`` is not ``uint8``.
  """
  images = jnp.asarray(images)
  if images.dtype != jnp.uint8:
    raise TypeError(
      f"normalize expects uint8 pixels in 0..255, got {images.dtype}; pass "
      "the raw images from load_cifar10."
    )
  return (images.astype(jnp.float32) / 255.0 - 0.5) / 0.5


def _check_images(images: jax.Array) -> None:
  """Raises unless ``images`` is a floating NHWC batch."""
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
  """Draws independent random flip and affine parameters for each image.

  Args:
    key: A JAX random key.
    batch_size: Number of images ``N``.
    height: Image height in pixels.
    width: Image width in pixels.

  Returns:
    :class:`AffineParams` for ``N`` images: flip with probability 0.5, angle
    uniform in ``[-5, 5]`` degrees, shift per axis uniform in ``[-10%, 10%]``
    of the size along it and rounded to whole pixels, scale uniform in
    ``[0.9, 1.1]``.
  """
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
  """Samples an ``(H, W, C)`` image at fractional positions, bilinearly.

  Positions outside the image read ``fill_value``, as if the image were
  surrounded by it. At whole-pixel positions the result is exactly the pixel.

  Args:
    image: ``(H, W, C)`` floating image.
    rows: Row coordinates, any shape ``S``.
    cols: Column coordinates, shape ``S``.
    fill_value: The value outside the image.

  Returns:
    Array of shape ``S + (C,)``.
  """
  height, width, _ = image.shape
  top = jnp.floor(rows)
  left = jnp.floor(cols)
  row_weight = (rows - top)[..., None]
  col_weight = (cols - left)[..., None]
  top = top.astype(jnp.int32)
  left = left.astype(jnp.int32)

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
  # Exact arithmetic never leaves the range of the four neighbours; clipping
  # to it removes rounding error only.
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
  """Flips (optionally) and warps one ``(H, W, C)`` image.

  Each output pixel ``p`` reads the input at the inverse of the forward map
  ``p = c + t + s R(a) (q - c)``, i.e. ``q = c + R(-a) (p - c - t) / s``,
  with ``c`` the image centre; the flip mirrors that column.
  """
  height, width, _ = image.shape
  rows, cols = jnp.meshgrid(
    jnp.arange(height, dtype=jnp.float32),
    jnp.arange(width, dtype=jnp.float32),
    indexing="ij",
  )
  center_row = (height - 1) / 2
  center_col = (width - 1) / 2
  x = (cols - center_col - params.shift[0]) / params.scale
  y = (rows - center_row - params.shift[1]) / params.scale
  cos, sin = jnp.cos(params.angle), jnp.sin(params.angle)
  # Rows point down, so a counter-clockwise turn by a as displayed is
  # (x, y) -> (x cos a + y sin a, -x sin a + y cos a); this is its inverse.
  source_cols = center_col + x * cos - y * sin
  source_rows = center_row + x * sin + y * cos
  source_cols = jnp.where(params.flip, width - 1 - source_cols, source_cols)
  return _bilinear_sample(image, source_rows, source_cols, fill_value)


@jax.jit
def apply_affine(
  images: jax.Array, params: AffineParams, *, fill_value: float = BLACK
) -> jax.Array:
  """Applies per-image flips and affine transforms to a batch.

  Args:
    images: Floating ``(N, H, W, C)`` images.
    params: :class:`AffineParams` with leading dimension ``N``.
    fill_value: The value of pixels that come from outside the image.

  Returns:
    The transformed images, same shape and dtype. With ``flip=False``,
    ``angle=0``, ``shift=0`` and ``scale=1`` they equal the input exactly.

  Raises:
    ValueError: If ``images`` is not a floating NHWC batch.
  """
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
  """Randomly flips and warps each normalized image, as in the paper.

  Args:
    key: A JAX random key.
    images: Normalized floating ``(N, H, W, C)`` images (see
      :func:`normalize`).

  Returns:
    Augmented images of the same shape and dtype, values within the input
    range extended by :data:`BLACK` (so in ``[-1, 1]`` for normalized
    input).

  Raises:
    ValueError: If ``images`` is not a floating NHWC batch.
  """
  _check_images(images)
  batch_size, height, width, _ = images.shape
  params = sample_affine_params(key, batch_size, height, width)
  return apply_affine(images, params)
