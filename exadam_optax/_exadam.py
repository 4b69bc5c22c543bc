"""EXAdam: Adam with adaptive cross-moments.

Implementation of "EXAdam: The Power of Adaptive Cross-Moments"
(https://arxiv.org/abs/2412.20302) by Ahmed M. Adly.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax


class ScaleByExAdamState(NamedTuple):
  """State for the EXAdam algorithm.

  Attributes:
    count: The number of updates so far (an int32 scalar that saturates).
    mu: The first moment :math:`m_t`, of dtype ``mu_dtype`` if given.
    nu: The second moment :math:`v_t`, of the parameters' dtype.
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

  See :func:`exadam_optax.exadam` for the optimizer. With :math:`g_t` the
  incoming updates, step :math:`t = 1, 2, \ldots` is Algorithm 1 of the paper:

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

  The updates are :math:`u_t`, to be scaled by a negative learning rate. The
  switches remove one component each, for ablations: without cross-moment
  debiasing the factors in parentheses are 1 (Adam's debiasing), without
  gradient acceleration :math:`\tilde{g}_t` is 0, and without the dynamic
  step size the logarithm is 1. With all three off this is
  :func:`optax.scale_by_adam`.

  Numerics: the arithmetic is in at least float32 whatever the updates'
  dtype, and the results are cast back to the updates' and the state's
  dtypes. The update equals the exact equations to float32 rounding
  wherever :math:`g_t^2`, :math:`m_t^2` and :math:`\tilde{v}_t` fit the
  arithmetic's dtype (in float32: gradients below about 1.3e19, since
  :math:`\tilde{v}_1 \approx (1+\beta_1) g_1^2`) and ``eps`` is above about
  1e-33 (a subnormal :math:`m_t^2`, flushed to zero, would count against a
  smaller one). Beyond that range a square overflows and the element's
  updates are NaN from then on, where :func:`optax.scale_by_adam` freezes
  it at 0: clip such gradients (:func:`optax.clip_by_global_norm`). A NaN
  or infinite gradient gives a NaN update, as in optax; skip such steps with
  :func:`optax.apply_if_finite`.

  Args:
    b1: Decay rate of the exponentially weighted average of the gradients.
    b2: Decay rate of the exponentially weighted average of the squared
      gradients.
    eps: Term added to the denominators; the paper uses the same term in all
      three places.
    mu_dtype: Optional dtype of the first moment accumulator; if ``None``,
      the dtype of the parameters.
    cross_moment_debiasing: Whether to use EXAdam's coupled debiasing terms.
    gradient_acceleration: Whether to add :math:`\tilde{g}_t` to the
      momentum.
    dynamic_step_size: Whether to scale the step by
      :math:`\ln(\sqrt{2}\sqrt{t+1})`, as in the paper's first version; the
      authors' latest code keeps the step size constant.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`; extra arguments to
    ``update`` are ignored.

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
    >>> print(jnp.round(updates, 3))
    [11.057  0.   ]
    >>> print(state.count)
    1
  """
  for name, decay in (("b1", b1), ("b2", b2)):
    _check(name, decay, lambda x: 0.0 <= x < 1.0, "in [0, 1)")
  _check(
    "eps",
    eps,
    lambda x: _TINY <= x < math.inf,
    f"finite and at least {_TINY:.8g} (float32's smallest normal number)",
  )
  if mu_dtype is not None:
    mu_dtype = jax.dtypes.canonicalize_dtype(mu_dtype)
    if not jnp.issubdtype(mu_dtype, jnp.floating):
      raise ValueError(
        f"`mu_dtype` must be a real floating dtype such as jnp.float32, got"
        f" {mu_dtype}."
      )

  def init_fn(params):
    _check_leaves("parameters", params)
    mu = optax.tree.zeros_like(params, dtype=mu_dtype)
    nu = optax.tree.zeros_like(params)
    return ScaleByExAdamState(count=jnp.zeros([], jnp.int32), mu=mu, nu=nu)

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    _check_leaves("updates", updates)
    g = _at_least_float32(updates)
    mu = optax.tree.update_moment(g, _at_least_float32(state.mu), b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(
      g, _at_least_float32(state.nu), b2, 2
    )
    count_inc = optax.safe_increment(state.count)
    t = count_inc.astype(jnp.result_type(jnp.float32, *jax.tree.leaves(g)))
    b1_t, one_minus_b1_t = _power_and_complement(b1, t)
    b2_t, one_minus_b2_t = _power_and_complement(b2, t)
    # 1 / (1 - b^t), once per step: dividing by it would cost a division
    # per element, which XLA does not turn into a multiplication itself.
    m_scale, v_scale = 1.0 / one_minus_b1_t, 1.0 / one_minus_b2_t
    if dynamic_step_size:
      step_size = jnp.log(jnp.sqrt(2.0) * jnp.sqrt(t + 1.0))
    else:
      step_size = 1.0

    def exadam_update(g, m, v):
      if cross_moment_debiasing:
        m_factor = 1.0 + v / (v + eps) * b2_t
        v_factor = 1.0 + jnp.square(m) / (jnp.square(m) + eps) * b1_t
      else:
        m_factor = v_factor = 1.0
      # m~ + g~ in one line: the two share the factor m_factor / (1 - b1^t).
      momentum = m + g if gradient_acceleration else m
      m_tilde_plus_g_tilde = momentum * m_scale * m_factor
      v_tilde = v * v_scale * v_factor
      return step_size * (m_tilde_plus_g_tilde / (jnp.sqrt(v_tilde) + eps))

    new_updates = jax.tree.map(exadam_update, g, mu, nu)
    new_updates = optax.tree.cast_like(new_updates, updates)
    mu = optax.tree.cast_like(mu, state.mu)
    nu = optax.tree.cast_like(nu, state.nu)
    return new_updates, ScaleByExAdamState(count=count_inc, mu=mu, nu=nu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def exadam(
  learning_rate: optax.ScalarOrSchedule,
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

  With :math:`\alpha_t` the learning rate, :math:`\lambda` the weight decay
  and :math:`u_t` the updates of :func:`scale_by_exadam`, each step is

  .. math::

    \theta_t \leftarrow \theta_{t-1} - \alpha_t \left(u_t +
      \lambda \theta_{t-1}\right).

  The weight decay is decoupled as in :func:`optax.adamw` and, as in the
  authors' code, scaled by the learning rate but not by the dynamic step
  size. With the three switches off, ``exadam`` is :func:`optax.adamw`.
  EXAdam's steps are several times longer than Adam's at the same learning
  rate: start from about a tenth of a rate that works for Adam.

  Args:
    learning_rate: A fixed global scaling factor, or a schedule.
    b1: Decay rate of the exponentially weighted average of the gradients.
    b2: Decay rate of the exponentially weighted average of the squared
      gradients.
    eps: Term added to the denominators to improve numerical stability.
    weight_decay: Strength of the decoupled weight decay.
    mask: A tree like the params (or a prefix of it), or a callable giving
      one, whose boolean leaves say where the weight decay applies.
    mu_dtype: Optional dtype of the first moment accumulator.
    cross_moment_debiasing: See :func:`scale_by_exadam`.
    gradient_acceleration: See :func:`scale_by_exadam`.
    dynamic_step_size: See :func:`scale_by_exadam`.

  Returns:
    The corresponding :class:`optax.GradientTransformationExtraArgs`.

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
    >>> opt_state = solver.init(params)
    >>> for _ in range(3):
    ...  grad = jax.grad(f)(params)
    ...  updates, opt_state = solver.update(grad, opt_state, params)
    ...  params = optax.apply_updates(params, updates)
    ...  print('Objective function: {:.2E}'.format(f(params)))
    Objective function: 1.36E+01
    Objective function: 1.33E+01
    Objective function: 1.31E+01
  """
  for name, value in (
    ("learning_rate", learning_rate),
    ("weight_decay", weight_decay),
  ):
    _check(name, value, lambda x: 0.0 <= x < math.inf, "finite and >= 0")
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


