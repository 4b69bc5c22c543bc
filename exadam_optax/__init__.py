"""EXAdam, Adam with adaptive cross-moments, as an optax transformation."""

from exadam_optax._exadam import ScaleByExAdamState, exadam, scale_by_exadam

__all__ = ["ScaleByExAdamState", "exadam", "scale_by_exadam"]

__version__ = "0.2.0"
