"""Construction-time checks of EXAdam's hyperparameters.

Hyperparameters may be Python numbers, concrete arrays or, under
:func:`optax.inject_hyperparams`, tracers. Only values that are known when the
transformation is built are checked; traced values cannot be inspected without
a Python branch on a traced value, which ``jax.jit`` forbids.
"""

import math

import jax
import numpy as np


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


def check_decay_rate(name: str, value) -> None:
  """Raises ``ValueError`` unless ``value`` is a finite number in [0, 1)."""
  number = _concrete_scalar(name, value)
  if number is not None and not 0.0 <= number < 1.0:
    raise ValueError(
      f"`{name}` must be in [0, 1), got {number!r}. It is an exponential"
      " decay rate; the paper's defaults are b1=0.9 and b2=0.999."
    )


def check_eps(value) -> None:
  """Raises ``ValueError`` unless ``value`` is a finite, positive number."""
  number = _concrete_scalar("eps", value)
  if number is not None and not (math.isfinite(number) and number > 0.0):
    raise ValueError(
      f"`eps` must be finite and > 0, got {number!r}. EXAdam divides by"
      " v + eps, so eps = 0 gives NaN wherever the second moment is zero;"
      " the default is 1e-8."
    )


def check_non_negative(name: str, value) -> None:
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
