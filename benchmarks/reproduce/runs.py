"""Many training runs of one optimizer, batched along a leading run axis.

The runs of an :class:`~benchmarks.reproduce.presets.Arm` (its seeds, or the
learning rates of a sweep) differ only in their arrays: parameters, model
state, optimizer state (whose injected learning rate may differ per run, see
:mod:`examples.common.optimizers`) and random key. Stacking each array along a
new leading *run axis* turns several runs into one batched
:class:`~examples.common.train_state.TrainState`, and :func:`jax.vmap` of a
per-run function trains them all in one compiled program.

Two settings (:class:`Execution`) decide how the work is cut into calls,
because what is fast differs by platform (measured on two CPU cores, see
``benchmarks/README.md``):

* ``run_batch``: runs per vmapped call. On an accelerator all runs share one
  call. On the CPU one run per call is fastest: ``vmap`` turns each
  convolution into a grouped convolution, which XLA's CPU backend runs about
  2.8 times as slowly per run, and MinGPT gains nothing from it.
* ``scan_chunks``: whether a chunk of steps (an epoch, or the iterations
  between evaluations) is one ``lax.scan`` call. That saves a dispatch per
  step on an accelerator; on the CPU, XLA runs the same step about seven
  times as slowly inside a loop as in a call of its own, so there each step
  is one call (dispatched asynchronously, without waiting for results).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.reproduce.presets import Arm
from examples.common import optimizers
from examples.common import train_state as train_state_lib


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One training run: an arm at a learning rate and seed.

  Attributes:
    arm: The optimizer configuration.
    learning_rate: Its initial injected learning rate (Adafactor: the
      multiplier of its relative step, 1 in the paper's protocol).
    seed: The seed of initialisation, data order, augmentation and dropout.
  """

  arm: Arm
  learning_rate: float
  seed: int

  @property
  def run_id(self) -> str:
    """A unique, readable name: ``label/lr=.../seed=...``."""
    return f"{self.arm.label}/lr={self.learning_rate:g}/seed={self.seed}"

  def identity(self) -> dict[str, Any]:
    """The fields that identify the run in every metrics record."""
    return {
      "run_id": self.run_id,
      "arm": self.arm.label,
      "optimizer": self.arm.optimizer,
      "base_lr": self.learning_rate,
      "seed": self.seed,
    }


@dataclasses.dataclass(frozen=True)
class Execution:
  """How the runs of an arm are cut into compiled calls.

  Attributes:
    run_batch: Runs per vmapped call; None puts all runs in one call.
    scan_chunks: Whether a whole chunk of steps is one ``lax.scan`` call
      (else one call per step).
  """

  run_batch: int | None
  scan_chunks: bool

  def __post_init__(self) -> None:
    if self.run_batch is not None and (
      isinstance(self.run_batch, bool)
      or not isinstance(self.run_batch, int)
      or self.run_batch < 1
    ):
      raise ValueError(
        f"run_batch must be None or an int >= 1, got {self.run_batch!r}."
      )

  @classmethod
  def for_platform(
    cls, platform: str, run_batch: int | None = None
  ) -> Execution:
    """The fastest setting measured for ``platform`` (``jax.Device.platform``).

    Args:
      platform: ``"cpu"``, ``"gpu"``, ``"tpu"``...
      run_batch: Overrides the platform's default run batch.

    Returns:
      On the CPU one run per call and one call per step; elsewhere all runs
      in one call and one call per chunk.
    """
    on_cpu = platform == "cpu"
    if run_batch is None:
      run_batch = 1 if on_cpu else None
    return cls(run_batch=run_batch, scan_chunks=not on_cpu)


@functools.cache
def make_arm_optimizer(
  arm: Arm, schedule: optimizers.Schedule
) -> optax.GradientTransformationExtraArgs:
  """The registry optimizer of ``arm``, one object per arm and schedule.

  Its injected learning rate is a placeholder (1) that each run replaces
  after initialisation (:func:`init_run_state`). Its ``update`` reads the
  rate from the state only, so every run of an arm shares this one object,
  and the jitted steps, cached by ``update``, compile once per arm.
  """
  return optimizers.make_optimizer(
    arm.optimizer, 1.0, switches=arm.switches, schedule=schedule
  )


