"""EXAdam: Adam with adaptive cross-moments.

One module, in the form of ``optax.contrib``'s optimizers: the state, the
gradient transformation :func:`scale_by_exadam`, the optimizer :func:`exadam`
and the checks of their hyperparameters.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax


class ScaleByExAdamState(NamedTuple):
  """State for the EXAdam algorithm.

  Attributes:
    count: The number of updates so far, an int32 scalar that saturates at
      its largest value instead of overflowing.
    mu: The first moment :math:`m_t`, a tree like the parameters, of dtype
      ``mu_dtype`` (by default the parameters').
    nu: The second moment :math:`v_t`, a tree like the parameters, of their
      dtype.
  """

  count: chex.Array  # shape=(), dtype=jnp.int32.
  mu: optax.Updates
  nu: optax.Updates


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

  The code evaluates these equations in a rearranged but equal form, with
  one division and one square root per element, in which no intermediate
  overflows or underflows where the result fits (written literally,
  :math:`g_t^2` alone overflows float32 for gradients above about 1.8e19).
  With :math:`x = v_t/\varepsilon` and :math:`y = m_t^2/\varepsilon`, the
  numerator and denominator of :math:`u_t` are multiplied by
  :math:`(1+x)(1+y)`:

  .. math::

    u_t = \frac{\ln\left(\sqrt{2}\sqrt{t+1}\right)}{1-\beta_1^t}
      \frac{(m_t + g_t)\left(1 + (1+\beta_2^t)x\right)(1+y)}
      {(1+x)\left(\sqrt{v_t\left(1 + (1+\beta_1^t)y\right)(1+y)
      /(1-\beta_2^t)} + \varepsilon(1+y)\right)},

  where :math:`x` and :math:`y` are clipped at :math:`2^{p+2}` (:math:`p`
  the mantissa bits), beyond which :math:`x/(1+x)` and :math:`y/(1+y)` round
  to 1. :math:`(1-\beta_2)g_t^2` is formed as
  :math:`(\sqrt{1-\beta_2}\,g_t)^2`; where :math:`v_t` is large,
  :math:`v_t` and :math:`1+y` are scaled down together so that the product
  under the root does not overflow; and the quotient of the factors is
  multiplied by the momentum and the step-size factor in an order that
  depends on its size.
  ``python -m benchmarks.step_cost --optimizers adam exadam exadam-literal``
  times the literal equations against this form.

  The arithmetic is done in at least float32 whatever the dtype of the
  updates; the returned updates have the updates' dtype and the state keeps
  the dtypes it was initialised with.

  Args:
    b1: Decay rate of the exponentially weighted average of the gradients.
    b2: Decay rate of the exponentially weighted average of the squared
      gradients.
    eps: Term added to the denominators; the same term appears in all three
      places of the algorithm. At least the smallest normal number of the
      arithmetic's dtype (about 1.2e-38 in float32).
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
    ValueError: If ``b1`` or ``b2`` is outside [0, 1), ``eps`` is not a
      positive normal number or ``mu_dtype`` is not a real floating dtype
      (checked for values known at construction), or, at ``init``, if a
      parameter is not a real floating-point number.

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
    Array([11.057219,  0.      ], dtype=float32)
    >>> state.count
    Array(1, dtype=int32)
  """
  _check_decay_rate("b1", b1)
  _check_decay_rate("b2", b2)
  _check_eps(eps, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
  mu_dtype = _check_mu_dtype(mu_dtype)
  log_b1 = _log(b1)
  log_b2 = _log(b2)
  sqrt_one_minus_b2 = _sqrt(1.0 - b2)

  def init_fn(params):
    for leaf in jax.tree.leaves(params):
      dtype = _check_real_float("parameters", leaf)
      _check_eps(eps, _compute_dtype(dtype))
    mu = optax.tree.zeros_like(params, dtype=mu_dtype)
    nu = optax.tree.zeros_like(params)
    return ScaleByExAdamState(count=jnp.zeros([], jnp.int32), mu=mu, nu=nu)

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    updates = jax.tree.map(jnp.asarray, updates)  # Python numbers too
    chex.assert_trees_all_equal_structs(updates, state.nu)
    chex.assert_trees_all_equal_shapes(updates, state.nu)
    leaf_dtypes = [
      _check_real_float("updates", leaf) for leaf in jax.tree.leaves(updates)
    ]
    count_inc = optax.safe_increment(state.count)
    t = count_inc.astype(jnp.result_type(jnp.float32, *leaf_dtypes))
    b1_t, one_minus_b1_t = _power_and_complement(log_b1, t)
    b2_t, one_minus_b2_t = _power_and_complement(log_b2, t)
    step_size = 0.5 * jnp.log(2.0 * (t + 1.0)) if dynamic_step_size else 1.0
    # Per-step scalars, computed once per dtype rather than once per element.
    eps_t = jnp.asarray(eps, t.dtype)
    momentum_scale = step_size / one_minus_b1_t
    leaf_scalars = {}

    def scalars_for(dtype):
      if dtype not in leaf_scalars:
        leaf_scalars[dtype] = _leaf_scalars(
          dtype, b1_t, b2_t, one_minus_b2_t, momentum_scale, eps_t
        )
      return leaf_scalars[dtype]

    def exadam_leaf(g, mu, nu):
      dtype = _compute_dtype(jnp.result_type(g))
      s = scalars_for(dtype)
      g_c = jnp.asarray(g, dtype)
      m = b1 * mu.astype(dtype) + (1.0 - b1) * g_c
      v = b2 * nu.astype(dtype) + jnp.square(sqrt_one_minus_b2 * g_c)
      momentum = m + g_c if gradient_acceleration else m
      if cross_moment_debiasing:
        direction = _exadam_direction(momentum, m, v, s)
      else:
        sqrt_v_hat = jnp.sqrt(v) * s.inv_sqrt_one_minus_b2_t
        direction = _scaled_quotient(
          momentum, 1.0, s.momentum_scale, sqrt_v_hat + eps
        )
      return (
        direction.astype(jnp.result_type(g)),
        m.astype(mu.dtype),
        v.astype(nu.dtype),
      )

    results = jax.tree.map(
      lambda g, mu, nu: None if g is None else exadam_leaf(g, mu, nu),
      updates,
      state.mu,
      state.nu,
      is_leaf=_is_none,
    )
    new_updates, mu, nu = _unzip3(updates, results)
    return new_updates, ScaleByExAdamState(count=count_inc, mu=mu, nu=nu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def exadam(
  learning_rate: optax.ScalarOrSchedule = 1e-3,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  weight_decay: jax.typing.ArrayLike = 0.0,
  mask: Any | Callable[[optax.Params], Any] | None = None,
  *,
  mu_dtype: jax.typing.DTypeLike | None = None,
  cross_moment_debiasing: bool = True,
  gradient_acceleration: bool = True,
  dynamic_step_size: bool = True,
) -> optax.GradientTransformationExtraArgs:
  r"""The EXAdam optimizer.

  EXAdam (EXtended Adam) changes Adam in three ways: debiasing terms that
  couple the first and second moments, a gradient-acceleration term added to
  the momentum, and a step size that grows as :math:`\ln(\sqrt{2}\sqrt{t+1})`.
  With :math:`\alpha_t` the (possibly scheduled) learning rate,
  :math:`\lambda` the weight decay and :math:`u_t` the direction of
  :func:`exadam_optax.scale_by_exadam`, each step is

  .. math::

    \theta_t \leftarrow \theta_{t-1} - \alpha_t \left(u_t +
      \lambda \theta_{t-1}\right),

  where :math:`u_t` already holds the dynamic step factor
  :math:`\ln(\sqrt{2}\sqrt{t+1})`. The weight decay is decoupled as in AdamW
  and, as in the authors' code, scaled by the learning rate but never by the
  dynamic step factor.

  The switches turn off the paper's three components one at a time; with all
  three off, ``exadam`` is :func:`optax.adamw` (and :func:`optax.adam` when
  ``weight_decay`` is 0).

  Args:
    learning_rate: A global scaling factor, either fixed or evolving along
      iterations with a scheduler, see :func:`optax.scale_by_learning_rate`.
    b1: Decay rate of the exponentially weighted average of the gradients.
    b2: Decay rate of the exponentially weighted average of the squared
      gradients.
    eps: Term added to the denominators to improve numerical stability.
    weight_decay: Strength of the decoupled weight decay.
    mask: A tree with the same structure as (or a prefix of) the params tree,
      or a callable that returns such a tree given the params/updates. Its
      leaves are booleans saying whether weight decay applies to the
      corresponding parameter, as in :func:`optax.adamw`.
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
    The corresponding :class:`optax.GradientTransformationExtraArgs`.

  Raises:
    ValueError: If a hyperparameter known at construction is out of range:
      ``learning_rate`` or ``weight_decay`` negative or not finite, ``b1`` or
      ``b2`` outside [0, 1), ``eps`` not a positive normal number.

  References:
    Adly, `EXAdam: The Power of Adaptive Cross-Moments
    <https://arxiv.org/abs/2412.20302>`_, 2024

  Examples:
    >>> import optax
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import exadam_optax
    >>> def f(x): return jnp.sum(x ** 2)  # simple quadratic function
    >>> solver = exadam_optax.exadam(learning_rate=0.003)
    >>> params = jnp.array([1., 2., 3.])
    >>> print('Objective function: ', f(params))
    Objective function:  14.0
    >>> opt_state = solver.init(params)
    >>> for _ in range(5):
    ...  grad = jax.grad(f)(params)
    ...  updates, opt_state = solver.update(grad, opt_state, params)
    ...  params = optax.apply_updates(params, updates)
    ...  print('Objective function: {:.2E}'.format(f(params)))
    Objective function: 1.36E+01
    Objective function: 1.33E+01
    Objective function: 1.31E+01
    Objective function: 1.28E+01
    Objective function: 1.26E+01
  """
  _check_non_negative("learning_rate", learning_rate)
  _check_non_negative("weight_decay", weight_decay)
  return optax.chain(
    scale_by_exadam(
      b1=b1,
      b2=b2,
      eps=eps,
      mu_dtype=mu_dtype,
      cross_moment_debiasing=cross_moment_debiasing,
      gradient_acceleration=gradient_acceleration,
      dynamic_step_size=dynamic_step_size,
    ),
    optax.add_decayed_weights(weight_decay, mask),
    optax.scale_by_learning_rate(learning_rate),
  )


# Arithmetic helpers.


class _LeafScalars(NamedTuple):
  """The scalars one update shares across the elements of a dtype."""

  momentum_scale: jax.Array  # ln(sqrt(2) sqrt(t + 1)) / (1 - b1^t)
  twice_momentum_scale: jax.Array
  inv_sqrt_one_minus_b2_t: jax.Array
  eps: jax.Array
  inv_eps: jax.Array
  inv_sqrt_eps: jax.Array
  b2_t: jax.Array
  q_scale: jax.Array  # 1 + b2^t
  p_scale: jax.Array  # (1 + b1^t) / (1 - b2^t)
  p_shift: jax.Array  # b1^t / (1 - b2^t)
  large_v: jax.Array  # v above it is scaled by v_scale under the root
  v_scale: jax.Array  # root_scale^2
  root_scale: jax.Array  # 2^-k sqrt(1 - b2^t)
  small_v: jax.Array  # v below it gives a quotient above 2


def _leaf_scalars(
  dtype, b1_t, b2_t, one_minus_b2_t, momentum_scale, eps
) -> _LeafScalars:
  """The per-step scalars of :func:`_exadam_direction` for leaves of ``dtype``.

  Computed in the dtype of the step count (float64 if any leaf is) and cast
  to ``dtype``. ``k`` is such that ``(1 + (1 + b1^t) y)(1 + y) < 4^k`` for
  the clipped ``y``: the product under the root then stays below the largest
  number for ``v`` up to ``large_v``, and for any finite ``v`` once scaled by
  ``v_scale``.
  """
  finfo = jnp.finfo(dtype)
  k = finfo.nmant + 3
  inv_one_minus_b2_t = 1.0 / one_minus_b2_t
  v_scale = one_minus_b2_t * 2.0 ** (-2 * k)
  values = _LeafScalars(
    momentum_scale=momentum_scale,
    twice_momentum_scale=2.0 * momentum_scale,
    inv_sqrt_one_minus_b2_t=jax.lax.rsqrt(one_minus_b2_t),
    eps=eps,
    inv_eps=1.0 / eps,
    inv_sqrt_eps=jax.lax.rsqrt(eps),
    b2_t=b2_t,
    q_scale=1.0 + b2_t,
    p_scale=(1.0 + b1_t) * inv_one_minus_b2_t,
    p_shift=b1_t * inv_one_minus_b2_t,
    large_v=float(finfo.max) * v_scale,
    v_scale=v_scale,
    root_scale=jnp.sqrt(one_minus_b2_t) * 2.0**-k,
    small_v=jnp.where(eps <= 0.25, one_minus_b2_t / 32.0, 0.0),
  )
  return _LeafScalars(*(jnp.asarray(x, dtype) for x in values))


def _exadam_direction(momentum, m, v, s: _LeafScalars):
  r"""The direction of :func:`scale_by_exadam` with cross-moment debiasing.

  Evaluates the rearranged form given in :func:`scale_by_exadam`'s
  docstring. Where :math:`v` exceeds ``large_v``, :math:`v` is multiplied by
  ``v_scale`` and :math:`1+y` by its square root ``root_scale``, which
  leaves the quotient of the factors unchanged and keeps the product under
  the root below the largest number. That quotient,
  :math:`A / (\sqrt{\tilde{v}} + \varepsilon)` with :math:`A` the
  momentum's debiasing factor, lies between about :math:`1/\sqrt{2 v}` and
  :math:`2/\varepsilon`. It is multiplied by the step-size factor first and
  by the momentum after, except where :math:`v` is below ``small_v`` and the
  quotient above 2: there half the quotient takes the momentum first and
  twice the step-size factor comes last. Neither order takes an
  intermediate out of range where the result is in it.
  """
  saturation = 1.0 + 2.0 ** (jnp.finfo(v.dtype).nmant + 2)
  one_plus_x = jnp.minimum(v * s.inv_eps + 1.0, saturation)
  r = m * s.inv_sqrt_eps
  one_plus_y = jnp.minimum(r * r + 1.0, saturation)
  q = s.q_scale * one_plus_x - s.b2_t  # 1 + (1 + b2^t) x
  p = s.p_scale * one_plus_y - s.p_shift  # (1 + (1 + b1^t) y) / (1 - b2^t)
  large = v > s.large_v
  v_root = jnp.where(large, v * s.v_scale, v)
  one_plus_y_scaled = jnp.where(large, one_plus_y * s.root_scale, one_plus_y)
  root = jnp.sqrt(v_root * (p * one_plus_y))
  quotient = (q * one_plus_y_scaled) / (
    one_plus_x * (root + s.eps * one_plus_y_scaled)
  )
  small = v < s.small_v
  direction = quotient * jnp.where(small, 0.5, s.momentum_scale) * momentum
  return jnp.where(small, direction * s.twice_momentum_scale, direction)


def _compute_dtype(dtype) -> jnp.dtype:
  """The dtype the arithmetic is done in: ``dtype``, at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


def _log(decay):
  """``log(decay)``, in float64 when ``decay`` is a Python number.

  Taking the logarithm of a Python float in double precision keeps
  ``1 - decay**t`` accurate in float32: casting ``0.999`` to float32 first
  would already make ``1 - decay`` wrong by about 1e-5 relative.
  """
  if isinstance(decay, (int, float)):
    return math.log(decay) if decay > 0 else -math.inf
  return jnp.log(decay)


def _sqrt(value):
  """``sqrt(value)``, in float64 when ``value`` is a Python number."""
  if isinstance(value, (int, float)):
    return math.sqrt(value)
  return jnp.sqrt(value)


def _power_and_complement(log_decay, t):
  """Returns ``decay**t`` and ``1 - decay**t`` without cancellation."""
  exponent = t * jnp.asarray(log_decay, t.dtype)
  return jnp.exp(exponent), -jnp.expm1(exponent)


def _scaled_quotient(numerator, factor, scale, denominator):
  """``numerator * factor * scale / denominator`` without needless overflow.

  ``factor`` lies in [1, 2] and ``scale`` is positive. Where the numerator is
  large, the division comes first and the scaling after (with a factor of 2
  moved across, so that neither side overflows); where it is small, a scale
  above 1 is applied before the division and one below 1 after it, so that
  nothing underflows before the division has brought the value up. No
  intermediate then leaves the range where the result is in it.
  """
  large = jnp.abs(numerator) >= 1.0
  scale_first = scale >= 1.0
  before = jnp.where(large, 0.5, jnp.where(scale_first, scale, 1.0))
  after = jnp.where(large, 2.0 * scale, jnp.where(scale_first, 1.0, scale))
  return numerator * factor * before / denominator * after


def _is_none(x) -> bool:
  return x is None


def _unzip3(updates, results):
  """Splits a tree of ``(u, m, v)`` tuples (or None) into three trees."""
  treedef = jax.tree.structure(updates, is_leaf=_is_none)
  flat = treedef.flatten_up_to(results)
  return tuple(
    treedef.unflatten([None if r is None else r[i] for r in flat])
    for i in range(3)
  )


# Checks of the hyperparameters and inputs. Hyperparameters may be Python
# numbers, concrete arrays or, under optax.inject_hyperparams, tracers; only
# values known when the transformation is built are checked.


def _concrete_scalar(name: str, value) -> float | None:
  """Returns ``value`` as a Python float, or ``None`` if it is traced."""
  if isinstance(value, jax.core.Tracer):
    return None
  array = np.asarray(value)
  if array.shape != ():
    raise ValueError(
      f"`{name}` must be a scalar, got an array of shape {array.shape}."
    )
  if np.iscomplexobj(array):
    raise ValueError(f"`{name}` must be real, got {value!r}.")
  return float(array)


def _cast_note(value) -> str:
  """A hint for values that arrive as low-precision arrays."""
  dtype = getattr(value, "dtype", None)
  if dtype is None or jnp.finfo(jnp.float32).bits <= _bits(dtype):
    return ""
  return (
    f" It arrived as a {jnp.dtype(dtype).name} array: optax.inject_hyperparams"
    " casts hyperparameters to the parameters' dtype, which rounds decay"
    " rates close to 1 (such as 0.999) to 1.0. Pass"
    " hyperparam_dtype=jnp.float32 to optax.inject_hyperparams."
  )


def _bits(dtype) -> int:
  dtype = jnp.dtype(dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    return 64
  return jnp.finfo(dtype).bits


def _check_decay_rate(name: str, value) -> None:
  """Raises ``ValueError`` unless ``value`` is a number in [0, 1)."""
  number = _concrete_scalar(name, value)
  if number is not None and not 0.0 <= number < 1.0:
    raise ValueError(
      f"`{name}` must be in [0, 1), got {number!r}. It is an exponential"
      " decay rate; the paper's defaults are b1=0.9 and b2=0.999."
      + _cast_note(value)
    )


def _check_eps(value, dtype) -> None:
  """Raises ``ValueError`` unless ``value`` is a normal positive number.

  Args:
    value: The hyperparameter.
    dtype: The dtype of the arithmetic it enters; numbers below its smallest
      normal number act as zero on processors that flush subnormals.
  """
  number = _concrete_scalar("eps", value)
  if number is None:
    return
  tiny = float(jnp.finfo(dtype).smallest_normal)
  if not (math.isfinite(number) and number >= tiny):
    raise ValueError(
      f"`eps` must be finite and at least {tiny:.8g} (the smallest normal"
      f" {jnp.dtype(dtype).name} number), got {number!r}. EXAdam divides by"
      " v + eps: a zero or subnormal eps gives NaN wherever the second moment"
      " is zero. The default is 1e-8."
    )


def _check_non_negative(name: str, value) -> None:
  """Raises ``ValueError`` unless ``value`` is a finite number >= 0.

  Schedules (callables) are not evaluated and pass unchecked.
  """
  if callable(value):
    return
  number = _concrete_scalar(name, value)
  if number is not None and not (math.isfinite(number) and number >= 0.0):
    raise ValueError(
      f"`{name}` must be finite and >= 0, got {number!r}. Pass a"
      " non-negative float or an optax schedule."
    )


def _check_mu_dtype(mu_dtype) -> jnp.dtype | None:
  """The canonical ``mu_dtype``; raises ``ValueError`` unless real floating."""
  if mu_dtype is None:
    return None
  dtype = jax.dtypes.canonicalize_dtype(mu_dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
      f"`mu_dtype` must be a real floating dtype such as jnp.float32 or"
      f" jnp.bfloat16, got {dtype.name}."
    )
  return dtype


def _check_real_float(what: str, leaf) -> jnp.dtype:
  """The dtype of ``leaf``; raises ``ValueError`` unless real floating."""
  dtype = jnp.result_type(leaf)
  if jnp.issubdtype(dtype, jnp.complexfloating):
    raise ValueError(
      f"EXAdam got complex {what} of dtype {dtype.name}. Its cross-moment"
      " debiasing is defined for real parameters only; optimise the real"
      " and imaginary parts as separate real parameters instead."
    )
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
      f"EXAdam got {what} of dtype {dtype.name}; it updates floating-point"
      " parameters only. Cast them to a floating dtype (e.g."
      " jnp.float32), or leave integer and boolean leaves out of the"
      " optimiser with optax.masked or optax.multi_transform."
    )
  return dtype
