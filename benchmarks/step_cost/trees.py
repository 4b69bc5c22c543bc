"""Parameter pytrees for the step-cost benchmark.

A benchmark tree is described by its shapes only (a pytree of
:class:`jax.ShapeDtypeStruct`), so that large trees cost no memory until they
are measured: flat vectors of a chosen size, and the parameters of the two
example models, read with :func:`flax.nnx.eval_shape` without initialising
them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from examples.cifar10.model import CNN, CNN_PRESETS
from examples.mingpt.model import GPT_PRESETS, MinGPT

MODELS = ("cnn", "mingpt")
"""Names of the example models whose parameter trees can be benchmarked."""

SHAKESPEARE_VOCAB_SIZE = 65
"""Characters in the tiny-Shakespeare corpus: MinGPT's vocabulary size."""

ACCESSES_PER_PARAMETER = 7
"""Array accesses of one update at the least: read the parameter, gradient
and both moments, write the parameter and both moments."""


@dataclasses.dataclass(frozen=True)
class BenchmarkTree:
  """A named parameter tree, by shapes and dtypes only.

  Attributes:
    name: label of the tree in tables, e.g. ``"flat-1e6"`` or
      ``"mingpt-paper"``.
    shapes: pytree of :class:`jax.ShapeDtypeStruct`, one per parameter array.
  """

  name: str
  shapes: Any

  @property
  def num_params(self) -> int:
    """Total number of scalar parameters."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(self.shapes))

  @property
  def num_leaves(self) -> int:
    """Number of parameter arrays."""
    return len(jax.tree.leaves(self.shapes))

  @property
  def param_bytes(self) -> int:
    """Bytes taken by one copy of the parameters."""
    return sum(
      math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize
      for leaf in jax.tree.leaves(self.shapes)
    )

  @property
  def min_traffic_bytes(self) -> int:
    r"""Bytes that one Adam-like update must move at the least.

    :math:`7 \times` :attr:`param_bytes`: the parameters, gradients and both
    moments are read, the parameters and both moments written (28 bytes per
    float32 parameter), with the moments in the parameters' dtype.
    """
    return ACCESSES_PER_PARAMETER * self.param_bytes


def size_label(size: int) -> str:
  """``1e6`` for powers of ten from 10 up, else the plain number."""
  exponent = round(math.log10(size)) if size > 0 else 0
  if exponent >= 1 and 10**exponent == size:
    return f"1e{exponent}"
  return str(size)


def flat_tree(size: int, dtype: jax.typing.DTypeLike) -> BenchmarkTree:
  """One parameter vector of ``size`` elements.

  Args:
    size: number of parameters, at least 1.
    dtype: parameter dtype.

  Returns:
    The tree ``{"w": ShapeDtypeStruct((size,), dtype)}``, named
    ``flat-<size>``.

  Raises:
    ValueError: if ``size`` is not a positive integer.
  """
  if isinstance(size, bool) or not isinstance(size, int) or size < 1:
    raise ValueError(
      f"A flat tree needs a positive integer size, got {size!r}."
    )
  return BenchmarkTree(
    name=f"flat-{size_label(size)}",
    shapes={"w": jax.ShapeDtypeStruct((size,), jnp.dtype(dtype))},
  )


def model_tree(
  model: str, preset: str, dtype: jax.typing.DTypeLike
) -> BenchmarkTree:
  """The trainable parameters of an example model, as shapes.

  The model is built under :func:`flax.nnx.eval_shape`, so nothing is
  initialised or allocated.

  Args:
    model: ``"cnn"`` (the CIFAR-10 network) or ``"mingpt"`` (the
      character-level GPT, with the tiny-Shakespeare vocabulary of 65).
    preset: a key of ``CNN_PRESETS`` or ``GPT_PRESETS``, e.g. ``"paper"``.
    dtype: parameter dtype; every leaf is given this dtype.

  Returns:
    The tree of the model's :class:`flax.nnx.Param` leaves, named
    ``<model>-<preset>``.

  Raises:
    ValueError: if ``model`` or ``preset`` is unknown.
  """
  if model == "cnn":
    presets = CNN_PRESETS
    build = functools.partial(_build_cnn, preset)
  elif model == "mingpt":
    presets = GPT_PRESETS
    build = functools.partial(_build_mingpt, preset)
  else:
    raise ValueError(f"Unknown model {model!r}; choose one of {MODELS}.")
  if preset not in presets:
    raise ValueError(
      f"Unknown {model} preset {preset!r}; choose one of {sorted(presets)}."
    )
  abstract_model = nnx.eval_shape(build)
  shapes = nnx.to_pure_dict(nnx.state(abstract_model, nnx.Param))
  dtype = jnp.dtype(dtype)
  shapes = jax.tree.map(
    lambda leaf: jax.ShapeDtypeStruct(leaf.shape, dtype), shapes
  )
  return BenchmarkTree(name=f"{model}-{preset}", shapes=shapes)


def _build_cnn(preset: str) -> CNN:
  return CNN(CNN_PRESETS[preset], rngs=nnx.Rngs(0))


def _build_mingpt(preset: str) -> MinGPT:
  return MinGPT(GPT_PRESETS[preset], SHAKESPEARE_VOCAB_SIZE, rngs=nnx.Rngs(0))


def materialize(shapes: Any, seed: int, scale: float) -> Any:
  """Concrete arrays of the given shapes, drawn from :math:`N(0, scale^2)`.

  Normal values keep the update away from zeros and subnormals, whose cost
  can differ from that of ordinary numbers.

  Args:
    shapes: pytree of :class:`jax.ShapeDtypeStruct`.
    seed: seed of the random draw; the same seed gives the same arrays.
    scale: standard deviation of the values.

  Returns:
    A pytree of arrays with the structure, shapes and dtypes of ``shapes``,
    on the default device.
  """
  leaves, treedef = jax.tree.flatten(shapes)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  arrays = [
    _scaled_normal(key, scale, shape=leaf.shape, dtype=jnp.dtype(leaf.dtype))
    for key, leaf in zip(keys, leaves, strict=True)
  ]
  return jax.tree.unflatten(treedef, arrays)


@functools.partial(jax.jit, static_argnames=("shape", "dtype"))
def _scaled_normal(key, scale, *, shape, dtype):
  return (scale * jax.random.normal(key, shape, jnp.float32)).astype(dtype)