def check_runs(runs: Sequence[RunSpec]) -> Arm:
  """Returns the arm shared by ``runs``.

  Raises:
    ValueError: If ``runs`` is empty, mixes arms or repeats a run.
  """
  if not runs:
    raise ValueError("A run group needs at least one run.")
  arms = {run.arm for run in runs}
  if len(arms) != 1:
    raise ValueError(
      "The runs of one group must share one arm (one compiled program), got "
      f"{sorted(arm.label for arm in arms)}; group them by arm first."
    )
  ids = [run.run_id for run in runs]
  if len(set(ids)) != len(ids):
    raise ValueError(f"Runs are repeated in a group: {ids}.")
  return runs[0].arm


def stack_runs(states: Sequence[Any]) -> Any:
  """Stacks per-run pytrees along a new leading run axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def unstack_run(batched: Any, index: int) -> Any:
  """The pytree of run ``index`` from a batched pytree."""
  return jax.tree.map(lambda leaf: leaf[index], batched)


def init_run_state(
  build_model: Callable[[Any], Any],
  run: RunSpec,
  mesh: jax.sharding.Mesh,
  schedule: optimizers.Schedule | None = None,
) -> tuple[Any, train_state_lib.TrainState, optax.TransformUpdateExtraArgsFn]:
  """Initialises one run exactly as the trainers do.

  The state is :func:`examples.common.train_state.init_train_state`'s for the
  run's seed, with the run's learning rate injected afterwards, so that one
  compiled initialisation serves every rate (Adafactor's injected rate is the
  multiplier of its relative step).

  Returns:
    ``(graphdef, state, update)``.
  """
  # One init program per arm: the rate is set after initialisation.
  optimizer = make_arm_optimizer(run.arm, schedule or optimizers.Schedule())
  graphdef, state = train_state_lib.init_train_state(
    build_model, optimizer, run.seed, mesh
  )
  state = state._replace(
    opt_state=optimizers.set_learning_rate(state.opt_state, run.learning_rate)
  )
  return graphdef, state, optimizer.update


class BatchedRuns:
  """The runs of one arm as slices of at most ``run_batch`` stacked runs.

  Args:
    build_model: Builds the model from random streams.
    runs: Runs of one arm.
    mesh: A one-device mesh holding the arrays.
    run_batch: Runs per slice; None puts all runs in one slice.
    schedule: The learning-rate schedule of every run (None: constant).

  Raises:
    ValueError: As :func:`check_runs`.
  """

  def __init__(
    self,
    build_model: Callable[[Any], Any],
    runs: Sequence[RunSpec],
    mesh: jax.sharding.Mesh,
    run_batch: int | None,
    schedule: optimizers.Schedule | None = None,
  ):
    self.runs = tuple(runs)
    self.schedule = schedule or optimizers.Schedule()
    self.arm = check_runs(self.runs)
    size = len(self.runs) if run_batch is None else run_batch
    self.slices = tuple(
      slice(start, min(start + size, len(self.runs)))
      for start in range(0, len(self.runs), size)
    )
    states = []
    for run in self.runs:
      self.graphdef, state, self.update = init_run_state(
        build_model, run, mesh, self.schedule
      )
      states.append(state)
    self.states = [stack_runs(states[part]) for part in self.slices]

  def step(
    self,
    function: Callable[..., tuple[Any, Any]],
    per_run: Sequence[np.ndarray] = (),
    shared: Sequence[Any] = (),
  ) -> list[Any]:
    """Advances every slice: ``state, out = function(state, *per_run, *shared)``.

    Args:
      function: A jitted, vmapped function of a batched state, arrays with a
        leading run axis and arrays shared by all runs.
      per_run: Host arrays with one row per run, sliced for each call.
      shared: Arguments passed whole to every call.

    Returns:
      Each slice's ``out`` (device arrays, not waited for).
    """
    outputs = []
    for index, part in enumerate(self.slices):
      self.states[index], out = function(
        self.states[index], *(array[part] for array in per_run), *shared
      )
      outputs.append(out)
    return outputs

  def evaluate(
    self, function: Callable[..., Any], shared: Sequence[Any] = ()
  ) -> Any:
    """``function(state, *shared)`` of every slice, fetched and joined.

    Returns:
      The outputs' leaves as numpy arrays with one row per run.
    """
    outputs = [function(state, *shared) for state in self.states]
    return join_runs(outputs)

  def learning_rates(self) -> np.ndarray:
    """Each run's injected learning rate (the schedule's peak), as float64."""
    return join_runs(
      [optimizers.get_learning_rate(state.opt_state) for state in self.states]
    ).astype(np.float64)

  def set_learning_rates(self, values: Sequence[float]) -> None:
    """Sets run ``r``'s learning rate to ``values[r]``.

    Raises:
      ValueError: If there is not one value per run.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(self.runs),):
      raise ValueError(
        f"Expected one learning rate per run ({len(self.runs)}), got shape "
        f"{values.shape}."
      )
    self.states = [
      state._replace(
        opt_state=optimizers.set_learning_rate(state.opt_state, values[part])
      )
      for state, part in zip(self.states, self.slices, strict=True)
    ]

  def run_state(self, index: int) -> train_state_lib.TrainState:
    """The (unbatched) state of run ``index``."""
    for state, part in zip(self.states, self.slices, strict=True):
      if part.start <= index < part.stop:
        return unstack_run(state, index - part.start)
    raise IndexError(f"Run index {index} out of range({len(self.runs)}).")


