"""The optimizers of the EXAdam paper's two comparisons, built from optax.

Every optimizer here mirrors the PyTorch implementation the paper ran, with
that implementation's defaults, so that a comparison in JAX repeats the
paper's. :func:`make_optimizer` builds one by name; :data:`OPTIMIZERS` says,
per name, which PyTorch class and defaults it reproduces.

The learning rate lives in the optimizer state: each optimizer is wrapped in
:func:`optax.inject_hyperparams`, so that a learning-rate scheduler that acts
between epochs (``ReduceLROnPlateau``) can change it without rebuilding or
recompiling anything. :func:`get_learning_rate` and :func:`set_learning_rate`
read and write it.

Adafactor is the exception to "the learning rate is the step size": like
``torch_optimizer.Adafactor(relative_step=True)``, it ignores the given
learning rate and steps by :math:`\\min(10^{-2}, 1/\\sqrt{t})` times the
parameter's RMS. Its injected ``learning_rate`` is a multiplier of that
relative step, starting at 1, so that a plateau scheduler still scales its
steps by the same factor as every other optimizer's.

Weight decay follows the PyTorch class too: decoupled (scaled by the learning
rate, applied to the parameters) for EXAdam, AdamW, AdEMAMix and Adafactor;
an L2 term added to the gradient for Adam, AdaDelta, RMSProp, SGD and Signum.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

import exadam_optax

LEARNING_RATE = "learning_rate"
"""Name of the injected hyperparameter that holds the learning rate."""


@dataclasses.dataclass(frozen=True)
class ExAdamSwitches:
  """EXAdam's three components, each of which can be turned off.

  Attributes:
    cross_moment_debiasing: Use EXAdam's coupled debiasing terms.
    gradient_acceleration: Add the gradient-acceleration term to the momentum.
    dynamic_step_size: Grow the step as :math:`\\ln(\\sqrt{2}\\sqrt{t+1})`.
  """

  cross_moment_debiasing: bool = True
  gradient_acceleration: bool = True
  dynamic_step_size: bool = True


ScheduleKind = Literal["constant", "cosine"]


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The shape of the learning rate over training, as a multiplier.

  The learning rate of step :math:`t` (0-based) is the injected rate times
  :meth:`multiplier`: 1 throughout for ``"constant"``; for ``"cosine"``,
  :func:`optax.warmup_cosine_decay_schedule` from 0 up to 1 over the first
  ``warmup_fraction`` of the steps, then a cosine down to
  ``final_fraction`` at ``total_steps``.

  Attributes:
    kind: ``"constant"`` or ``"cosine"``.
    total_steps: Updates in the whole run.
    warmup_fraction: Fraction of the steps spent warming up, in [0, 1).
    final_fraction: The multiplier at the end, in [0, 1].
  """

  kind: ScheduleKind = "constant"
  total_steps: int = 1
  warmup_fraction: float = 0.05
  final_fraction: float = 0.1

  def __post_init__(self) -> None:
    if self.kind not in ("constant", "cosine"):
      raise ValueError(
        f"schedule must be 'constant' or 'cosine', got {self.kind!r}."
      )
    if isinstance(self.total_steps, bool) or not (
      isinstance(self.total_steps, int) and self.total_steps >= 1
    ):
      raise ValueError(
        f"total_steps must be a positive integer, got {self.total_steps!r}."
      )
    if not 0.0 <= self.warmup_fraction < 1.0:
      raise ValueError(
        f"warmup_fraction must lie in [0, 1), got {self.warmup_fraction!r}."
      )
    if not 0.0 <= self.final_fraction <= 1.0:
      raise ValueError(
        f"final_fraction must lie in [0, 1], got {self.final_fraction!r}."
      )

  @property
  def warmup_steps(self) -> int:
    """Steps of the linear warmup."""
    return round(self.warmup_fraction * self.total_steps)

  def multiplier(self) -> optax.Schedule | None:
    """The multiplier as an optax schedule of the step count (None: 1)."""
    if self.kind == "constant":
      return None
    return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=1.0,
      warmup_steps=self.warmup_steps,
      decay_steps=self.total_steps,
      end_value=self.final_fraction,
    )

  def at(self, step: int) -> float:
    """The multiplier of the update made after ``step`` updates."""
    multiplier = self.multiplier()
    return 1.0 if multiplier is None else float(multiplier(step))


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """How one optimizer is built and which PyTorch optimizer it mirrors.

  Attributes:
    build: ``build(learning_rate, weight_decay, switches)`` returns the
      un-injected transformation for a concrete or traced learning rate.
    default_weight_decay: The PyTorch class's default weight decay.
    torch_reference: The PyTorch class and defaults this reproduces.
  """

  build: Callable[
    [jax.typing.ArrayLike, float, ExAdamSwitches], optax.GradientTransformation
  ]
  default_weight_decay: float
  torch_reference: str


