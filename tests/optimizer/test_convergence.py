"""EXAdam minimises the targets optax's alias tests use."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import exadam_optax


def _parabola():
  initial = jnp.array([-1.0, 10.0, 1.0])
  final = jnp.array([1.0, -1.0, 1.0])
  return initial, final, lambda p: jnp.sum(jnp.square(p - final))


def _rosenbrock():
  initial = jnp.array([0.0, 0.0])
  final = jnp.array([1.0, 1.0])
  return (
    initial,
    final,
    lambda p: (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2,
  )


@pytest.mark.parametrize(
  "target", [_parabola, _rosenbrock], ids=["parabola", "rosenbrock"]
)
@pytest.mark.parametrize("dynamic_step_size", [True, False])
def test_minimises(target, dynamic_step_size):
  initial, final, objective = target()
  # EXAdam's steps are about ten learning rates long (g~ and the growing step
  # factor), so it needs a smaller learning rate than optax's alias tests give
  # Adam (1e-1); at 1e-2 it hovers about 0.3 away from Rosenbrock's minimum.
  opt = exadam_optax.exadam(1e-3, dynamic_step_size=dynamic_step_size)

  def body(carry, _):
    params, state = carry
    updates, state = opt.update(jax.grad(objective)(params), state, params)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.lax.scan(
    body, (initial, opt.init(initial)), length=10_000
  )
  np.testing.assert_allclose(params, final, rtol=3e-2, atol=3e-2)
