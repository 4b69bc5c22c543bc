"""Interleaved timing of jitted optimizer steps.

Every optimizer gets its own parameters and state, updated in place (their
buffers are donated) by one compiled step: ``update`` followed by
:func:`optax.apply_updates`. The optimizers are then timed in rounds, each
round timing every optimizer once in a rotating order, so that slow phases of
a noisy machine hit all of them alike and each round yields paired samples.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax

Step = Callable[[Any, Any, Any], tuple[Any, Any]]


def make_step(optimizer: optax.GradientTransformation) -> Step:
  """A jitted ``(params, state, grads) -> (params, state)`` training step.

  The parameter and state buffers are donated, so the step updates them in
  place as a training loop would.

  Args:
    optimizer: the transformation to apply.

  Returns:
    The compiled-on-first-call step function.
  """

  def step(params, opt_state, grads):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return jax.jit(step, donate_argnums=(0, 1))


@dataclasses.dataclass(frozen=True)
class TimingPlan:
  """How long and how finely to time.

  Attributes:
    seconds: measuring time to aim for, all optimizers together.
    min_rounds: fewest rounds, whatever ``seconds`` says.
    max_rounds: most rounds, whatever ``seconds`` says.
    min_sample_s: shortest sample; quicker steps are repeated back to back
      within a sample and the sample's time divided by the repetitions.
    warmup_steps: untimed steps per optimizer after compilation.

  Raises:
    ValueError: if a field is out of range.
  """

  seconds: float = 30.0
  min_rounds: int = 15
  max_rounds: int = 2000
  min_sample_s: float = 2e-3
  warmup_steps: int = 5

  def __post_init__(self):
    if not self.seconds > 0:
      raise ValueError(f"seconds must be positive, got {self.seconds!r}.")
    if not 1 <= self.min_rounds <= self.max_rounds:
      raise ValueError(
        "Need 1 <= min_rounds <= max_rounds, got "
        f"min_rounds={self.min_rounds!r}, max_rounds={self.max_rounds!r}."
      )
    if self.min_sample_s < 0:
      raise ValueError(f"min_sample_s must be >= 0, got {self.min_sample_s!r}.")
    if self.warmup_steps < 1:
      raise ValueError(
        "warmup_steps must be >= 1 (the first step compiles), got "
        f"{self.warmup_steps!r}."
      )


@dataclasses.dataclass(frozen=True)
class Timings:
  """Per-step times of interleaved rounds.

  Attributes:
    seconds: for each optimizer, the per-step time in seconds of each round,
      in round order (entry ``i`` of every optimizer comes from round ``i``).
    calls_per_sample: steps run back to back in each sample.
    compile_seconds: for each optimizer, time of its first (compiling) call.
  """

  seconds: Mapping[str, np.ndarray]
  calls_per_sample: int
  compile_seconds: Mapping[str, float]


@dataclasses.dataclass
class _Runner:
  step: Step
  params: Any
  opt_state: Any

  def run(self, grads: Any, calls: int) -> float:
    """Runs ``calls`` steps; returns the wall time per step in seconds."""
    start = time.perf_counter()
    for _ in range(calls):
      self.params, self.opt_state = self.step(
        self.params, self.opt_state, grads
      )
    jax.block_until_ready((self.params, self.opt_state))
    return (time.perf_counter() - start) / calls


def time_interleaved(
  optimizers: Mapping[str, optax.GradientTransformation],
  make_params: Callable[[], Any],
  grads: Any,
  plan: TimingPlan,
) -> Timings:
  """Times one training step of each optimizer, interleaved.

  Args:
    optimizers: the transformations to time, by name.
    make_params: returns a fresh copy of the initial parameters (the same
      values every call); each optimizer gets its own, which it overwrites.
    grads: the gradients fed to every step (not donated).
    plan: durations and repetitions.

  Returns:
    The per-step times of every round.
  """
  runners = {}
  compile_seconds = {}
  for name, optimizer in optimizers.items():
    params = make_params()
    runner = _Runner(make_step(optimizer), params, optimizer.init(params))
    compile_seconds[name] = runner.run(grads, 1)
    runner.run(grads, plan.warmup_steps)
    runners[name] = runner
  single = {name: runner.run(grads, 1) for name, runner in runners.items()}
  calls = max(1, math.ceil(plan.min_sample_s / min(single.values())))
  round_seconds = calls * sum(single.values())
  rounds = int(
    np.clip(plan.seconds // round_seconds, plan.min_rounds, plan.max_rounds)
  )
  names = list(runners)
  samples: dict[str, list[float]] = {name: [] for name in names}
  for index in range(rounds):
    for name in _rotated(names, index):
      samples[name].append(runners[name].run(grads, calls))
  return Timings(
    seconds={name: np.asarray(times) for name, times in samples.items()},
    calls_per_sample=calls,
    compile_seconds=compile_seconds,
  )


def _rotated(names: Sequence[str], shift: int) -> list[str]:
  shift %= len(names)
  return [*names[shift:], *names[:shift]]
