"""The EXAdam paper's comparison optimizers, from optax, as PyTorch ran them.

The learning rate is injected into the state, so a plateau scheduler can change
it between epochs without recompiling. Adafactor ignores the given rate, as
torch_optimizer's does: its injected rate, starting at 1, scales its steps.
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
  """Which of EXAdam's components are on: cross-moment (coupled) debiasing,
  the momentum's gradient-acceleration term, and the dynamic step size,
  growing as :math:`\\ln(\\sqrt{2}\\sqrt{t+1})`."""

  cross_moment_debiasing: bool = True
  gradient_acceleration: bool = True
  dynamic_step_size: bool = True


ScheduleKind = Literal["constant", "cosine"]


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The learning rate's multiplier over ``total_steps`` updates.

  Constant 1, or cosine: 0 to 1 over the first ``warmup_fraction`` (in [0, 1))
  of the steps, then down to ``final_fraction`` (in [0, 1]).
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
    steps = self.total_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
      raise ValueError(
        f"total_steps must be a positive integer, got {steps!r}."
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

  ``build`` maps ``(learning_rate, weight_decay, switches)``, the rate maybe
  traced, to the un-injected transformation.
  """

  build: Callable[
    [jax.typing.ArrayLike, float, ExAdamSwitches], optax.GradientTransformation
  ]
  default_weight_decay: float
  torch_reference: str


def _coupled_l2(weight_decay, inner):
  """PyTorch's ``weight_decay`` for SGD-like classes: ``g <- g + wd * p``."""
  if weight_decay == 0.0:
    return inner
  return optax.chain(optax.add_decayed_weights(weight_decay), inner)


def adafactor_relative_step(count: jax.Array) -> jax.Array:
  """torch_optimizer Adafactor's step min(1e-2, 1/sqrt(t)), t = count + 1."""
  step = jnp.asarray(count, jnp.float32) + 1.0
  return jnp.minimum(1e-2, jax.lax.rsqrt(step))


def _adafactor(learning_rate, weight_decay, _):
  """torch_optimizer's Adafactor(relative_step=True); the rate is a factor."""
  # Every array of 2+ dimensions is factored, as in torch. The 2-D estimate is
  # symmetric, so torch's (out, in) and JAX's (in, out) layouts agree; beyond
  # 2-D optax factors the two largest axes, torch_optimizer the last two.
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
    lambda lr, wd, s: exadam_optax.exadam(
      lr, weight_decay=wd, **dataclasses.asdict(s)
    ),
    0.0,
    "The authors' EXAdam: betas (0.9, 0.999), eps 1e-8, weight_decay 0 "
    "(decoupled, scaled by the plain learning rate).",
  ),
  "adam": OptimizerSpec(
    lambda lr, wd, _: _coupled_l2(wd, optax.adam(lr, eps=1e-8)),
    0.0,
    "torch.optim.Adam: betas (0.9, 0.999), eps 1e-8, weight_decay 0 (L2).",
  ),
  "adamw": OptimizerSpec(
    lambda lr, wd, _: optax.adamw(lr, eps=1e-8, weight_decay=wd),
    1e-2,
    "torch.optim.AdamW: betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2 "
    "(p <- p (1 - lr wd)).",
  ),
  "adadelta": OptimizerSpec(
    # As torch: decay added before scaling; the *unscaled* update's square kept.
    lambda lr, wd, _: optax.adadelta(lr, rho=0.9, eps=1e-6, weight_decay=wd),
    0.0,
    "torch.optim.Adadelta: rho 0.9, eps 1e-6, weight_decay 0 (L2); the "
    "learning rate is the given one, not torch's default 1.0.",
  ),
  "rmsprop": OptimizerSpec(
    lambda lr, wd, _: _coupled_l2(
      wd,
      optax.rmsprop(
        lr, decay=0.99, eps=1e-8, initial_scale=0.0, eps_in_sqrt=False
      ),
    ),
    0.0,
    "torch.optim.RMSprop: alpha 0.99, eps 1e-8 outside the square root, "
    "accumulator starting at 0, not centered, no momentum, "
    "weight_decay 0 (L2).",
  ),
  "sgd": OptimizerSpec(
    # torch's buffer starts at g_1, optax's at 0 + g_1: b_t = 0.9 b_{t-1} + g_t.
    lambda lr, wd, _: _coupled_l2(wd, optax.sgd(lr, momentum=0.9)),
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
    lambda lr, wd, _: optax.contrib.ademamix(
      lr, b1=0.9, b2=0.999, b3=0.9999, alpha=2.0, eps=1e-8, weight_decay=wd
    ),
    0.0,
    "AdEMAMix reference code (apple/ml-ademamix): betas (0.9, 0.999, 0.9999), "
    "alpha 2, eps 1e-8, no alpha/beta3 warmup, weight_decay 0 (decoupled).",
  ),
  "signum": OptimizerSpec(
    # sign(EMA with 1 - beta damping) == sign(torch-style undamped momentum).
    lambda lr, wd, _: _coupled_l2(wd, optax.signum(lr, beta=0.9)),
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

  Arguments are checked by the trainers' config, not here. Adafactor ignores
  ``learning_rate``; ``weight_decay`` is coupled as in the mirrored class
  (None: its default); ``switches`` are for ``"exadam"`` (None: all on);
  ``schedule`` scales the (peak) rate over training (None: constant). The
  ``update`` reads the rate only from the state, under :data:`LEARNING_RATE`.
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
    # Every optimizer here ends by scaling its update (weight decay included)
    # by the learning rate, so scaling its output schedules the rate itself.
    return optax.chain(inner, optax.scale_by_schedule(multiplier))

  return optax.inject_hyperparams(build)(
    learning_rate=initial_learning_rate(name, learning_rate)
  )


def initial_learning_rate(name: str, learning_rate: float) -> float:
  """The injected rate :func:`make_optimizer` starts from (Adafactor: 1.0)."""
  return 1.0 if name == "adafactor" else learning_rate


def _injected_state(opt_state):
  if not isinstance(
    opt_state,
    optax.InjectHyperparamsState | optax.InjectStatefulHyperparamsState,
  ):
    raise TypeError(
      "Expected the state of an optimizer built by make_optimizer (an optax "
      f"inject_hyperparams state), got {type(opt_state).__name__}."
    )
  return opt_state


def get_learning_rate(opt_state) -> jax.Array:
  """The rate (Adafactor: factor) of a make_optimizer state; else TypeError."""
  return _injected_state(opt_state).hyperparams[LEARNING_RATE]


def set_learning_rate(opt_state, value: float):
  """Returns ``opt_state`` with its learning rate replaced by ``value``.

  Keeps the old value's dtype and sharding, so a jitted step compiles once;
  raises ``TypeError`` for a state not from :func:`make_optimizer`.
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
