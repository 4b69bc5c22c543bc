"""EXAdam against an independent float64 transcription of Algorithm 1."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import exadam_optax
from tests.optimizer import exadam_reference, problems

NUM_STEPS = 200
SWITCHES = [
  dict(
    cross_moment_debiasing=c,
    gradient_acceleration=g,
    dynamic_step_size=d,
  )
  for c, g, d in itertools.product([True, False], repeat=3)
]
HYPERPARAMS = {
  "defaults": dict(learning_rate=1e-3),
  "custom": dict(
    learning_rate=3e-3, b1=0.8, b2=0.99, eps=1e-6, weight_decay=1e-2
  ),
}


def _run_exadam(dtype, hyperparams, switches, num_steps=NUM_STEPS):
  """Runs exadam on the shared problem; returns params, updates and inputs."""
  params = jax.tree.map(
    lambda p: jnp.asarray(p, dtype), problems.initial_params()
  )
  stream = [
    jax.tree.map(lambda g: jnp.asarray(g, dtype), grads)
    for grads in problems.gradient_stream(num_steps)
  ]
  opt = exadam_optax.exadam(**hyperparams, **switches)
  state = opt.init(params)

  @jax.jit
  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, updates

  initial = params
  all_updates = []
  for grads in stream:
    params, state, updates = step(params, state, grads)
    all_updates.append(updates)
  return initial, stream, params, all_updates


def _reference(initial, stream, hyperparams, switches):
  names = sorted(initial)
  as_list = lambda tree: [np.asarray(tree[n], np.float64) for n in names]  # noqa: E731
  final, deltas = exadam_reference.exadam_reference(
    as_list(initial), [as_list(g) for g in stream], **hyperparams, **switches
  )
  to_dict = lambda arrays: dict(zip(names, arrays, strict=True))  # noqa: E731
  return to_dict(final), [to_dict(d) for d in deltas]


@pytest.mark.parametrize("hp_name", sorted(HYPERPARAMS))
@pytest.mark.parametrize(
  "switches", SWITCHES, ids=lambda s: "-".join(str(int(v)) for v in s.values())
)
@pytest.mark.parametrize(
  ("dtype", "rtol"), [("float64", 1e-12), ("float32", 1e-5)], ids=["x64", "f32"]
)
def test_matches_float64_transcription(dtype, rtol, switches, hp_name):
  hyperparams = HYPERPARAMS[hp_name]
  with jax.enable_x64(dtype == "float64"):
    initial, stream, final, updates = _run_exadam(
      jnp.dtype(dtype), hyperparams, switches
    )
    assert all(
      leaf.dtype == jnp.dtype(dtype) for leaf in jax.tree.leaves(final)
    )
  want_final, want_deltas = _reference(initial, stream, hyperparams, switches)
  problems.assert_close_to_leaf_scale(final, want_final, rtol, "params")
  for t in (0, 1, 4, 5, 50, NUM_STEPS - 1):
    problems.assert_close_to_leaf_scale(
      updates[t], want_deltas[t], rtol, f"update at step {t + 1}"
    )


def test_first_step_matches_elementwise():
  """At t = 1 every non-zero coordinate moves by about 11 learning rates."""
  params = {"w": jnp.array([1.0, -2.0, 3.0, 0.5])}
  grads = {"w": jnp.array([0.3, -40.0, 0.0, 1e-3])}
  opt = exadam_optax.exadam(learning_rate=1e-3)
  updates, _ = opt.update(grads, opt.init(params), params)
  _, deltas = exadam_reference.exadam_reference(
    [np.asarray(params["w"])], [[np.asarray(grads["w"])]]
  )
  np.testing.assert_allclose(updates["w"], deltas[0][0], rtol=1e-6)
  assert float(updates["w"][2]) == 0.0
  np.testing.assert_allclose(np.abs(updates["w"][:2]), 11.0e-3, rtol=0.01)


def test_learning_rate_schedule_matches_reference():
  schedule = optax.cosine_decay_schedule(3e-3, decay_steps=120)
  hyperparams = dict(learning_rate=schedule, weight_decay=1e-3)
  with jax.enable_x64(True):
    initial, stream, final, _ = _run_exadam(jnp.float64, hyperparams, {}, 150)
  # The same schedule, written out in Python floats.
  lr = lambda i: 3e-3 * 0.5 * (1 + math.cos(math.pi * min(i, 120) / 120))  # noqa: E731
  want_final, _ = _reference(
    initial, stream, dict(learning_rate=lr, weight_decay=1e-3), {}
  )
  problems.assert_close_to_leaf_scale(final, want_final, 1e-12, "params")


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize(
  ("dtype", "rtol"), [("float64", 1e-12), ("float32", 1e-5)], ids=["x64", "f32"]
)
def test_all_components_off_is_adam(dtype, rtol, weight_decay):
  """With every component off, exadam is optax.adam (optax.adamw with decay).

  In float32 the comparison is relative to each leaf's scale: optax.adam
  computes ``1 - 0.999**t`` in float32, which is off by about 1e-5 relative at
  small t, so single entries near zero differ by a little more than that.
  """
  exadam = exadam_optax.exadam(
    learning_rate=1e-2,
    weight_decay=weight_decay,
    cross_moment_debiasing=False,
    gradient_acceleration=False,
    dynamic_step_size=False,
  )
  adam = (
    optax.adamw(1e-2, weight_decay=weight_decay)
    if weight_decay
    else optax.adam(1e-2)
  )

  def run(opt):
    params = jax.tree.map(
      lambda p: jnp.asarray(p, dtype), problems.initial_params()
    )
    state = opt.init(params)

    @jax.jit
    def step(params, state, grads):
      updates, state = opt.update(grads, state, params)
      return optax.apply_updates(params, updates), state

    for grads in problems.gradient_stream(100):
      grads = jax.tree.map(lambda g: jnp.asarray(g, dtype), grads)
      params, state = step(params, state, grads)
    return params

  with jax.enable_x64(dtype == "float64"):
    got, want = run(exadam), run(adam)
  problems.assert_close_to_leaf_scale(got, want, rtol, "params")
  if dtype == "float64":
    for name in want:
      np.testing.assert_allclose(got[name], want[name], rtol=rtol)


def test_bias_correction_is_accurate_in_float32():
  """The first step's v~ uses 1 - b2 exactly, not 1 - float32(0.999)."""
  opt = exadam_optax.scale_by_exadam(
    cross_moment_debiasing=False, gradient_acceleration=False
  )
  g = jnp.array([2.0], jnp.float32)
  updates, _ = opt.update(g, opt.init(g))
  # Adam's first step is g / (|g| + eps), here times ln(sqrt(2) sqrt(2)).
  np.testing.assert_allclose(
    updates, np.log(2.0) * 2.0 / (2.0 + 1e-8), rtol=2e-7
  )
  # Rounding 0.999 to float32 before forming 1 - b2 would give a step 6e-6
  # off, which the tolerance above tells apart from the exact one.
  naive_v_tilde = np.float32(4e-3) / (1 - np.float32(0.999))
  naive = np.log(2.0) * 2.0 / (np.sqrt(np.float64(naive_v_tilde)) + 1e-8)
  assert abs(float(updates[0]) - naive) > 5e-6 * naive
