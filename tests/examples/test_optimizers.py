"""The optimizer registry against float64 transcriptions of the PyTorch code.

Each reference below transcribes, step for step, the update rule of the PyTorch
class that the registry entry mirrors (torch.optim for Adam, AdamW, AdaDelta,
RMSProp and SGD; torch_optimizer for Adafactor; apple/ml-ademamix for
AdEMAMix; Bernstein et al.'s Signum), with that class's defaults.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import exadam_optax
from examples.common import config as config_lib
from examples.common import optimizers

SHAPES = {"matrix": (5, 3), "vector": (4,)}
NUM_STEPS = 6
LR = 1e-2


def _problem(seed: int = 0):
  """Initial parameters and a fixed sequence of gradients, in float64."""
  rng = np.random.default_rng(seed)
  params = {name: rng.normal(size=shape) for name, shape in SHAPES.items()}
  grads = [
    {name: rng.normal(size=shape) for name, shape in SHAPES.items()}
    for _ in range(NUM_STEPS)
  ]
  return params, grads


def _run_registry(name, params, grads, learning_rate=LR, **kwargs):
  tx = optimizers.make_optimizer(name, learning_rate, **kwargs)
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for grad in grads:
    grad = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), grad)
    updates, state = update(grad, state, params)
    params = optax.apply_updates(params, updates)
  return jax.tree.map(np.asarray, params)


def _torch_adam(p, grads, lr, wd=0.0, decoupled=False, eps=1e-8):
  b1, b2 = 0.9, 0.999
  m, v = np.zeros_like(p), np.zeros_like(p)
  for t, g in enumerate(grads, start=1):
    if decoupled:
      p = p * (1 - lr * wd)
    else:
      g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    denom = np.sqrt(v) / math.sqrt(1 - b2**t) + eps
    p = p - lr / (1 - b1**t) * m / denom
  return p


def _torch_adadelta(p, grads, lr, wd=0.0, rho=0.9, eps=1e-6):
  square_avg, acc_delta = np.zeros_like(p), np.zeros_like(p)
  for g in grads:
    g = g + wd * p
    square_avg = rho * square_avg + (1 - rho) * g * g
    delta = np.sqrt(acc_delta + eps) / np.sqrt(square_avg + eps) * g
    acc_delta = rho * acc_delta + (1 - rho) * delta * delta
    p = p - lr * delta
  return p


def _torch_rmsprop(p, grads, lr, wd=0.0, alpha=0.99, eps=1e-8):
  square_avg = np.zeros_like(p)
  for g in grads:
    g = g + wd * p
    square_avg = alpha * square_avg + (1 - alpha) * g * g
    p = p - lr * g / (np.sqrt(square_avg) + eps)
  return p


def _torch_sgd(p, grads, lr, wd=0.0, momentum=0.9):
  buf = None
  for g in grads:
    g = g + wd * p
    buf = g.copy() if buf is None else momentum * buf + g
    p = p - lr * buf
  return p


def _signum(p, grads, lr, wd=0.0, momentum=0.9):
  buf = np.zeros_like(p)
  for g in grads:
    g = g + wd * p
    buf = momentum * buf + (1 - momentum) * g
    p = p - lr * np.sign(buf)
  return p


def _ml_ademamix(p, grads, lr, wd=0.0, alpha=2.0, eps=1e-8):
  b1, b2, b3 = 0.9, 0.999, 0.9999
  m1, m2, nu = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
  for t, g in enumerate(grads, start=1):
    m1 = b1 * m1 + (1 - b1) * g
    m2 = b3 * m2 + (1 - b3) * g
    nu = b2 * nu + (1 - b2) * g * g
    denom = np.sqrt(nu) / math.sqrt(1 - b2**t) + eps
    update = (m1 / (1 - b1**t) + alpha * m2) / denom + wd * p
    p = p - lr * update
  return p


def _rms(x):
  return np.linalg.norm(x) / math.sqrt(x.size)


def _torch_optimizer_adafactor(p, grads, lr, wd=0.0):
  """torch_optimizer.Adafactor with its defaults; ``lr`` is ignored."""
  del lr
  eps1, eps2, clip, decay_rate = 1e-30, 1e-3, 1.0, -0.8
  factored = p.ndim >= 2
  if factored:
    row, col = np.zeros(p.shape[:-1]), np.zeros(p.shape[:-2] + p.shape[-1:])
  else:
    v = np.zeros_like(p)
  for t, g in enumerate(grads, start=1):
    step_size = min(1e-2, 1 / math.sqrt(t)) * max(eps2, _rms(p))
    beta2t = 1.0 - t**decay_rate
    update = g * g + eps1
    if factored:
      row = beta2t * row + (1 - beta2t) * update.mean(axis=-1)
      col = beta2t * col + (1 - beta2t) * update.mean(axis=-2)
      r_factor = 1 / np.sqrt(row / row.mean(axis=-1, keepdims=True))
      c_factor = 1 / np.sqrt(col)
      update = r_factor[..., None] * c_factor[..., None, :] * g
    else:
      v = beta2t * v + (1 - beta2t) * update
      update = g / np.sqrt(v)
    update = update / max(1.0, _rms(update) / clip) * step_size
    if wd:
      p = p - wd * step_size * p
    p = p - update
  return p


REFERENCES = {
  "adam": lambda p, g, lr, wd: _torch_adam(p, g, lr, wd),
  "adamw": lambda p, g, lr, wd: _torch_adam(p, g, lr, wd, decoupled=True),
  "adadelta": _torch_adadelta,
  "rmsprop": _torch_rmsprop,
  "sgd": _torch_sgd,
  "signum": _signum,
  "ademamix": _ml_ademamix,
  "adafactor": _torch_optimizer_adafactor,
}
TORCH_DEFAULT_WEIGHT_DECAY = {"adamw": 1e-2}
# AdaDelta's steps are about sqrt(eps) times the learning rate: use torch's
# default rate 1.0 so that the parameters move measurably.
TEST_LEARNING_RATES = {"adadelta": 1.0}


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("weight_decay", [None, 0.05])
def test_matches_pytorch_reference(name, weight_decay):
  params, grads = _problem()
  learning_rate = TEST_LEARNING_RATES.get(name, LR)
  got = _run_registry(
    name, params, grads, learning_rate, weight_decay=weight_decay
  )
  wd = (
    TORCH_DEFAULT_WEIGHT_DECAY.get(name, 0.0)
    if weight_decay is None
    else weight_decay
  )
  for leaf in SHAPES:
    expected = REFERENCES[name](
      params[leaf], [g[leaf] for g in grads], learning_rate, wd
    )
    # The parameters must have moved, or the comparison proves nothing.
    assert np.max(np.abs(expected - params[leaf])) > 1e-3
    np.testing.assert_allclose(got[leaf], expected, rtol=2e-5, atol=2e-6)


def test_exadam_entry_passes_switches_and_weight_decay():
  params, grads = _problem(1)
  switches = optimizers.ExAdamSwitches(
    cross_moment_debiasing=False, dynamic_step_size=False
  )
  got = _run_registry(
    "exadam", params, grads, weight_decay=0.1, switches=switches
  )
  expected = _run_direct(
    exadam_optax.exadam(
      LR,
      weight_decay=0.1,
      cross_moment_debiasing=False,
      gradient_acceleration=True,
      dynamic_step_size=False,
    ),
    params,
    grads,
  )
  for leaf in SHAPES:
    np.testing.assert_allclose(got[leaf], expected[leaf], rtol=1e-6)


def test_exadam_without_components_is_adam():
  params, grads = _problem(2)
  off = optimizers.ExAdamSwitches(False, False, False)
  got = _run_registry("exadam", params, grads, switches=off)
  for leaf in SHAPES:
    expected = _torch_adam(params[leaf], [g[leaf] for g in grads], LR)
    np.testing.assert_allclose(got[leaf], expected, rtol=2e-5, atol=2e-6)


def _run_direct(tx, params, grads):
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for grad in grads:
    grad = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), grad)
    updates, state = update(grad, state, params)
    params = optax.apply_updates(params, updates)
  return jax.tree.map(np.asarray, params)


@pytest.mark.parametrize("name", optimizers.OPTIMIZER_NAMES)
def test_learning_rate_lives_in_state_and_scales_every_step(name):
  """Scaling the injected rate by 0.1 scales the first update by 0.1.

  This is what ReduceLROnPlateau relies on, for every optimizer (Adafactor's
  rate is a multiplier of its relative step).
  """
  params, grads = _problem(3)
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  grad = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), grads[0])
  tx = optimizers.make_optimizer(name, LR)
  state = tx.init(params)
  initial = optimizers.initial_learning_rate(name, LR)
  assert float(optimizers.get_learning_rate(state)) == pytest.approx(initial)
  update = jax.jit(tx.update)
  full, _ = update(grad, state, params)
  lowered_state = optimizers.set_learning_rate(state, initial * 0.1)
  assert float(optimizers.get_learning_rate(lowered_state)) == pytest.approx(
    initial * 0.1
  )
  lowered, _ = update(grad, lowered_state, params)
  for leaf in SHAPES:
    np.testing.assert_allclose(lowered[leaf], 0.1 * full[leaf], rtol=1e-5)
    assert np.max(np.abs(full[leaf])) > 0


def test_the_update_reads_the_learning_rate_from_the_state():
  """So a run may build its optimizer with any rate and set the state's."""
  params, grads = _problem(6)
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  grad = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), grads[0])
  state = optimizers.make_optimizer("adam", 5e-2).init(params)
  assert float(optimizers.get_learning_rate(state)) == pytest.approx(5e-2)
  from_state, _ = optimizers.make_optimizer("adam", 1.0).update(
    grad, state, params
  )
  expected, _ = optimizers.make_optimizer("adam", 5e-2).update(
    grad, state, params
  )
  for leaf in SHAPES:
    np.testing.assert_array_equal(from_state[leaf], expected[leaf])


