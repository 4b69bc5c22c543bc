"""Checks shared by the training run configurations of both examples."""

from collections.abc import Iterable, Mapping
from typing import Any

from examples.common import optimizers

DTYPES = ("float32", "bfloat16")


def check_positive(name: str, value: Any) -> None:
  """Raises ``ValueError`` unless ``value`` is an integer >= 1."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def check_preset(preset: str, presets: Mapping[str, Any]) -> None:
  """Raises ``ValueError`` unless ``preset`` names one of ``presets``."""
  if preset not in presets:
    raise ValueError(
      f"Unknown preset {preset!r}; choose one of {sorted(presets)}."
    )


def check_run_settings(
  config: Any, presets: Mapping[str, Any], positive: Iterable[str]
) -> None:
  """Checks the settings every training run has.

  Args:
    config: A run configuration with ``preset``, ``optimizer``, ``seed`` and
      ``dtype`` fields.
    presets: The trainer's presets.
    positive: Names of integer fields that must be >= 1.

  Raises:
    ValueError: Naming the first setting that is out of range.
  """
  check_preset(config.preset, presets)
  if config.optimizer not in optimizers.OPTIMIZERS:
    raise ValueError(
      f"Unknown optimizer {config.optimizer!r}; choose one of "
      f"{', '.join(optimizers.OPTIMIZER_NAMES)}."
    )
  for name in positive:
    check_positive(name, getattr(config, name))
  seed = config.seed
  if (
    isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32
  ):
    raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}.")
  if config.dtype not in DTYPES:
    raise ValueError(
      f"dtype must be one of {', '.join(DTYPES)}, got {config.dtype!r}."
    )
