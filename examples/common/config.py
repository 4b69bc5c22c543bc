"""The settings every training run has: :class:`RunConfig`.

Each trainer's ``Config`` subclasses it. A field's default and docstring make
the command line (``--help`` shows each docstring line as written, so it ends
a sentence or clause), ``__post_init__`` checks it, ``config.json`` records it.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import ClassVar, Literal

import jax.numpy as jnp
import optax

from examples.common import optimizers

OptimizerName = Literal[optimizers.OPTIMIZER_NAMES]
"""The registry's names, which ``--optimizer`` offers as its choices."""


def check_positive(name: str, value: object) -> None:
  """Raises ``ValueError`` naming ``name`` unless ``value`` is an int >= 1."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def float_dtype(name: str, value: str) -> jnp.dtype:
  """The floating dtype that ``value`` names; ``ValueError`` for others."""
  try:
    dtype = jnp.dtype(value)
  except TypeError:
    dtype = None
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
      f"{name} must name a floating dtype such as 'float32' or 'bfloat16', "
      f"got {value!r}."
    )
  return dtype


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Settings shared by both trainers (see each trainer's ``--help``)."""

  preset: str = "paper"
  """Preset these settings start from; options given after it override it."""
  optimizer: OptimizerName = "exadam"
  """Optimizer, with the PyTorch defaults of the paper's comparison."""
  lr: float = 1e-4
  """Learning rate (the paper's: 1e-4 for every optimizer).
  Adafactor ignores it, as torch_optimizer's does: its step is relative."""
  schedule: optimizers.ScheduleKind = "constant"
  """Learning-rate schedule: constant (the paper's) or cosine.
  Cosine warms up linearly to lr, then decays along a cosine."""
  warmup_fraction: float = 0.05
  """With the cosine schedule: fraction of the steps spent warming up."""
  final_fraction: float = 0.1
  """With the cosine schedule: the final rate as a fraction of lr."""
  weight_decay: float | None = None
  """Weight decay, coupled as in the mirrored PyTorch optimizer.
  None takes that optimizer's default (1e-2 for adamw, else 0)."""
  cross_moment_debiasing: bool = True
  """EXAdam: the cross-moment debiasing terms (off: Adam's debiasing)."""
  gradient_acceleration: bool = True
  """EXAdam: the gradient-acceleration term."""
  dynamic_step_size: bool = True
  """EXAdam: grow the step size as ln(sqrt(2 (t + 1))).
  Off: the authors' latest version."""
  seed: int = 1234
  """Random seed of initialisation, data order, augmentation and dropout."""
  data_dir: str | None = None
  """Data folder (None: $EXADAM_DATA_DIR, then ~/.cache/exadam_optax)."""
  download: bool = True
  """Download a data set that is not found."""
  verify_data: bool = True
  """Check the SHA-256 of official data files found on disk.
  Turn it off to use a deliberately modified copy."""
  out_dir: str | None = None
  """Run folder for config.json, metrics.jsonl and checkpoints.
  None: runs/<trainer>-<preset>-<optimizer>-seed<seed>."""
  resume: bool = False
  """Continue the run in --out-dir from its newest checkpoint that restores.
  Damaged ones are moved to checkpoints-damaged/."""
  restart_if_damaged: bool = False
  """With --resume: if no checkpoint restores, move them aside, start afresh.
  Off: stop with an error and change nothing."""
  keep_checkpoints: int = 3
  """Number of most recent checkpoints kept."""
  num_devices: int | None = None
  """Use only the first N devices (None: all)."""
  fsdp: bool = False
  """Shard parameters and optimizer state over the devices (FSDP).
  Off: replicate them on every device."""
  distributed: bool = False
  """Call jax.distributed.initialize() first (multi-host runs)."""
  coordinator_address: str | None = None
  """With --distributed: host:port of process 0 (None: detected)."""
  num_processes: int | None = None
  """With --distributed: number of processes (None: detected)."""
  process_id: int | None = None
  """With --distributed: this process's index (None: detected)."""
  heartbeat_timeout: int = 100
  """With --distributed: seconds before a silent process counts as lost.
  The others then stop."""
  compilation_cache: str | None = None
  """Folder of JAX's persistent compilation cache, or off.
  None: $JAX_COMPILATION_CACHE_DIR, else jax/ in the cache folder."""
  progress: bool = True
  """Draw a progress bar."""
  debug: bool = False
  """Show the traceback of an error (also: EXADAM_DEBUG=1)."""

  RESUMABLE: ClassVar[frozenset[str]] = frozenset(
    "data_dir download verify_data out_dir resume restart_if_damaged "
    "keep_checkpoints distributed coordinator_address num_processes "
    "process_id heartbeat_timeout compilation_cache progress debug".split()
  )
  """Settings that may differ when a run is resumed; subclasses add theirs."""

  def __post_init__(self) -> None:
    """Raises ``ValueError`` naming the first setting that is out of range."""
    if self.optimizer not in optimizers.OPTIMIZERS:
      raise ValueError(
        f"Unknown optimizer {self.optimizer!r}; choose one of "
        f"{', '.join(optimizers.OPTIMIZER_NAMES)}."
      )
    if not (isinstance(self.lr, int | float) and math.isfinite(self.lr)):
      raise ValueError(f"lr must be a finite number, got {self.lr!r}.")
    if self.lr <= 0:
      raise ValueError(f"lr must be positive, got {self.lr!r}.")
    if self.weight_decay is not None and not (
      math.isfinite(self.weight_decay) and self.weight_decay >= 0
    ):
      raise ValueError(
        f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}."
      )
    if (
      self.optimizer != "exadam"
      and self.switches != optimizers.ExAdamSwitches()
    ):
      raise ValueError(
        "The EXAdam switches (--no-cross-moment-debiasing, "
        "--no-gradient-acceleration, --no-dynamic-step-size) only apply to "
        f"--optimizer exadam, not to {self.optimizer!r}."
      )
    self.learning_rate_schedule(1)  # checks the schedule's settings
    seed = self.seed
    if (
      isinstance(seed, bool)
      or not isinstance(seed, int)
      or not 0 <= seed < 2**32
    ):
      raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}.")
    check_positive("keep_checkpoints", self.keep_checkpoints)
    check_positive("heartbeat_timeout", self.heartbeat_timeout)
    if self.num_devices is not None:
      check_positive("num_devices", self.num_devices)
    given = [
      name
      for name in ("coordinator_address", "num_processes", "process_id")
      if getattr(self, name) is not None
    ]
    if self.restart_if_damaged and not self.resume:
      raise ValueError("--restart-if-damaged only applies with --resume.")
    if given and not self.distributed:
      raise ValueError(
        f"{', '.join('--' + name.replace('_', '-') for name in given)} only "
        "apply with --distributed."
      )

  @property
  def switches(self) -> optimizers.ExAdamSwitches:
    """EXAdam's three components as configured."""
    return optimizers.ExAdamSwitches(
      self.cross_moment_debiasing,
      self.gradient_acceleration,
      self.dynamic_step_size,
    )

  def resumable(self) -> frozenset[str]:
    """:attr:`RESUMABLE`, less the run's length if the schedule uses it."""
    if self.schedule == "constant":
      return self.RESUMABLE
    return self.RESUMABLE - {"iters", "epochs"}

  def learning_rate_schedule(self, total_steps: int) -> optimizers.Schedule:
    """The configured schedule over a run of ``total_steps`` updates."""
    return optimizers.Schedule(
      self.schedule, total_steps, self.warmup_fraction, self.final_fraction
    )

  def make_optimizer(
    self, schedule: optimizers.Schedule
  ) -> optax.GradientTransformationExtraArgs:
    """The configured optimizer, its learning rate shaped by ``schedule``."""
    return optimizers.make_optimizer(
      self.optimizer,
      self.lr,
      weight_decay=self.weight_decay,
      switches=self.switches,
      schedule=schedule,
    )

  def run_dir(self, trainer: str) -> pathlib.Path:
    """The run folder; the default names ``trainer``, e.g. ``"mingpt"``."""
    if self.out_dir is not None:
      return pathlib.Path(self.out_dir)
    return pathlib.Path(
      "runs", f"{trainer}-{self.preset}-{self.optimizer}-seed{self.seed}"
    )