def test_adafactor_ignores_learning_rate_like_torch_optimizer():
  params, grads = _problem(4)
  tx = optimizers.make_optimizer("adafactor", 123.0)
  state = tx.init(jax.tree.map(jnp.asarray, params))
  assert float(optimizers.get_learning_rate(state)) == 1.0
  small = _run_registry("adafactor", params, grads[:2], learning_rate=1e-4)
  large = _run_registry("adafactor", params, grads[:2], learning_rate=123.0)
  for leaf in SHAPES:
    np.testing.assert_array_equal(small[leaf], large[leaf])


def test_relative_step_schedule():
  counts = jnp.array([0, 99, 9_999, 39_999])
  np.testing.assert_allclose(
    optimizers.adafactor_relative_step(counts), [1e-2, 1e-2, 1e-2, 5e-3]
  )


@pytest.mark.parametrize(
  "changes, message",
  [
    (dict(optimizer="adamax"), "Unknown optimizer 'adamax'"),
    (dict(lr=0.0), "lr must be positive"),
    (dict(lr=math.nan), "lr must be a finite number"),
    (dict(weight_decay=-1.0), "weight_decay must be a finite number >= 0"),
    (
      dict(optimizer="sgd", gradient_acceleration=False),
      "switches .* only apply to --optimizer exadam",
    ),
  ],
)
def test_the_config_rejects_bad_optimizer_settings(changes, message):
  """The config checks what make_optimizer is given, once for every run."""
  with pytest.raises(ValueError, match=message):
    config_lib.RunConfig(**changes)


