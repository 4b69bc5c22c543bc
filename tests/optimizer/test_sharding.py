"""EXAdam's state under jax.sharding (8 host CPU devices, see conftest.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import exadam_optax


@pytest.fixture(scope="module")
def mesh():
  if jax.device_count() < 8:
    pytest.skip(
      "needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8"
    )
  devices = np.array(jax.devices()[:8]).reshape(4, 2)
  return Mesh(devices, ("data", "model"))


def test_init_accepts_shape_dtype_structs():
  opt = exadam_optax.exadam(1e-3)
  abstract = {
    "w": jax.ShapeDtypeStruct((8, 4), jnp.float32),
    "b": jax.ShapeDtypeStruct((4,), jnp.bfloat16),
  }
  state = opt.init(abstract)
  assert (
    state[0].mu["w"].shape == (8, 4) and state[0].nu["b"].dtype == jnp.bfloat16
  )
  shapes = jax.eval_shape(opt.init, abstract)
  assert shapes[0].mu["w"] == jax.ShapeDtypeStruct((8, 4), jnp.float32)
  assert shapes[0].count == jax.ShapeDtypeStruct((), jnp.int32)


def _explicit_mesh():
  return jax.make_mesh(
    (4, 2), ("data", "model"), axis_types=(AxisType.Explicit,) * 2
  )


def test_explicit_sharding_mode_under_set_mesh(mesh):
  explicit = _explicit_mesh()
  with jax.set_mesh(explicit):
    params = jax.device_put(
      {"w": jnp.arange(64.0).reshape(16, 4)},
      {"w": NamedSharding(explicit, P("data", "model"))},
    )
    opt = exadam_optax.exadam(1e-3)
    state = opt.init(params)
    updates, state = jax.jit(opt.update)(
      jax.tree.map(jnp.cos, params), state, params
    )
  for leaf in (updates["w"], state[0].mu["w"], state[0].nu["w"]):
    assert leaf.sharding.spec == P("data", "model")


def test_state_keeps_parameter_sharding_through_jitted_update(mesh):
  shardings = {
    "w": NamedSharding(mesh, P("data", "model")),
    "b": NamedSharding(mesh, P("model")),
    "s": NamedSharding(mesh, P()),
  }
  params = {
    "w": jnp.arange(64.0).reshape(16, 4),
    "b": jnp.arange(4.0),
    "s": jnp.asarray(2.0),
  }
  params = jax.device_put(params, shardings)
  opt = exadam_optax.exadam(1e-3, weight_decay=1e-2)
  eager_state = opt.init(params)
  for name in (
    "w",
    "b",
  ):  # A replicated scalar comes back uncommitted, as in optax.
    want = shardings[name]
    assert (
      eager_state[0].mu[name].sharding.is_equivalent_to(want, params[name].ndim)
    )
  state = jax.jit(opt.init)(params)

  @jax.jit
  def step(params, state):
    grads = jax.tree.map(lambda p: jnp.cos(p), params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(2):
    params, state = step(params, state)
  for name, sharding in shardings.items():
    for leaf in (params[name], state[0].mu[name], state[0].nu[name]):
      assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), name


def test_sharded_update_equals_unsharded(mesh):
  params = {"w": jnp.linspace(-1.0, 1.0, 64).reshape(16, 4)}
  grads = {"w": jnp.sin(10 * params["w"])}
  opt = exadam_optax.exadam(1e-2)
  want, _ = opt.update(grads, opt.init(params), params)
  sharding = {"w": NamedSharding(mesh, P("data", "model"))}
  sharded = jax.device_put(params, sharding)
  got, _ = jax.jit(opt.update)(
    jax.device_put(grads, sharding), jax.jit(opt.init)(sharded), sharded
  )
  np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)