def _at_least_float32(tree):
  """Casts each leaf to its dtype promoted with float32."""

  def cast(x):
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))

  return jax.tree.map(cast, tree)


def _power_and_complement(decay, t):
  """``decay**t`` and ``1 - decay**t``, accurate for ``decay`` near 1.

  The logarithm of a Python ``decay`` is taken in float64: rounding 0.999 to
  float32 first would make ``1 - decay**t`` wrong by 1e-5 relative.
  """
  if isinstance(decay, (int, float)):
    log_decay = math.log(decay) if decay > 0 else -math.inf
  else:
    log_decay = jnp.log(decay)
  exponent = t * log_decay
  return jnp.exp(exponent), -jnp.expm1(exponent)


_TINY = float(jnp.finfo(jnp.float32).smallest_normal)


def _check(name: str, value, valid: Callable[[float], bool], rule: str):
  """Raises a one-line ``ValueError`` unless ``valid(value)``.

  Only values known at construction are checked: schedules and traced
  values (under ``optax.inject_hyperparams``) pass.
  """
  if callable(value) or isinstance(value, jax.core.Tracer):
    return
  if jnp.ndim(value) != 0 or jnp.iscomplexobj(value):
    raise ValueError(f"`{name}` must be a real scalar, got {value!r}.")
  if not valid(float(value)):
    hint = ""
    if getattr(value, "dtype", None) in (jnp.bfloat16, jnp.float16):
      hint = (
        f" It arrived as {value.dtype}: optax.inject_hyperparams casts"
        " hyperparameters to the parameters' dtype (0.999 becomes 1.0); pass"
        " hyperparam_dtype=jnp.float32 to it."
      )
    raise ValueError(f"`{name}` must be {rule}, got {float(value)!r}.{hint}")


def _check_leaves(what: str, tree) -> None:
  for leaf in jax.tree.leaves(tree):
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(
        f"EXAdam takes real floating-point {what}, got a leaf of dtype"
        f" {dtype}: leave such leaves out with optax.masked or"
        " optax.multi_transform."
      )
