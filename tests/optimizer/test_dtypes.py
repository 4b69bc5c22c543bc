"""Dtypes of EXAdam's updates and state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import exadam_optax

LOW_PRECISION = [jnp.float16, jnp.bfloat16]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_updates_keep_gradient_dtype_and_state_does_not_drift(dtype):
  opt = exadam_optax.exadam(1e-3, weight_decay=1e-2)
  params = {"w": jnp.ones((4, 3), dtype), "b": jnp.zeros(3, dtype)}
  state = opt.init(params)
  before = jax.tree.map(lambda x: (x.shape, x.dtype), state)
  step = jax.jit(opt.update)
  for i in range(3):
    grads = jax.tree.map(lambda p, i=i: jnp.full_like(p, 0.5 - i), params)
    updates, state = step(grads, state, params)
    assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
    assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == before


def test_mu_dtype_sets_first_moment_dtype():
  opt = exadam_optax.scale_by_exadam(mu_dtype=jnp.bfloat16)
  params = {"w": jnp.ones(3, jnp.float32)}
  state = opt.init(params)
  assert state.mu["w"].dtype == jnp.bfloat16
  assert state.nu["w"].dtype == jnp.float32
  updates, state = opt.update({"w": jnp.ones(3)}, state)
  assert state.mu["w"].dtype == jnp.bfloat16
  assert updates["w"].dtype == jnp.float32
  assert state.count.dtype == jnp.int32


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_zero_gradients_give_finite_updates(dtype):
  opt = exadam_optax.exadam(1e-3)
  params = jnp.ones(5, dtype)
  state = opt.init(params)
  for _ in range(3):
    updates, state = opt.update(jnp.zeros(5, dtype), state, params)
    assert updates.dtype == dtype
    np.testing.assert_array_equal(np.asarray(updates, np.float32), 0.0)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_matches_float32_arithmetic(dtype):
  """Only the inputs and outputs are rounded; the arithmetic is float32."""
  g = jnp.array([1e-3, -2.0, 30.0, 0.0], dtype)
  low = exadam_optax.scale_by_exadam()
  high = exadam_optax.scale_by_exadam()
  got, _ = low.update(g, low.init(g))
  want, _ = high.update(g.astype(jnp.float32), high.init(g.astype(jnp.float32)))
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want.astype(dtype)))


def test_state_dtypes_are_stable_across_lax_cond():
  opt = exadam_optax.exadam(1e-3)
  params = {"w": jnp.ones(3, jnp.bfloat16)}
  state = opt.init(params)

  @jax.jit
  def maybe_step(state, do_step):
    grads = {"w": jnp.ones(3, jnp.bfloat16)}
    return jax.lax.cond(
      do_step, lambda s: opt.update(grads, s, params)[1], lambda s: s, state
    )

  new_state = maybe_step(state, True)
  assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(
    lambda x: x.dtype, state
  )
  assert int(new_state[0].count) == 1


def test_count_saturates_instead_of_overflowing():
  opt = exadam_optax.scale_by_exadam()
  params = jnp.ones(2)
  state = opt.init(params)._replace(
    count=jnp.asarray(jnp.iinfo(jnp.int32).max, jnp.int32)
  )
  updates, state = opt.update(jnp.ones(2), state)
  assert int(state.count) == jnp.iinfo(jnp.int32).max
  assert np.all(np.isfinite(updates))


@pytest.mark.parametrize("where", ["params", "updates"])
def test_complex_inputs_are_rejected(where):
  opt = exadam_optax.exadam(1e-3)
  real = jnp.ones(2, jnp.float32)
  cplx = jnp.ones(2, jnp.complex64)
  with pytest.raises(ValueError, match="complex"):
    if where == "params":
      opt.init({"w": cplx})
    else:
      opt.update({"w": cplx}, opt.init({"w": real}), {"w": real})


def test_float64_params_are_computed_in_float64():
  with jax.enable_x64(True):
    opt = exadam_optax.exadam(1e-3)
    params = jnp.ones(2, jnp.float64)
    updates, state = opt.update(
      jnp.array([1e-9, 3.0]), opt.init(params), params
    )
    assert updates.dtype == jnp.float64
    assert state[0].mu.dtype == jnp.float64
    np.testing.assert_allclose(
      optax.apply_updates(params, updates), params + updates, rtol=0
    )
