"""Protocols, optimizer line-ups and learning-rate grids of the reproduction.

A *preset* fixes both experiments' protocols as configurations of the
trainers themselves (:class:`examples.cifar10.configs.Config` and
:class:`examples.mingpt.configs.Config`), so a benchmark run trains exactly
what ``python -m examples.cifar10.train`` or ``examples.mingpt.train`` would
with the same settings. ``paper`` is the EXAdam paper's protocol (for an
accelerator), ``cpu`` a protocol sized for two CPU cores that trains the tiny
models until they stop improving (``benchmarks/README.md`` says how the sizes
were chosen), and ``smoke`` a seconds-long one for tests and dry runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from examples.cifar10 import configs as cnn_configs
from examples.cifar10.model import CNNConfig
from examples.common import optimizers
from examples.mingpt import configs as gpt_configs
from examples.mingpt.model import GPTConfig

CNN = "cnn"
"""Name of experiment 1, the CIFAR-10 CNN."""
GPT = "gpt"
"""Name of experiment 2, MinGPT on tiny Shakespeare."""
EXPERIMENTS = (CNN, GPT)

REFERENCE_OPTIMIZERS = ("adam", "adamw")
"""The arms EXAdam is measured against (convergence target, rate ratio), the
first one a reproduction ran."""


def reference_arm(arms: Sequence[str]) -> str:
  """The first of :data:`REFERENCE_OPTIMIZERS` among ``arms`` (else Adam)."""
  return next((a for a in REFERENCE_OPTIMIZERS if a in arms), "adam")


FOCUS_ARM = "exadam"
"""The arm whose speed-up over the others the convergence table reports."""


@dataclasses.dataclass(frozen=True)
class Arm:
  """One optimizer configuration compared in an experiment.

  Runs of the same arm (other seeds or learning rates) share one compiled
  program.

  Attributes:
    label: Name in tables, plots and records (e.g. ``"exadam"`` or
      ``"exadam-no-gradient-acceleration"``).
    optimizer: A name of :data:`examples.common.optimizers.OPTIMIZER_NAMES`.
    switches: EXAdam's components (all on for other optimizers).
  """

  label: str
  optimizer: str
  switches: optimizers.ExAdamSwitches = dataclasses.field(
    default_factory=optimizers.ExAdamSwitches
  )

  def __post_init__(self) -> None:
    if self.optimizer not in optimizers.OPTIMIZERS:
      raise ValueError(
        f"Unknown optimizer {self.optimizer!r}; choose one of "
        f"{', '.join(optimizers.OPTIMIZER_NAMES)}."
      )


def _arm(name: str) -> Arm:
  return Arm(name, name)


ABLATION_ARMS: tuple[Arm, ...] = (
  Arm("exadam", "exadam"),
  Arm(
    "exadam-no-cross-moment-debiasing",
    "exadam",
    optimizers.ExAdamSwitches(cross_moment_debiasing=False),
  ),
  Arm(
    "exadam-no-gradient-acceleration",
    "exadam",
    optimizers.ExAdamSwitches(gradient_acceleration=False),
  ),
  Arm(
    "exadam-no-dynamic-step-size",
    "exadam",
    optimizers.ExAdamSwitches(dynamic_step_size=False),
  ),
  Arm(
    "exadam-all-off",
    "exadam",
    optimizers.ExAdamSwitches(False, False, False),
  ),
)
"""EXAdam with all components, each one switched off in turn, and none
(which is Adam with PyTorch's epsilon placement)."""
ABLATION_REFERENCE = "exadam-all-off"
"""The ablation arm whose final validation metric sets the target."""
CONSTANT_STEP = ABLATION_ARMS[3]
"""EXAdam without the dynamic step size: the authors' latest form."""

COMPARE_ARMS: dict[str, tuple[Arm, ...]] = {
  CNN: tuple(
    map(_arm, ("exadam", "adam", "adamw", "adadelta", "rmsprop", "sgd"))
  ),
  GPT: tuple(
    map(
      _arm,
      ("exadam", "adam", "adamw", "adafactor", "sgd", "ademamix", "signum"),
    )
  ),
}
"""The paper's comparisons (sections 3.1 and 3.2), PyTorch's defaults."""

SWEEP_ARMS: dict[str, tuple[Arm, ...]] = {
  CNN: (
    _arm("exadam"),
    CONSTANT_STEP,
    *map(_arm, ("adam", "adamw", "rmsprop")),
  ),
  GPT: (
    _arm("exadam"),
    CONSTANT_STEP,
    *map(_arm, ("adam", "adamw", "adafactor")),
  ),
}
"""The tuned comparison: both forms of EXAdam, Adam, AdamW and the strongest
other baseline of the paper-protocol comparison of each experiment."""

DISPLAY_NAMES = {
  "exadam": "EXAdam",
  "adam": "Adam",
  "adamw": "AdamW",
  "adadelta": "AdaDelta",
  "rmsprop": "RMSProp",
  "sgd": "SGD with momentum",
  "adafactor": "AdaFactor",
  "ademamix": "AdEMAMix",
  "signum": "Signum",
  "exadam-no-dynamic-step-size": "EXAdam, constant step (no dynamic step size)",
  "exadam-no-cross-moment-debiasing": "EXAdam, no cross-moment debiasing",
  "exadam-no-gradient-acceleration": "EXAdam, no gradient acceleration",
  "exadam-all-off": "EXAdam, all three off (= Adam)",
}
"""Names as tables print them."""


def display_name(label: str) -> str:
  """The printed name of an arm, or its label."""
  return DISPLAY_NAMES.get(label, label)


def log_grid(
  low_exponent: float, high_exponent: float, per_decade: int = 3
) -> tuple[float, ...]:
  """Learning rates ``10**e`` from ``10**low`` to ``10**high``, log-spaced.

  Args:
    low_exponent: Exponent of the smallest rate.
    high_exponent: Exponent of the largest rate.
    per_decade: Points per decade.

  Returns:
    The rates, ascending, rounded to 3 significant digits.

  Raises:
    ValueError: If the range is not a whole number of grid steps.
  """
  steps = (high_exponent - low_exponent) * per_decade
  if steps < 0 or abs(steps - round(steps)) > 1e-9:
    raise ValueError(
      f"log_grid needs ascending exponents a whole number of 1/{per_decade} "
      f"decades apart, got {low_exponent} and {high_exponent}."
    )
  return tuple(
    float(f"{10.0**exponent:.3g}")
    for exponent in np.linspace(low_exponent, high_exponent, round(steps) + 1)
  )


def extend_grid(
  grid: tuple[float, ...], side: str, points: int = 2
) -> tuple[float, ...]:
  """``points`` more rates beyond one end of a log grid, at its spacing.

  Args:
    grid: An ascending log-spaced grid of at least two rates.
    side: ``"low"`` or ``"high"``.
    points: How many rates to add.

  Returns:
    The new rates only, ascending.
  """
  ratio = (grid[-1] / grid[0]) ** (1.0 / (len(grid) - 1))
  if side == "low":
    new = [grid[0] / ratio**k for k in range(points, 0, -1)]
  else:
    new = [grid[-1] * ratio**k for k in range(1, points + 1)]
  return tuple(float(f"{rate:.3g}") for rate in new)


def centred_grid(
  centre: float, points: int = 5, per_decade: int = 3
) -> tuple[float, ...]:
  """``points`` rates of a log grid centred on ``centre``.

  The rates are those of :func:`log_grid` with ``per_decade`` points per
  decade, so a grid centred on a rate that a wider sweep selected shares
  that sweep's rates.

  Raises:
    ValueError: If ``points`` is even (no centre) or below 3.
  """
  if points < 3 or points % 2 == 0:
    raise ValueError(f"points must be an odd number >= 3, got {points}.")
  middle = round(float(np.log10(centre)) * per_decade) / per_decade
  half = (points // 2) / per_decade
  return log_grid(middle - half, middle + half, per_decade)


@dataclasses.dataclass(frozen=True)
class Preset:
  """A complete setting of both experiments.

  Attributes:
    name: Key in :data:`PRESETS`.
    description: One line on what it is for.
    cnn: Experiment 1's protocol, a CNN trainer configuration (optimizer,
      learning rate and seed are set per run).
    gpt: Experiment 2's protocol, a MinGPT trainer configuration.
    grids: Per experiment and arm label, the learning rates of the sweep.
  """

  name: str
  description: str
  cnn: cnn_configs.Config
  gpt: gpt_configs.Config
  grids: dict[str, dict[str, tuple[float, ...]]]

  def with_schedule(
    self, kind: str, warmup_fraction: float, final_fraction: float
  ) -> Preset:
    """This preset with both protocols on another learning-rate schedule."""
    settings = dict(
      schedule=kind,
      warmup_fraction=warmup_fraction,
      final_fraction=final_fraction,
    )
    return dataclasses.replace(
      self,
      cnn=dataclasses.replace(self.cnn, **settings),
      gpt=dataclasses.replace(self.gpt, **settings),
    )

  def protocol(self, experiment: str) -> Any:
    """The trainer configuration of ``experiment``."""
    return {CNN: self.cnn, GPT: self.gpt}[experiment]

  def grid(self, experiment: str, arm: str) -> tuple[float, ...]:
    """The sweep grid of one arm of one experiment.

    Raises:
      ValueError: If the preset has no grid for it.
    """
    grids = self.grids[experiment]
    if arm not in grids:
      raise ValueError(
        f"Preset {self.name!r} has no learning-rate grid for {arm!r} in "
        f"experiment {experiment!r}; it has {sorted(grids)}."
      )
    return grids[arm]


# Around each optimizer's expected optimum; EXAdam's effective step is about
# ten times Adam's at the same rate, so its grid sits a decade lower.
_CPU_GRIDS = {
  CNN: {
    "exadam": log_grid(-5, -3),
    "exadam-no-dynamic-step-size": log_grid(-5, -3),
    "adam": log_grid(-4, -2),
    "adamw": log_grid(-4, -2),
    "rmsprop": log_grid(-5, -3),
  },
  GPT: {
    "exadam": log_grid(-5, -3),
    "exadam-no-dynamic-step-size": log_grid(-5, -3),
    "adam": log_grid(-4, -2),
    "adamw": log_grid(-4, -2),
    "adafactor": log_grid(-1, 1),
  },
}

# The long budget: each grid centred on the rate the 2,000-iteration / 6-epoch
# sweep of the `cpu` preset selected for that arm
# (benchmarks/results/cpu/tuned-*), five points at its spacing.
_CPU_LONG_GRIDS = {
  CNN: {
    "exadam": centred_grid(2.15e-4),
    "exadam-no-dynamic-step-size": centred_grid(2.15e-4),
    "adam": centred_grid(1e-3),
    "adamw": centred_grid(4.64e-4),
    "rmsprop": centred_grid(4.64e-4),
  },
  GPT: {
    "exadam": centred_grid(2.15e-4),
    "exadam-no-dynamic-step-size": centred_grid(1e-3),
    "adam": centred_grid(2.15e-3),
    "adamw": centred_grid(2.15e-3),
    "adafactor": centred_grid(2.15),
  },
}


def _cpu_preset(
  name: str,
  description: str,
  *,
  epochs: int,
  iters: int,
  grids: dict[str, dict[str, tuple[float, ...]]],
) -> Preset:
  """A CPU preset of the tiny models, ``epochs`` and ``iters`` long.

  The CNN keeps the paper's batch 128 and augmentation, which the trainer's
  tiny preset drops to finish in a minute, and trains on 4,096 images.
  """
  return Preset(
    name=name,
    description=description,
    cnn=dataclasses.replace(
      cnn_configs.PRESETS["tiny"],
      preset=name,
      batch_size=128,
      augment=True,
      epochs=epochs,
      max_train_images=4096,
      val_size=2000,
      plateau_patience=2,
    ),
    gpt=dataclasses.replace(
      gpt_configs.PRESETS["tiny"],
      preset=name,
      iters=iters,
      eval_interval=250,
      eval_iters=40,
    ),
    grids=grids,
  )


PRESETS: dict[str, Preset] = {
  "paper": Preset(
    name="paper",
    description="The paper's protocol at full size (for an accelerator).",
    cnn=cnn_configs.PRESETS["paper"],
    gpt=gpt_configs.PRESETS["paper"],
    grids={
      experiment: {
        arm.label: log_grid(-5, -1, per_decade=2)
        for arm in (*SWEEP_ARMS[experiment], *COMPARE_ARMS[experiment])
      }
      for experiment in EXPERIMENTS
    },
  ),
  "cpu": _cpu_preset(
    "cpu",
    "The tiny models trained until they stop improving, on two CPU cores.",
    epochs=6,
    iters=2000,
    grids=_CPU_GRIDS,
  ),
  # The CNN on the `cpu` preset's 4,096 images, so that the long run extends
  # the 6-epoch one; 24 epochs of 8,192 images would take about six hours to
  # sweep on one core (benchmarks/results/cpu/commands.txt).
  "cpu-long": _cpu_preset(
    "cpu-long",
    "The tiny models trained to the end of training, on two CPU cores.",
    epochs=20,
    iters=5000,
    grids=_CPU_LONG_GRIDS,
  ),
  "paper-tuned": Preset(
    name="paper-tuned",
    description=(
      "The paper's MinGPT with EXAdam and AdamW at three rates each (for "
      "an accelerator's few minutes)."
    ),
    cnn=cnn_configs.PRESETS["paper"],
    gpt=gpt_configs.PRESETS["paper"],
    # AdamW centred on 1e-3, a grid step below its tiny-model optimum since
    # the paper's model is six times wider; EXAdam at a tenth of that, the
    # ratio of the two optima measured on the CPU.
    grids={
      CNN: {},
      GPT: {
        "exadam": centred_grid(1e-4, points=3),
        "adamw": centred_grid(1e-3, points=3),
      },
    },
  ),
  "smoke": Preset(
    name="smoke",
    description="Seconds-long runs that exercise every code path (tests).",
    cnn=dataclasses.replace(
      cnn_configs.PRESETS["tiny"],
      preset="smoke",
      model=CNNConfig(widths=(4,), dense_features=8),
      batch_size=16,
      augment=True,
      epochs=2,
      val_size=16,
      max_train_images=32,
      plateau_patience=0,
    ),
    gpt=dataclasses.replace(
      gpt_configs.PRESETS["tiny"],
      preset="smoke",
      model=GPTConfig(block_size=16, n_embd=16, n_head=2, n_layer=1),
      batch_size=8,
      iters=4,
      eval_interval=2,
      eval_iters=2,
    ),
    grids={
      experiment: {
        arm.label: (1e-3, 1e-2)
        for arm in (*SWEEP_ARMS[experiment], *COMPARE_ARMS[experiment])
      }
      for experiment in EXPERIMENTS
    },
  ),
}
"""The presets, by ``--preset`` name."""