def _coupled_l2(
  weight_decay: float, inner: optax.GradientTransformation
) -> optax.GradientTransformation:
  """PyTorch's ``weight_decay`` for SGD-like classes: ``g <- g + wd * p``."""
  if weight_decay == 0.0:
    return inner
  return optax.chain(optax.add_decayed_weights(weight_decay), inner)


def _exadam(learning_rate, weight_decay, switches):
  return exadam_optax.exadam(
    learning_rate,
    weight_decay=weight_decay,
    cross_moment_debiasing=switches.cross_moment_debiasing,
    gradient_acceleration=switches.gradient_acceleration,
    dynamic_step_size=switches.dynamic_step_size,
  )


def _adam(learning_rate, weight_decay, switches):
  del switches
  return _coupled_l2(weight_decay, optax.adam(learning_rate, eps=1e-8))


def _adamw(learning_rate, weight_decay, switches):
  del switches
  return optax.adamw(learning_rate, eps=1e-8, weight_decay=weight_decay)


def _adadelta(learning_rate, weight_decay, switches):
  del switches
  # optax.adadelta adds the decay to the gradient before the AdaDelta scaling,
  # and accumulates the squared *unscaled* update, as torch does.
  return optax.adadelta(
    learning_rate, rho=0.9, eps=1e-6, weight_decay=weight_decay
  )


def _rmsprop(learning_rate, weight_decay, switches):
  del switches
  # torch: v <- 0.99 v + 0.01 g^2 from v = 0; p <- p - lr g / (sqrt(v) + eps).
  return _coupled_l2(
    weight_decay,
    optax.rmsprop(
      learning_rate, decay=0.99, eps=1e-8, initial_scale=0.0, eps_in_sqrt=False
    ),
  )


def _sgd(learning_rate, weight_decay, switches):
  del switches
  # torch's buffer starts at the first gradient, optax's trace at zero plus the
  # first gradient: the same sequence b_t = 0.9 b_{t-1} + g_t.
  return _coupled_l2(weight_decay, optax.sgd(learning_rate, momentum=0.9))


def _signum(learning_rate, weight_decay, switches):
  del switches
  # sign(EMA with 1 - beta damping) == sign(torch-style undamped momentum).
  return _coupled_l2(weight_decay, optax.signum(learning_rate, beta=0.9))


def _ademamix(learning_rate, weight_decay, switches):
  del switches
  return optax.contrib.ademamix(
    learning_rate,
    b1=0.9,
    b2=0.999,
    b3=0.9999,
    alpha=2.0,
    eps=1e-8,
    weight_decay=weight_decay,
  )


def adafactor_relative_step(count: jax.Array) -> jax.Array:
  """``torch_optimizer.Adafactor``'s relative step for the 0-based ``count``.

  Args:
    count: Number of updates done before this one (optax's step counter).

  Returns:
    :math:`\\min(10^{-2}, 1/\\sqrt{t})` with :math:`t` = ``count + 1``.
  """
  step = jnp.asarray(count, jnp.float32) + 1.0
  return jnp.minimum(1e-2, jax.lax.rsqrt(step))


