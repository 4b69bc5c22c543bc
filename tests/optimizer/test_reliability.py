"""Reproducers of reported failures, each kept as a test.

Every case once failed: a crash, a NaN or a zero where the true update fits
in the dtype, a silently wrong state, or an unclear error.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import exadam_optax
from tests.optimizer.exadam_reference import exadam_reference


def _first_update(optimizer, grad, params=None):
  params = jnp.zeros_like(grad) if params is None else params
  state = optimizer.init(params)
  updates, state = optimizer.update(grad, state, params)
  return updates, state


def _reference_updates(grads, **hyperparameters):
  _, changes = exadam_reference(
    [np.zeros_like(grads[0], dtype=np.float64)],
    [[np.asarray(g, np.float64)] for g in grads],
    learning_rate=1.0,
    **hyperparameters,
  )
  return [change[0] for change in changes]


def test_tree_mixing_bfloat16_and_float16_leaves():
  params = {"a": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(3, jnp.float16)}
  grads = {
    "a": jnp.full(3, 0.5, jnp.bfloat16),
    "b": jnp.full(3, 0.5, jnp.float16),
  }
  optimizer = exadam_optax.exadam(1e-3)
  state = optimizer.init(params)
  updates, state = optimizer.update(grads, state, params)
  assert (
    updates["a"].dtype == jnp.bfloat16 and updates["b"].dtype == jnp.float16
  )
  params32 = jax.tree.map(lambda p: p.astype(jnp.float32), params)
  float32 = optimizer.update(
    jax.tree.map(lambda g: g.astype(jnp.float32), grads),
    optimizer.init(params32),
    params32,
  )[0]
  for name in ("a", "b"):
    # The direction is rounded to the leaf's dtype before the learning rate
    # scales it, so the two may differ by the dtype's rounding.
    np.testing.assert_allclose(
      updates[name].astype(jnp.float32),
      float32[name],
      rtol=float(jnp.finfo(updates[name].dtype).eps),
    )


# Up to the largest gradients for which v~ = g^2 (1 + b1) fits in float32.
@pytest.mark.parametrize("magnitude", [1e10, 1e19, 1.3e19])
def test_huge_gradients_with_defaults_give_the_true_update(magnitude):
  grad = jnp.array([magnitude, -magnitude], jnp.float32)
  updates, _ = _first_update(exadam_optax.exadam(1.0), grad)
  (expected,) = _reference_updates([grad])
  assert np.all(np.isfinite(updates))
  np.testing.assert_allclose(updates, expected, rtol=1e-5)


def test_a_parameter_hit_by_a_huge_gradient_keeps_moving():
  optimizer = exadam_optax.exadam(1.0)
  grads = [jnp.array([1.3e19], jnp.float32), jnp.array([1.0], jnp.float32)]
  params = jnp.zeros(1, jnp.float32)
  state = optimizer.init(params)
  got = []
  for grad in grads:
    updates, state = optimizer.update(grad, state, params)
    got.append(updates)
  assert np.all(np.isfinite(state[0].nu))
  for update, expected in zip(got, _reference_updates(grads), strict=True):
    np.testing.assert_allclose(update, expected, rtol=1e-5)
  assert float(got[1][0]) != 0.0


@pytest.mark.parametrize("magnitude", [3e19, 1e30])
def test_beyond_the_range_the_update_is_nan_and_clipping_avoids_it(magnitude):
  # g^2 overflows float32: as the docstring says, the element's updates are
  # NaN from then on (optax.adam freezes it at 0); clipping keeps it moving.
  grads = [jnp.array([magnitude, 1.0], jnp.float32), jnp.ones(2, jnp.float32)]
  for optimizer, first in [
    (exadam_optax.exadam(1.0), np.isnan),
    (optax.adam(1.0), lambda u: u == 0.0),
    (
      optax.chain(optax.clip(1.0), exadam_optax.exadam(1.0)),
      lambda u: np.isfinite(u) and u < 0.0,
    ),
  ]:
    params = jnp.zeros(2, jnp.float32)
    state = optimizer.init(params)
    for grad in grads:
      updates, state = optimizer.update(grad, state, params)
      assert first(float(updates[0]))
      assert np.isfinite(updates[1]) and float(updates[1]) < 0.0


def test_a_nan_gradient_gives_nan_and_apply_if_finite_skips_it():
  grad = jnp.array([jnp.nan, 1.0], jnp.float32)
  updates, _ = _first_update(exadam_optax.exadam(1.0), grad)
  assert np.isnan(updates[0]) and np.isfinite(updates[1])
  guarded = optax.apply_if_finite(exadam_optax.exadam(1.0), 3)
  updates, state = _first_update(guarded, grad)
  np.testing.assert_array_equal(updates, [0.0, 0.0])
  assert int(state.total_notfinite) == 1


def test_smallest_gradients_give_the_true_update():
  # Down to where the true first moment 0.1 g leaves float32's normal range.
  grad = jnp.array([1e-36, -1e-30, 1.2e-37], jnp.float32)
  updates, _ = _first_update(exadam_optax.exadam(1.0), grad)
  (expected,) = _reference_updates([grad])
  np.testing.assert_allclose(updates, expected, rtol=1e-5)


def test_subnormal_eps_is_rejected_with_the_smallest_allowed_value():
  with pytest.raises(ValueError, match=r"eps.*1\.1754944e-38"):
    exadam_optax.exadam(1e-3, eps=1e-40)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.int8, jnp.bool_])
def test_integer_and_bool_parameters_are_rejected_at_init(dtype):
  optimizer = exadam_optax.exadam(1e-3)
  with pytest.raises(ValueError, match="floating"):
    optimizer.init({"w": jnp.zeros(3, dtype)})


def test_complex_mu_dtype_is_rejected():
  with pytest.raises(ValueError, match="mu_dtype"):
    exadam_optax.exadam(1e-3, mu_dtype=jnp.complex64).init(jnp.zeros(3))


def test_python_float_leaves_work_outside_jit():
  optimizer = exadam_optax.exadam(1e-1)
  params = {"a": 1.0}
  state = optimizer.init(params)
  updates, _ = optimizer.update({"a": 0.5}, state, params)
  array_updates, _ = optimizer.update(
    {"a": jnp.float32(0.5)},
    optimizer.init({"a": jnp.float32(1.0)}),
    {"a": jnp.float32(1.0)},
  )
  np.testing.assert_allclose(updates["a"], array_updates["a"])
  assert np.isfinite(optax.apply_updates(params, updates)["a"])


def test_inject_hyperparams_with_bfloat16_explains_the_cast():
  params = jnp.zeros(3, jnp.bfloat16)
  optimizer = optax.inject_hyperparams(exadam_optax.exadam)(learning_rate=1e-3)
  with pytest.raises(ValueError, match=r"hyperparam_dtype=jnp\.float32"):
    state = optimizer.init(params)
    optimizer.update(jnp.ones(3, jnp.bfloat16), state, params)
  fixed = optax.inject_hyperparams(
    exadam_optax.exadam, hyperparam_dtype=jnp.float32
  )(learning_rate=1e-3)
  updates, _ = fixed.update(
    jnp.ones(3, jnp.bfloat16), fixed.init(params), params
  )
  # Float32 like optax.adam's, because the injected learning rate is float32.
  assert updates.dtype == jnp.float32
  np.testing.assert_allclose(updates, -11.0625e-3, rtol=1e-3)
