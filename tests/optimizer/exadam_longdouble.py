"""One EXAdam step in numpy.longdouble, transcribed from the paper.

tests/optimizer/exadam_reference.py runs whole trajectories in float64. This module
computes a single step from a given state instead, so that a test can feed it
whatever state the library reached and judge each step on its own, over the
whole range of float32 and float64. On x86 a long double has a 64-bit
significand and exponents up to about 1e4932: no intermediate of a float32 or
float64 problem (``g**2`` included) overflows or underflows, and the rounding
errors stay near 1e-19.

Written from Algorithm 1 of Adly (2024), as quoted in the docstring of
``exadam_optax.scale_by_exadam``, not from the library's code: every line is
the paper's formula in the paper's order, ``1 - b1**t`` included.
"""

from typing import NamedTuple

import numpy as np

LD = np.longdouble


class Step(NamedTuple):
  """The paper's quantities of one step, as numpy.longdouble arrays."""

  m: np.ndarray
  v: np.ndarray
  m_tilde: np.ndarray
  v_tilde: np.ndarray
  g_tilde: np.ndarray
  step_factor: np.ndarray  # ln(sqrt(2) sqrt(t + 1)), or 1 without it.
  u: np.ndarray


def debiased_second_moment(m, v, t, b1, b2, eps, cross_moment_debiasing):
  """``v~ = v / (1 - b2^t) (1 + m^2 / (m^2 + eps) b1^t)``.

  Adam's ``v / (1 - b2^t)`` without cross-moment debiasing. A function of its
  own so that a test can ask how much ``v~`` moves with ``m``.
  """
  m, v = np.asarray(m, LD), np.asarray(v, LD)
  t, b1, b2, eps = (LD(x) for x in (t, b1, b2, eps))
  if cross_moment_debiasing:
    return v / (1 - b2**t) * (1 + m**2 / (m**2 + eps) * b1**t)
  return v / (1 - b2**t)


def exadam_step(
  g,
  m_prev,
  v_prev,
  t: int,
  b1: float,
  b2: float,
  eps: float,
  *,
  cross_moment_debiasing: bool = True,
  gradient_acceleration: bool = True,
  dynamic_step_size: bool = True,
  flush_below: float = 0.0,
) -> Step:
  """Step ``t`` (1-based) of EXAdam from the state ``(m_prev, v_prev)``.

  Args:
    g: The gradient.
    m_prev, v_prev: The moments after step ``t - 1``.
    t: The step number; the state's count after the step.
    b1, b2, eps: The hyperparameters.
    cross_moment_debiasing, gradient_acceleration, dynamic_step_size: The
      paper's components; off, they become Adam's debiasing, no ``g~`` and a
      step factor of 1.
    flush_below: The inputs (``g``, ``m_prev``, ``v_prev``, ``b1``, ``b2``)
      and the terms of the moments' sums (``b1 m_prev``, ``(1 - b1) g``,
      ``b2 v_prev``, ``(1 - b2) g^2``) whose magnitude is below this number
      are replaced by zero, as by hardware that flushes subnormal numbers to
      zero; 0 gives the exact step.

  Returns:
    The step's quantities; infinite inputs give NaN or infinite ones.
  """

  def flush(x):
    x = np.asarray(x, LD)
    return np.where(np.abs(x) < flush_below, LD(0), x)

  g, m_prev, v_prev, b1, b2 = map(flush, (g, m_prev, v_prev, b1, b2))
  t, eps = LD(t), LD(eps)
  with np.errstate(all="ignore"):  # Infinite inputs give inf - inf, 0 * inf.
    m = flush(b1 * m_prev) + flush((1 - b1) * g)
    v = flush(b2 * v_prev) + flush((1 - b2) * g**2)
    # The factor in parentheses that m~ and g~ share.
    if cross_moment_debiasing:
      m_factor = 1 + v / (v + eps) * b2**t
    else:
      m_factor = LD(1)
    m_tilde = m / (1 - b1**t) * m_factor
    v_tilde = debiased_second_moment(
      m, v, t, b1, b2, eps, cross_moment_debiasing
    )
    if gradient_acceleration:
      g_tilde = g / (1 - b1**t) * m_factor
    else:
      g_tilde = np.zeros_like(g)
    if dynamic_step_size:
      step_factor = np.log(np.sqrt(LD(2)) * np.sqrt(t + 1))
    else:
      step_factor = LD(1)
    u = step_factor * (m_tilde + g_tilde) / (np.sqrt(v_tilde) + eps)
  return Step(m, v, m_tilde, v_tilde, g_tilde, step_factor, u)
