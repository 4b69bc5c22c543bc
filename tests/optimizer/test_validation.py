"""Bad input is refused early with a clear message."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import exadam_optax
from tests.optimizer import exadam_reference, problems

BAD_HYPERPARAMETERS = [
  (dict(learning_rate=-1e-3), "learning_rate", ">= 0"),
  (dict(learning_rate=math.nan), "learning_rate", ">= 0"),
  (dict(learning_rate=math.inf), "learning_rate", ">= 0"),
  (dict(eps=0.0), "eps", "at least 1.1754944e-38"),
  (dict(eps=-1e-8), "eps", "at least 1.1754944e-38"),
  (dict(eps=1e-40), "eps", "at least 1.1754944e-38"),
  (dict(b1=1.0), "b1", "[0, 1)"),
  (dict(b1=-0.1), "b1", "[0, 1)"),
  (dict(b2=1.5), "b2", "[0, 1)"),
  (dict(b2=math.nan), "b2", "[0, 1)"),
  (dict(weight_decay=-1e-4), "weight_decay", ">= 0"),
  (dict(weight_decay=jnp.asarray(-1.0)), "weight_decay", ">= 0"),
]


@pytest.mark.parametrize(("kwargs", "name", "allowed"), BAD_HYPERPARAMETERS)
def test_bad_hyperparameters_raise_at_construction(kwargs, name, allowed):
  with pytest.raises(ValueError, match=re.escape(f"`{name}` must")) as error:
    exadam_optax.exadam(**{"learning_rate": 1e-3, **kwargs})
  assert allowed in str(error.value)


def test_scale_by_exadam_validates_too():
  with pytest.raises(ValueError, match="`b2` must be in"):
    exadam_optax.scale_by_exadam(b2=1.0)


def test_boundary_values_are_accepted():
  """The ends of the allowed ranges give the float64 transcription's steps."""
  calls = []

  def negative_schedule(count):
    calls.append(count)
    return -1.0

  boundaries = [
    dict(learning_rate=0.0, b1=0.0, b2=0.0, weight_decay=0.0),
    dict(learning_rate=1e-3, b1=0.0, b2=0.0),
    dict(learning_rate=1e-3, eps=float(jnp.finfo(jnp.float32).smallest_normal)),
    # Schedules are not called at construction, and their values are not
    # checked: a negative rate is applied as it is.
    dict(learning_rate=negative_schedule, weight_decay=1e-2),
  ]
  names = sorted(problems.LEAVES)
  initial = problems.initial_params()
  stream = problems.gradient_stream(6)
  for hyperparams in boundaries:
    calls.clear()
    opt = exadam_optax.exadam(**hyperparams)
    assert calls == []
    with jax.enable_x64(True):
      params = jax.tree.map(jnp.asarray, initial)
      state = opt.init(params)
      got = []
      for grads in stream:
        updates, state = opt.update(
          jax.tree.map(jnp.asarray, grads), state, params
        )
        params = optax.apply_updates(params, updates)
        got.append(jax.device_get(updates))
    _, deltas = exadam_reference.exadam_reference(
      [initial[n] for n in names],
      [[grads[n] for n in names] for grads in stream],
      **hyperparams,
    )
    for t, (updates, delta) in enumerate(zip(got, deltas, strict=True)):
      what = f"{hyperparams}, update at step {t + 1}"
      assert all(np.all(np.isfinite(u)) for u in updates.values()), what
      problems.assert_close_to_leaf_scale(
        updates, dict(zip(names, delta, strict=True)), 1e-12, what
      )


def test_non_scalar_hyperparameter_is_refused():
  with pytest.raises(ValueError, match="`b1` must be a real scalar"):
    exadam_optax.exadam(1e-3, b1=jnp.array([0.9, 0.8]))


def test_b1_zero_still_works():
  opt = exadam_optax.exadam(1e-3, b1=0.0)
  params = jnp.ones(2)
  updates, _ = opt.update(jnp.array([1.0, -1.0]), opt.init(params), params)
  assert bool(jnp.all(jnp.isfinite(updates)))


def test_updates_not_shaped_like_the_state_are_refused():
  opt = exadam_optax.exadam(1e-3)
  params = {"a": jnp.ones(2), "b": jnp.ones(3)}
  state = opt.init(params)
  with pytest.raises(ValueError, match="tree"):
    opt.update({"a": jnp.ones(2)}, state, params)
  with pytest.raises(TypeError, match=r"shapes.*\(4,\).*\(3,\)"):
    jax.jit(opt.update)({"a": jnp.ones(2), "b": jnp.ones(4)}, state, params)