def test_learning_rate_accessors_reject_foreign_state():
  state = optax.adam(1e-3).init({"w": jnp.ones(2)})
  with pytest.raises(TypeError, match="make_optimizer"):
    optimizers.get_learning_rate(state)
  with pytest.raises(TypeError, match="make_optimizer"):
    optimizers.set_learning_rate(state, 1e-4)


def test_cosine_schedule_warms_up_then_decays_to_the_final_fraction():
  schedule = optimizers.Schedule("cosine", 100, 0.05, 0.1)
  assert schedule.warmup_steps == 5
  assert schedule.at(0) == 0.0
  assert schedule.at(5) == pytest.approx(1.0)
  assert schedule.at(100) == pytest.approx(0.1)
  assert schedule.at(2) == pytest.approx(0.4)
  middle = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))
  assert schedule.at(5 + 95 // 2) == pytest.approx(middle, rel=2e-2)
  assert optimizers.Schedule().multiplier() is None
  assert optimizers.Schedule().at(7) == 1.0


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(kind="linear"), "schedule must be 'constant' or 'cosine'"),
    (dict(total_steps=0), "total_steps must be a positive integer"),
    (dict(warmup_fraction=1.0), r"warmup_fraction must lie in \[0, 1\)"),
    (dict(final_fraction=-0.1), r"final_fraction must lie in \[0, 1\]"),
  ],
)
def test_bad_schedules_are_rejected(kwargs, message):
  with pytest.raises(ValueError, match=message):
    optimizers.Schedule(**kwargs)


@pytest.mark.parametrize(
  "name, reference",
  [
    ("adam", lambda rate: optax.adam(rate, eps=1e-8)),
    ("adamw", lambda rate: optax.adamw(rate, eps=1e-8, weight_decay=1e-2)),
    ("exadam", exadam_optax.exadam),
  ],
)
def test_a_scheduled_rate_equals_optax_with_that_schedule(name, reference):
  """The registry scales each update by the schedule's multiplier; optax
  schedules the rate itself (weight decay included): the same updates."""
  params, grads = _problem(5)
  schedule = optimizers.Schedule("cosine", NUM_STEPS, 0.34, 0.1)
  got = _run_registry(name, params, grads, schedule=schedule)
  rate = optax.warmup_cosine_decay_schedule(
    0.0, LR, warmup_steps=2, decay_steps=NUM_STEPS, end_value=0.1 * LR
  )
  tx = reference(rate)
  expected = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  state = tx.init(expected)
  for grad in grads:
    grad = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), grad)
    updates, state = tx.update(grad, state, expected)
    expected = optax.apply_updates(expected, updates)
  for leaf in SHAPES:
    np.testing.assert_allclose(got[leaf], expected[leaf], rtol=1e-6, atol=1e-7)
    assert not np.allclose(got[leaf], params[leaf])