def _adafactor(learning_rate, weight_decay, switches):
  """torch_optimizer's Adafactor(relative_step=True), ``learning_rate`` a factor.

  torch_optimizer computes, per parameter ``p`` and step ``t``::

    v <- (1 - t^-0.8) v + t^-0.8 (g^2 + 1e-30)      (row/col factored if 2-D+)
    u <- g / sqrt(v);  u <- u / max(1, RMS(u))
    p <- p - min(1e-2, 1/sqrt(t)) max(1e-3, RMS(p)) (u + wd p)

  optax's factored estimator has the same decay (``decay_rate=0.8``, offset 0)
  and epsilon; ``min_dim_size_to_factor=1`` factors every array of two or more
  dimensions as torch_optimizer does. For 2-D arrays the factored estimate is
  symmetric in rows and columns, so torch's (out, in) and JAX's (in, out)
  layouts agree; for arrays of more dimensions optax factors the two largest
  axes, torch_optimizer the last two.
  """
  del switches
  return optax.chain(
    optax.scale_by_factored_rms(
      factored=True,
      decay_rate=0.8,
      step_offset=0,
      min_dim_size_to_factor=1,
      epsilon=1e-30,
    ),
    optax.clip_by_block_rms(1.0),
    optax.add_decayed_weights(weight_decay),
    optax.scale_by_learning_rate(
      lambda count: learning_rate * adafactor_relative_step(count)
    ),
    optax.scale_by_param_block_rms(1e-3),
  )


OPTIMIZERS: dict[str, OptimizerSpec] = {
  "exadam": OptimizerSpec(
    _exadam,
    0.0,
    "The authors' EXAdam: betas (0.9, 0.999), eps 1e-8, weight_decay 0 "
    "(decoupled, scaled by the plain learning rate).",
  ),
  "adam": OptimizerSpec(
    _adam,
    0.0,
    "torch.optim.Adam: betas (0.9, 0.999), eps 1e-8, weight_decay 0 (L2).",
  ),
  "adamw": OptimizerSpec(
    _adamw,
    1e-2,
    "torch.optim.AdamW: betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2 "
    "(p <- p (1 - lr wd)).",
  ),
  "adadelta": OptimizerSpec(
    _adadelta,
    0.0,
    "torch.optim.Adadelta: rho 0.9, eps 1e-6, weight_decay 0 (L2); the "
    "learning rate is the given one, not torch's default 1.0.",
  ),
  "rmsprop": OptimizerSpec(
    _rmsprop,
    0.0,
    "torch.optim.RMSprop: alpha 0.99, eps 1e-8 outside the square root, "
    "accumulator starting at 0, not centered, no momentum, weight_decay 0 (L2).",
  ),
  "sgd": OptimizerSpec(
    _sgd,
    0.0,
    "torch.optim.SGD: momentum 0.9, dampening 0, not Nesterov, "
    "weight_decay 0 (L2).",
  ),
  "adafactor": OptimizerSpec(
    _adafactor,
    0.0,
    "torch_optimizer.Adafactor: lr None (relative step min(1e-2, 1/sqrt(t))), "
    "scale_parameter (times max(1e-3, RMS(p))), eps2 (1e-30, 1e-3), "
    "clip_threshold 1.0, decay_rate -0.8, beta1 None, weight_decay 0 "
    "(decoupled, times the relative step).",
  ),
  "ademamix": OptimizerSpec(
    _ademamix,
    0.0,
    "AdEMAMix reference code (apple/ml-ademamix): betas (0.9, 0.999, 0.9999), "
    "alpha 2, eps 1e-8, no alpha/beta3 warmup, weight_decay 0 (decoupled).",
  ),
  "signum": OptimizerSpec(
    _signum,
    0.0,
    "Signum (Bernstein et al.): p <- p - lr sign(m), m the momentum-0.9 "
    "average of the gradient, weight_decay 0 (L2).",
  ),
}
"""Every optimizer of the paper's comparisons, by command-line name."""

OPTIMIZER_NAMES: tuple[str, ...] = tuple(OPTIMIZERS)


