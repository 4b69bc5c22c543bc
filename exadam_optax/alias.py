"""The EXAdam optimizer: ``exadam``."""

from collections.abc import Callable
from typing import Any

import jax
import optax

from exadam_optax import _validation
from exadam_optax.transform import scale_by_exadam


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
  With :math:`\alpha` the learning rate, :math:`\lambda` the weight decay and
  :math:`u_t` the direction of :func:`exadam_optax.scale_by_exadam`, each step
  is

  .. math::

    \theta_t \leftarrow \theta_{t-1} - \alpha_t \left(u_t +
      \lambda \theta_{t-1}\right),

  where :math:`u_t` already holds the dynamic step factor
  :math:`\ln(\sqrt{2}\sqrt{t+1})` and :math:`\alpha_t` is the (possibly
  scheduled) learning rate. The weight decay is decoupled as in AdamW and, as
  in the authors' code, scaled by the learning rate but never by the dynamic
  step factor.

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
      ``b2`` outside [0, 1), ``eps`` not positive.

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
  _validation.check_non_negative("learning_rate", learning_rate)
  _validation.check_non_negative("weight_decay", weight_decay)
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
