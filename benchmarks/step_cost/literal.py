"""EXAdam with the paper's equations evaluated literally, for comparison.

:func:`exadam_optax.scale_by_exadam` evaluates Algorithm 1 in a rearranged
form (see its docstring). This module evaluates each equation as written,
one division per fraction, so that the step-cost benchmark can measure what
the rearrangement saves (``--optimizers adam exadam exadam-literal``). It is
not overflow-safe and not meant for training.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import exadam_optax


def scale_by_exadam_literal(
  b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
  """The un-negated EXAdam direction, each equation of the paper as written."""

  def init_fn(params):
    return exadam_optax.ScaleByExAdamState(
      count=jnp.zeros([], jnp.int32),
      mu=optax.tree.zeros_like(params),
      nu=optax.tree.zeros_like(params),
    )

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    t = count.astype(jnp.float32)
    b1_t, b2_t = b1**t, b2**t
    step_size = jnp.log(jnp.sqrt(2.0) * jnp.sqrt(t + 1.0))

    def leaf(g, m, v):
      m = b1 * m + (1 - b1) * g
      v = b2 * v + (1 - b2) * g**2
      m_tilde = m / (1 - b1_t) * (1 + v / (v + eps) * b2_t)
      v_tilde = v / (1 - b2_t) * (1 + m**2 / (m**2 + eps) * b1_t)
      g_tilde = g / (1 - b1_t) * (1 + v / (v + eps) * b2_t)
      return step_size * (m_tilde + g_tilde) / (jnp.sqrt(v_tilde) + eps), m, v

    results = jax.tree.map(leaf, updates, state.mu, state.nu)
    is_triple = lambda x: isinstance(x, tuple)  # noqa: E731
    new_updates, mu, nu = (
      jax.tree.map(lambda r, i=i: r[i], results, is_leaf=is_triple)
      for i in range(3)
    )
    return new_updates, exadam_optax.ScaleByExAdamState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def exadam_literal(learning_rate: float = 1e-3) -> optax.GradientTransformation:
  """:func:`scale_by_exadam_literal` scaled by the learning rate."""
  return optax.chain(
    scale_by_exadam_literal(), optax.scale_by_learning_rate(learning_rate)
  )
