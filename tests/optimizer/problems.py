"""Shared problem data for the optimizer tests: pytrees and gradient streams."""

import numpy as np

# Leaf name -> (shape, scale). Scales span 1e-3 to 1e3.
LEAVES = {
  "bias": ((5,), 1e-3),
  "kernel": ((4, 5), 1e3),
  "scalar": ((), 1.0),
  "conv": ((2, 3, 4), 30.0),
  "embed": ((3,), 1.0),
}
ZERO_STEPS = (4, 17, 100)  # 0-based steps at which every gradient is zero.


def initial_params(seed: int = 0) -> dict[str, np.ndarray]:
  """Float64 parameters with the leaves' shapes and scales."""
  rng = np.random.default_rng(seed)
  return {
    name: scale * rng.standard_normal(shape)
    for name, (shape, scale) in LEAVES.items()
  }


def gradient_stream(
  num_steps: int, seed: int = 1
) -> list[dict[str, np.ndarray]]:
  """Float64 gradients per step, with exact zeros.

  ``embed[0]`` is zero at every step, about 10% of the other entries are zero
  at each step, and every entry is zero at the steps in ``ZERO_STEPS``.
  """
  rng = np.random.default_rng(seed)
  stream = []
  for step in range(num_steps):
    grads = {}
    for name, (shape, scale) in LEAVES.items():
      g = scale * (rng.standard_normal(shape) + 0.3)
      g = np.where(rng.random(shape) < 0.1, 0.0, g)
      if name == "embed":
        g[0] = 0.0
      if step in ZERO_STEPS:
        g = np.zeros(shape)
      grads[name] = g
    stream.append(grads)
  return stream


def assert_close_to_leaf_scale(
  actual, expected, rtol: float, what: str
) -> None:
  """Asserts ``|actual - expected| <= rtol * max|expected|`` leaf by leaf.

  The error is measured against each leaf's largest magnitude, so entries that
  cross zero are judged on the leaf's scale instead of their own.
  """
  for name in expected:
    want = np.asarray(expected[name], np.float64)
    got = np.asarray(actual[name], np.float64)
    scale = np.max(np.abs(want))
    np.testing.assert_allclose(
      got, want, rtol=rtol, atol=rtol * scale, err_msg=f"{what}[{name}]"
    )