def join_runs(outputs: Sequence[Any]) -> Any:
  """Fetches per-slice outputs and concatenates them along the run axis."""
  fetched = jax.device_get(list(outputs))
  return jax.tree.map(
    lambda *leaves: np.concatenate([np.asarray(leaf) for leaf in leaves]),
    *fetched,
  )


def join_calls(calls: Sequence[Sequence[Any]]) -> Any:
  """Joins the outputs of successive :meth:`BatchedRuns.step` calls.

  Args:
    calls: Per call, the list of per-slice outputs, each leaf shaped
      ``(runs in the slice, steps in the call, ...)``.

  Returns:
    Numpy leaves shaped ``(all runs, all steps, ...)``.
  """
  fetched = jax.device_get([list(call) for call in calls])
  per_slice = [
    jax.tree.map(
      lambda *parts: np.concatenate(parts, axis=1),
      *(call[index] for call in fetched),
    )
    for index in range(len(fetched[0]))
  ]
  return jax.tree.map(lambda *parts: np.concatenate(parts, axis=0), *per_slice)


def steps(
  step: Callable[..., tuple[Any, Any]], num_steps: int, scan: bool
) -> Callable[..., tuple[Any, Any]]:
  """Applies ``step(state, xs_t, *shared)`` ``num_steps`` times.

  Args:
    step: One run's step; ``xs_t`` is the step's slice of ``xs`` (None if
      ``xs`` is None).
    num_steps: The number of steps, the leading axis of ``xs``.
    scan: With True, one ``lax.scan`` over the steps; with False,
      ``num_steps`` must be 1 and the step is applied directly.

  Returns:
    ``apply(state, xs, *shared) -> (state, outputs stacked over steps)``.

  Raises:
    ValueError: If ``scan`` is False and ``num_steps`` is not 1.
  """
  if not scan and num_steps != 1:
    raise ValueError(
      f"Without a scan a call makes one step, got num_steps={num_steps}."
    )

  def apply(state: Any, xs: Any, *shared: Any) -> tuple[Any, Any]:
    def body(carry: Any, xs_t: Any) -> tuple[Any, Any]:
      return step(carry, xs_t, *shared)

    if scan:
      return jax.lax.scan(body, state, xs, length=num_steps)
    first = None if xs is None else jax.tree.map(lambda leaf: leaf[0], xs)
    state, out = body(state, first)
    return state, jax.tree.map(lambda leaf: leaf[None], out)

  return apply
