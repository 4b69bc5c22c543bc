"""An independent float64 NumPy transcription of the paper's Algorithm 1.

Written from the paper's equations (Adly, 2024, arXiv:2412.20302,
Algorithm 1, plus the authors' decoupled weight decay), not from the library,
so the tests can compare the two. Every quantity is computed in float64 with
the most literal formula: ``1 - b1**t``, not a numerically careful variant.
"""

import math
from collections.abc import Callable, Sequence

import numpy as np


def exadam_reference(
  params: Sequence[np.ndarray],
  grads_per_step: Sequence[Sequence[np.ndarray]],
  learning_rate: float | Callable[[int], float] = 1e-3,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  weight_decay: float = 0.0,
  cross_moment_debiasing: bool = True,
  gradient_acceleration: bool = True,
  dynamic_step_size: bool = True,
) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
  """Runs EXAdam on a list of arrays with a given sequence of gradients.

  Args:
    params: Initial parameters, one array per leaf.
    grads_per_step: For each step, the gradients, one array per leaf.
    learning_rate: The base step size a, or a function of the 0-based step
      index giving it (as an optax schedule does).
    b1, b2, eps, weight_decay: The hyperparameters.
    cross_moment_debiasing, gradient_acceleration, dynamic_step_size: The
      paper's three components; switched off they become Adam's debiasing, no
      g~, and a constant step size.

  Returns:
    The final parameters and, for each step, the parameter change
    ``-a * wd * theta_{t-1} - a_t * (m~ + g~) / (sqrt(v~) + eps)``, computed
    from its terms rather than as a difference of parameters.
  """
  theta = [np.asarray(p, np.float64).copy() for p in params]
  m = [np.zeros_like(p) for p in theta]
  v = [np.zeros_like(p) for p in theta]
  deltas = []
  for index, grads in enumerate(grads_per_step):
    t = index + 1
    a = learning_rate(index) if callable(learning_rate) else learning_rate
    step = []
    for i, g in enumerate(grads):
      g = np.asarray(g, np.float64)
      decay = -a * weight_decay * theta[i]
      theta[i] = theta[i] + decay
      m[i] = b1 * m[i] + (1.0 - b1) * g
      v[i] = b2 * v[i] + (1.0 - b2) * g**2
      if cross_moment_debiasing:
        m_tilde = m[i] / (1.0 - b1**t) * (1.0 + v[i] / (v[i] + eps) * b2**t)
        v_tilde = (
          v[i] / (1.0 - b2**t) * (1.0 + m[i] ** 2 / (m[i] ** 2 + eps) * b1**t)
        )
        g_tilde = g / (1.0 - b1**t) * (1.0 + v[i] / (v[i] + eps) * b2**t)
      else:
        m_tilde = m[i] / (1.0 - b1**t)
        v_tilde = v[i] / (1.0 - b2**t)
        g_tilde = g / (1.0 - b1**t)
      if not gradient_acceleration:
        g_tilde = np.zeros_like(g)
      a_t = (
        a * math.log(math.sqrt(2.0) * math.sqrt(t + 1))
        if dynamic_step_size
        else a
      )
      direction = -a_t * (m_tilde + g_tilde) / (np.sqrt(v_tilde) + eps)
      theta[i] = theta[i] + direction
      step.append(decay + direction)
    deltas.append(step)
  return theta, deltas
