"""EXAdam composed with JAX transformations and optax wrappers."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import exadam_optax
from tests.optimizer import problems


def _params():
  return jax.tree.map(
    lambda p: jnp.asarray(p, jnp.float32), problems.initial_params()
  )


def _grads(num_steps):
  return [
    jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), grads)
    for grads in problems.gradient_stream(num_steps)
  ]


def _run(opt, num_steps=20, **update_kwargs):
  params = _params()
  state = opt.init(params)
  for grads in _grads(num_steps):
    updates, state = opt.update(grads, state, params, **update_kwargs)
    params = optax.apply_updates(params, updates)
  return params, state


def test_jit_does_not_recompile():
  opt = exadam_optax.exadam(1e-3, weight_decay=1e-4)
  traces = []

  @jax.jit
  def step(params, state, grads):
    traces.append(None)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = _params()
  state = opt.init(params)
  for grads in _grads(3):
    params, state = step(params, state, grads)
  assert len(traces) == 1


def test_jit_matches_eager():
  opt = exadam_optax.exadam(1e-2)
  eager, _ = _run(opt, 10)
  params, state = _params(), opt.init(_params())
  update = jax.jit(opt.update)
  for grads in _grads(10):
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
  chex.assert_trees_all_close(params, eager, rtol=1e-6)


def test_lax_scan_matches_python_loop():
  opt = exadam_optax.exadam(1e-2, weight_decay=1e-3)
  want, want_state = _run(opt, 30)
  grads = jax.tree.map(lambda *xs: jnp.stack(xs), *_grads(30))

  def body(carry, g):
    params, state = carry
    updates, state = opt.update(g, state, params)
    return (optax.apply_updates(params, updates), state), None

  (got, state), _ = jax.lax.scan(body, (_params(), opt.init(_params())), grads)
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
  assert int(state[0].count) == 30 == int(want_state[0].count)


def test_vmap_over_independent_problems():
  opt = exadam_optax.exadam(1e-2)
  batch = jnp.stack([jnp.arange(3.0), -jnp.arange(3.0), jnp.ones(3)])
  grads = jnp.stack([jnp.ones(3), 2 * jnp.ones(3), jnp.array([0.0, 1.0, -1.0])])

  def one(params, g):
    updates, _ = opt.update(g, opt.init(params), params)
    return updates

  vmapped = jax.vmap(one)(batch, grads)
  for i in range(3):
    np.testing.assert_allclose(vmapped[i], one(batch[i], grads[i]), rtol=1e-6)


def test_chain_with_clipping_clips_before_exadam():
  opt = optax.chain(optax.clip_by_global_norm(1.0), exadam_optax.exadam(1e-2))
  ref = exadam_optax.exadam(1e-2)
  params = _params()
  grads = _grads(1)[0]
  clipped, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
  got, _ = opt.update(grads, opt.init(params), params)
  want, _ = ref.update(clipped, ref.init(params), params)
  chex.assert_trees_all_close(got, want, rtol=1e-6)


def test_multi_steps_accumulates_then_applies():
  every = 3
  opt = optax.MultiSteps(exadam_optax.exadam(1e-2), every_k_schedule=every)
  inner = exadam_optax.exadam(1e-2)
  params, inner_params = _params(), _params()
  state, inner_state = opt.init(params), inner.init(params)
  stream = _grads(2 * every)
  for k in range(2):
    chunk = stream[k * every : (k + 1) * every]
    for i, grads in enumerate(chunk):
      updates, state = opt.update(grads, state, params)
      params = optax.apply_updates(params, updates)
      if i < every - 1:
        assert all(
          float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates)
        )
    mean = jax.tree.map(lambda *g: sum(g) / every, *chunk)
    updates, inner_state = inner.update(mean, inner_state, inner_params)
    inner_params = optax.apply_updates(inner_params, updates)
  chex.assert_trees_all_close(params, inner_params, rtol=1e-5, atol=1e-6)


def test_inject_hyperparams_matches_direct_call():
  # Values exactly representable in float32, so that injecting them as float32
  # arrays changes nothing.
  hyperparams = dict(
    learning_rate=2.0**-7,
    b1=0.875,
    b2=1 - 2.0**-9,
    eps=2.0**-20,
    weight_decay=2.0**-6,
  )
  direct = exadam_optax.exadam(**hyperparams)
  injected = optax.inject_hyperparams(exadam_optax.exadam)(**hyperparams)
  want, _ = jax.jit(lambda: _run(direct))()
  got, state = jax.jit(lambda: _run(injected))()
  chex.assert_trees_all_close(got, want, rtol=2e-6, atol=1e-6)
  assert set(state.hyperparams) == set(hyperparams)


def test_inject_hyperparams_learning_rate_can_be_changed():
  opt = optax.inject_hyperparams(exadam_optax.exadam)(learning_rate=1e-2)
  params = _params()
  state = opt.init(params)
  grads = _grads(1)[0]
  state.hyperparams["learning_rate"] = jnp.asarray(0.0)
  updates, state = jax.jit(opt.update)(grads, state, params)
  assert all(float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates))
  assert int(state.inner_state[0].count) == 1


def test_inject_hyperparams_x64_defaults_match_direct_call():
  with jax.enable_x64(True):
    params = {"w": jnp.array([0.5, -1.5, 2.0], jnp.float64)}
    grads = {"w": jnp.array([0.1, -3.0, 0.0], jnp.float64)}
    direct = exadam_optax.exadam(1e-3)
    injected = optax.inject_hyperparams(exadam_optax.exadam)(learning_rate=1e-3)
    want, _ = direct.update(grads, direct.init(params), params)
    got, _ = jax.jit(injected.update)(grads, injected.init(params), params)
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-13)


def test_masked_only_updates_selected_leaves():
  mask = {name: name != "bias" for name in problems.LEAVES}
  opt = optax.masked(exadam_optax.exadam(1e-2), mask)
  params = _params()
  grads = _grads(1)[0]
  updates, _ = opt.update(grads, opt.init(params), params)
  np.testing.assert_array_equal(updates["bias"], grads["bias"])
  want, _ = exadam_optax.exadam(1e-2).update(
    grads, exadam_optax.exadam(1e-2).init(params), params
  )
  np.testing.assert_allclose(updates["kernel"], want["kernel"], rtol=1e-6)


def test_weight_decay_mask_follows_optax_semantics():
  params = {"w": jnp.ones(3), "b": jnp.ones(2)}
  zeros = jax.tree.map(jnp.zeros_like, params)
  opt = exadam_optax.exadam(
    0.1, weight_decay=0.5, mask=lambda p: {"w": True, "b": False}
  )
  updates, _ = opt.update(zeros, opt.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.05 * np.ones(3), rtol=1e-6)
  np.testing.assert_array_equal(updates["b"], np.zeros(2))


def test_multi_transform_routes_labels():
  labels = {
    name: "fast" if name == "kernel" else "slow" for name in problems.LEAVES
  }
  opt = optax.multi_transform(
    {"fast": exadam_optax.exadam(1e-1), "slow": optax.sgd(1e-3)}, labels
  )
  params = _params()
  grads = _grads(1)[0]
  updates, _ = opt.update(grads, opt.init(params), params)
  np.testing.assert_allclose(updates["bias"], -1e-3 * grads["bias"], rtol=1e-6)
  fast = exadam_optax.exadam(1e-1)
  want, _ = fast.update(grads, fast.init(params), params)
  np.testing.assert_allclose(updates["kernel"], want["kernel"], rtol=1e-6)


def test_apply_if_finite_skips_non_finite_steps():
  opt = optax.apply_if_finite(
    exadam_optax.exadam(1e-2), max_consecutive_errors=2
  )
  params = {"w": jnp.ones(3)}
  state = opt.init(params)
  step = jax.jit(opt.update)
  updates, state = step({"w": jnp.array([1.0, jnp.nan, 0.0])}, state, params)
  np.testing.assert_array_equal(updates["w"], np.zeros(3))
  assert int(state.inner_state[0].count) == 0
  assert int(state.notfinite_count) == 1
  updates, state = step({"w": jnp.array([1.0, 1.0, 0.0])}, state, params)
  assert int(state.inner_state[0].count) == 1
  assert np.all(np.isfinite(updates["w"]))


def test_reduce_on_plateau_scales_updates():
  plateau = optax.contrib.reduce_on_plateau(patience=1, factor=0.5, cooldown=0)
  opt = optax.chain(exadam_optax.exadam(1e-2), plateau)
  params = {"w": jnp.ones(3)}
  state = opt.init(params)
  grads = {"w": jnp.array([1.0, -1.0, 0.5])}
  for _ in range(4):
    before = state
    updates, state = opt.update(grads, state, params, value=jnp.asarray(1.0))
  assert float(state[1].scale) < 1.0
  unscaled, _ = exadam_optax.exadam(1e-2).update(grads, before[0], params)
  np.testing.assert_allclose(
    updates["w"], state[1].scale * unscaled["w"], rtol=1e-6
  )


def test_extra_update_arguments_are_ignored():
  opt = exadam_optax.exadam(1e-2)
  want, _ = _run(opt, 3)
  got, _ = _run(opt, 3, value=jnp.asarray(2.0), key=jax.random.key(0))
  chex.assert_trees_all_equal(got, want)
  direct = exadam_optax.scale_by_exadam()
  params = _params()
  updates, _ = direct.update(
    _grads(1)[0], direct.init(params), params, value=1.0
  )
  assert jax.tree.structure(updates) == jax.tree.structure(params)


def test_tree_map_params_over_state():
  opt = exadam_optax.exadam(1e-3)
  params = _params()
  state = opt.init(params)
  doubled = optax.tree.map_params(opt, lambda p: p + 1.0, state)
  np.testing.assert_array_equal(doubled[0].mu["kernel"], np.ones((4, 5)))
  assert int(doubled[0].count) == 0


def test_none_leaves_are_passed_through():
  opt = exadam_optax.scale_by_exadam()
  params = {"a": jnp.ones(2), "frozen": None}
  state = opt.init(params)
  updates, state = opt.update({"a": jnp.ones(2), "frozen": None}, state)
  assert updates["frozen"] is None and state.mu["frozen"] is None
  assert updates["a"].shape == (2,)


@pytest.mark.parametrize(
  "switch",
  ["cross_moment_debiasing", "gradient_acceleration", "dynamic_step_size"],
)
def test_each_switch_changes_the_update(switch):
  params = _params()
  grads = _grads(1)[0]
  on = exadam_optax.exadam(1e-3)
  off = exadam_optax.exadam(1e-3, **{switch: False})
  u_on, _ = on.update(grads, on.init(params), params)
  u_off, _ = off.update(grads, off.init(params), params)
  assert not np.allclose(u_on["kernel"], u_off["kernel"], rtol=1e-3)