def make_optimizer(
  name: str,
  learning_rate: float = 1e-4,
  *,
  weight_decay: float | None = None,
  switches: ExAdamSwitches | None = None,
  schedule: Schedule | None = None,
) -> optax.GradientTransformationExtraArgs:
  """Builds one of the paper's optimizers with its learning rate in the state.

  The arguments are not checked here: the trainers' config checks them (see
  :class:`examples.common.config.RunConfig`).

  Args:
    name: One of :data:`OPTIMIZER_NAMES`.
    learning_rate: The step size (the paper uses 1e-4 for every optimizer).
      Adafactor ignores it, as torch_optimizer's does (see the module
      docstring); its initial learning-rate multiplier is 1.
    weight_decay: Weight decay, with the coupling of the mirrored PyTorch
      class; ``None`` takes that class's default (1e-2 for AdamW, else 0).
    switches: EXAdam's components (only used by ``"exadam"``); ``None`` keeps
      all three on.
    schedule: The learning rate's shape over training; ``None`` keeps it
      constant. The state's learning rate is then the peak, which a
      plateau scheduler may still lower.

  Returns:
    An :func:`optax.inject_hyperparams` transformation whose state holds the
    learning rate under :data:`LEARNING_RATE`; its ``update`` reads the rate
    from the state only.
  """
  spec = OPTIMIZERS[name]
  if weight_decay is None:
    weight_decay = spec.default_weight_decay
  if switches is None:
    switches = ExAdamSwitches()
  multiplier = (schedule or Schedule()).multiplier()

  def build(learning_rate):
    inner = spec.build(learning_rate, weight_decay, switches)
    if multiplier is None:
      return inner
    # Every optimizer here ends by scaling its update by the learning rate
    # (weight decay included), so scaling its output by the multiplier is
    # the same as scheduling the rate itself.
    return optax.chain(inner, optax.scale_by_schedule(multiplier))

  return optax.inject_hyperparams(build)(
    learning_rate=initial_learning_rate(name, learning_rate)
  )


def initial_learning_rate(name: str, learning_rate: float) -> float:
  """The value :func:`make_optimizer` stores as the injected learning rate.

  Args:
    name: One of :data:`OPTIMIZER_NAMES`.
    learning_rate: The requested learning rate.

  Returns:
    ``learning_rate``, or 1.0 for Adafactor (a multiplier of its relative
    step).
  """
  return 1.0 if name == "adafactor" else learning_rate


_INJECTED_STATE_TYPES = (
  optax.InjectHyperparamsState,
  optax.InjectStatefulHyperparamsState,
)


def _injected_state(opt_state):
  if not isinstance(opt_state, _INJECTED_STATE_TYPES):
    raise TypeError(
      "Expected the state of an optimizer built by make_optimizer (an optax "
      f"inject_hyperparams state), got {type(opt_state).__name__}."
    )
  return opt_state


def get_learning_rate(opt_state) -> jax.Array:
  """Returns the learning rate held in a :func:`make_optimizer` state.

  Args:
    opt_state: The optimizer state.

  Returns:
    The scalar learning rate (Adafactor: its relative-step multiplier).

  Raises:
    TypeError: If the state does not come from :func:`make_optimizer`.
  """
  return _injected_state(opt_state).hyperparams[LEARNING_RATE]


def set_learning_rate(opt_state, value: float):
  """Returns ``opt_state`` with its learning rate replaced by ``value``.

  The new value keeps the old one's dtype and sharding, so a jitted step that
  takes the state compiles once.

  Args:
    opt_state: A :func:`make_optimizer` state.
    value: The new learning rate (Adafactor: relative-step multiplier).

  Returns:
    The updated state; the input is not modified.

  Raises:
    TypeError: If the state does not come from :func:`make_optimizer`.
  """
  state = _injected_state(opt_state)
  old = state.hyperparams[LEARNING_RATE]
  host_value = np.asarray(value, dtype=old.dtype)
  if isinstance(old, jax.Array) and not isinstance(old, jax.core.Tracer):
    # Works for arrays spanning several processes too.
    new = jax.make_array_from_callback(
      host_value.shape, old.sharding, lambda index: host_value[index]
    )
  else:
    new = jnp.asarray(host_value)
  return state._replace(hyperparams={**state.hyperparams, LEARNING_RATE: new})
