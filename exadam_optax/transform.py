"""The EXAdam gradient transformation: ``scale_by_exadam``."""

import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from exadam_optax import _validation


class ScaleByExAdamState(NamedTuple):
  """State for the EXAdam algorithm."""

  count: chex.Array  # shape=(), dtype=jnp.int32.
  mu: optax.Updates
  nu: optax.Updates


def _log_decay(decay):
  """``log(decay)``, in float64 when ``decay`` is a Python number.

  Computing the logarithm of a Python float in double precision keeps
  ``1 - decay**t`` accurate in float32: casting ``0.999`` to float32 first
  would already make ``1 - decay`` wrong by about 1e-5 relative.
  """
  if isinstance(decay, (int, float)):
    return math.log(decay) if decay > 0 else -math.inf
  return jnp.log(decay)


def _power_and_complement(log_decay, t):
  """Returns ``decay**t`` and ``1 - decay**t`` without cancellation."""
  exponent = t * jnp.asarray(log_decay, t.dtype)
  return jnp.exp(exponent), -jnp.expm1(exponent)


def _compute_dtype(dtype) -> jnp.dtype:
  """The dtype the arithmetic is done in: ``dtype``, at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


def _ratio_saturation(dtype) -> float:
  r"""The :math:`x` above which :math:`x / (x + 1)` rounds to 1 in ``dtype``.

  For :math:`x \ge 2^{p+1}`, with :math:`p` the number of significand bits of
  ``dtype``, :math:`1 - x / (x + 1)` is below half a unit in the last place of
  1, so clipping :math:`x` there changes no rounded ratio.
  """
  return 2.0 ** (jnp.finfo(dtype).nmant + 2)


def _check_real(tree, what: str) -> None:
  for leaf in jax.tree.leaves(tree):
    if jnp.issubdtype(jnp.result_type(leaf), jnp.complexfloating):
      raise ValueError(
        f"EXAdam got complex {what} of dtype {leaf.dtype}. Its cross-moment"
        " debiasing is defined for real parameters only; optimise the real"
        " and imaginary parts as separate real parameters instead."
      )


def scale_by_exadam(
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  *,
  mu_dtype: jax.typing.DTypeLike | None = None,
  cross_moment_debiasing: bool = True,
  gradient_acceleration: bool = True,
  dynamic_step_size: bool = True,
) -> optax.GradientTransformationExtraArgs:
  r"""Rescale updates according to the EXAdam algorithm.

  The updates are the un-negated EXAdam direction, to be scaled by a (negative)
  learning rate, like :func:`optax.scale_by_adam`. With :math:`g_t` the
  incoming updates, at step :math:`t = 1, 2, \ldots`:

  .. math::

    \begin{align*}
      m_t &\leftarrow \beta_1 \cdot m_{t-1} + (1-\beta_1) \cdot g_t \\
      v_t &\leftarrow \beta_2 \cdot v_{t-1} + (1-\beta_2) \cdot g_t^2 \\
      \tilde{m}_t &\leftarrow \frac{m_t}{1-\beta_1^t}
        \left(1 + \frac{v_t}{v_t+\varepsilon}\beta_2^t\right) \\
      \tilde{v}_t &\leftarrow \frac{v_t}{1-\beta_2^t}
        \left(1 + \frac{m_t^2}{m_t^2+\varepsilon}\beta_1^t\right) \\
      \tilde{g}_t &\leftarrow \frac{g_t}{1-\beta_1^t}
        \left(1 + \frac{v_t}{v_t+\varepsilon}\beta_2^t\right) \\
      u_t &\leftarrow \ln\left(\sqrt{2}\sqrt{t+1}\right)
        \frac{\tilde{m}_t + \tilde{g}_t}{\sqrt{\tilde{v}_t} + \varepsilon}
    \end{align*}

  The three switches remove one component each, for ablations:
  ``cross_moment_debiasing=False`` drops the factors in parentheses (Adam's
  debiasing, also for :math:`\tilde{g}`), ``gradient_acceleration=False``
  drops :math:`\tilde{g}` and ``dynamic_step_size=False`` drops the
  logarithmic factor. With all three off this is :func:`optax.scale_by_adam`.

  The arithmetic is done in at least float32 whatever the dtype of the
  updates; the returned updates have the updates' dtype and the state keeps
  the dtypes it was initialised with.

  Args:
    b1: Decay rate of the exponentially weighted average of the gradients.
    b2: Decay rate of the exponentially weighted average of the squared
      gradients.
    eps: Term added to the denominators; the same term appears in all three
      places of the algorithm.
    mu_dtype: Optional dtype of the first moment accumulator; if ``None``, the
      dtype of the parameters.
    cross_moment_debiasing: Whether to use EXAdam's coupled debiasing terms
      (else Adam's).
    gradient_acceleration: Whether to add the gradient-acceleration term
      :math:`\tilde{g}` to the momentum.
    dynamic_step_size: Whether to scale the step by
      :math:`\ln(\sqrt{2}\sqrt{t+1})` (the paper's first version); the
      authors' latest code keeps it constant.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`; extra arguments to
    ``update`` are accepted and ignored.

  Raises:
    ValueError: If ``b1`` or ``b2`` is outside [0, 1) or ``eps`` is not
      positive (checked for values known at construction), or, at ``init``,
      if a parameter is complex.

  References:
    Adly, `EXAdam: The Power of Adaptive Cross-Moments
    <https://arxiv.org/abs/2412.20302>`_, 2024

  Examples:
    >>> import jax.numpy as jnp
    >>> import exadam_optax
    >>> transform = exadam_optax.scale_by_exadam()
    >>> params = jnp.array([1.0, -2.0])
    >>> state = transform.init(params)
    >>> updates, state = transform.update(jnp.array([0.5, 0.0]), state)
    >>> updates
    Array([11.057218,  0.      ], dtype=float32)
    >>> state.count
    Array(1, dtype=int32)
  """
  _validation.check_decay_rate("b1", b1)
  _validation.check_decay_rate("b2", b2)
  _validation.check_eps(eps)
  mu_dtype = (
    None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)
  )
  log_b1 = _log_decay(b1)
  log_b2 = _log_decay(b2)

  def init_fn(params):
    _check_real(params, "parameters")
    mu = optax.tree.zeros_like(params, dtype=mu_dtype)
    nu = optax.tree.zeros_like(params)
    return ScaleByExAdamState(count=jnp.zeros([], jnp.int32), mu=mu, nu=nu)

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    chex.assert_trees_all_equal_structs(updates, state.nu)
    chex.assert_trees_all_equal_shapes(updates, state.nu)
    _check_real(updates, "updates")
    count_inc = optax.safe_increment(state.count)
    scalar_dtype = _compute_dtype(optax.tree.dtype(updates, "highest"))
    t = count_inc.astype(scalar_dtype)
    b1_t, debias1 = _power_and_complement(log_b1, t)
    b2_t, debias2 = _power_and_complement(log_b2, t)
    step_size = 0.5 * jnp.log(2.0 * (t + 1.0)) if dynamic_step_size else 1.0
    # Scalar factors, computed once per step rather than once per element.
    scale = step_size / debias1
    inv_debias2 = 1.0 / debias2
    inv_eps = 1.0 / jnp.asarray(eps, scalar_dtype)

    def leaf_update(g, mu, nu):
      # Per element, one square root and two divisions (Adam: one of each).
      # With x = v / eps, the momentum's cross-moment factor is
      # 1 + b2^t v / (v + eps) = (a + b2^t x) / a for a = 1 + x, and a joins
      # the final denominator. Clipping x where x / (1 + x) rounds to 1
      # anyway keeps that product of denominators finite.
      dtype = _compute_dtype(g.dtype)
      g_c = g.astype(dtype)
      m = b1 * mu.astype(dtype) + (1.0 - b1) * g_c
      v = b2 * nu.astype(dtype) + (1.0 - b2) * jnp.square(g_c)
      momentum = m + g_c if gradient_acceleration else m
      if cross_moment_debiasing:
        m_sq = jnp.square(m)
        v_tilde = v * (1.0 + m_sq / (m_sq + eps) * b1_t.astype(dtype))
        denominator = jnp.sqrt(v_tilde * inv_debias2.astype(dtype)) + eps
        x = jnp.minimum(v * inv_eps.astype(dtype), _ratio_saturation(dtype))
        a = x + 1.0
        momentum = momentum * (a + b2_t.astype(dtype) * x)
        direction = momentum / (a * denominator)
      else:
        direction = momentum / (jnp.sqrt(v * inv_debias2.astype(dtype)) + eps)
      direction = scale.astype(dtype) * direction
      return (
        direction.astype(g.dtype),
        m.astype(mu.dtype),
        v.astype(nu.dtype),
      )

    is_none = lambda x: x is None  # noqa: E731
    results = jax.tree.map(
      lambda g, mu, nu: None if g is None else leaf_update(g, mu, nu),
      updates,
      state.mu,
      state.nu,
      is_leaf=is_none,
    )
    treedef = jax.tree.structure(updates, is_leaf=is_none)
    flat = treedef.flatten_up_to(results)
    new_updates, mu, nu = (
      treedef.unflatten([None if r is None else r[i] for r in flat])
      for i in range(3)
    )
    return new_updates, ScaleByExAdamState(count=count_inc, mu=mu, nu=nu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
