"""ReduceLROnPlateau against PyTorch's documented step rules."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from examples.cifar10 import configs as cnn_configs
from examples.cifar10 import train as cnn_train
from examples.common.plateau import ReduceLROnPlateau


def _run(scheduler: ReduceLROnPlateau, metrics: list[float]) -> list[float]:
  return [scheduler.step(metric) for metric in metrics]


def test_reduces_after_more_than_patience_bad_epochs():
  scheduler = ReduceLROnPlateau(learning_rate=1.0, factor=0.1, patience=2)
  # Epoch 1 improves on inf; epochs 2-4 do not improve on 1.0: the third bad
  # epoch (> patience 2) lowers the rate, and the count starts again.
  lrs = _run(scheduler, [1.0, 1.0, 1.5, 1.0, 1.2, 1.2, 1.2])
  assert lrs == pytest.approx([1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01])
  assert scheduler.best == 1.0
  assert scheduler.last_epoch == 7


def test_relative_threshold_decides_what_improves():
  scheduler = ReduceLROnPlateau(learning_rate=1.0, patience=0, threshold=1e-2)
  # 0.995 is not below 1.0 * (1 - 1e-2): a bad epoch, reduced at once.
  assert _run(scheduler, [1.0, 0.995]) == pytest.approx([1.0, 0.1])
  # 0.98 is below 0.99: an improvement, the rate stays.
  scheduler = ReduceLROnPlateau(learning_rate=1.0, patience=0, threshold=1e-2)
  assert _run(scheduler, [1.0, 0.98]) == pytest.approx([1.0, 1.0])


def test_paper_settings_by_default():
  scheduler = ReduceLROnPlateau(learning_rate=1e-4)
  assert (scheduler.mode, scheduler.factor, scheduler.patience) == (
    "min",
    0.1,
    5,
  )
  assert (scheduler.threshold, scheduler.threshold_mode) == (1e-4, "rel")
  assert (scheduler.min_lr, scheduler.cooldown) == (0.0, 0)
  lrs = _run(scheduler, [2.0] + [2.0] * 5 + [2.0])
  assert lrs[:6] == [1e-4] * 6
  assert lrs[6] == pytest.approx(1e-5)


def test_cooldown_and_min_lr():
  scheduler = ReduceLROnPlateau(
    learning_rate=1.0, factor=0.5, patience=0, cooldown=2, min_lr=0.3
  )
  lrs = _run(scheduler, [1.0, 2.0, 2.0, 2.0, 2.0, 2.0])
  # Reduce at epoch 2, two cooldown epochs, reduce at epoch 5 (clipped to
  # min_lr), then nothing changes any more.
  assert lrs == pytest.approx([1.0, 0.5, 0.5, 0.5, 0.3, 0.3])


def test_tiny_reductions_are_skipped():
  scheduler = ReduceLROnPlateau(learning_rate=1e-8, patience=0)
  # 1e-8 -> 1e-9 changes the rate by 9e-9 <= eps 1e-8: torch keeps it.
  assert _run(scheduler, [1.0, 1.0]) == [1e-8, 1e-8]


def test_max_mode():
  scheduler = ReduceLROnPlateau(learning_rate=1.0, mode="max", patience=0)
  assert _run(scheduler, [0.5, 0.6, 0.55]) == pytest.approx([1.0, 1.0, 0.1])


def test_nan_metric_counts_as_bad_epoch():
  scheduler = ReduceLROnPlateau(learning_rate=1.0, patience=0)
  assert _run(scheduler, [1.0, math.nan]) == pytest.approx([1.0, 0.1])


def test_state_dict_round_trips_through_json():
  scheduler = ReduceLROnPlateau(learning_rate=1e-4, patience=1)
  fresh = ReduceLROnPlateau.from_state_dict(
    json.loads(json.dumps(scheduler.state_dict()))
  )
  assert fresh == scheduler and math.isinf(fresh.best)
  _run(scheduler, [3.0, 3.0, 3.0])
  restored = ReduceLROnPlateau.from_state_dict(
    json.loads(json.dumps(scheduler.state_dict()))
  )
  assert restored == scheduler
  assert _run(restored, [3.0, 2.0, 2.5]) == _run(scheduler, [3.0, 2.0, 2.5])


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(factor=1.0), "factor must lie in"),
    (dict(mode="median"), "mode must be"),
    (dict(threshold_mode="pct"), "threshold_mode must be"),
    (dict(patience=-1), "patience and cooldown"),
    (dict(min_lr=-1.0), "min_lr must be"),
  ],
)
def test_bad_settings_are_rejected(kwargs, message):
  with pytest.raises(ValueError, match=message):
    ReduceLROnPlateau(learning_rate=1.0, **kwargs)


def test_foreign_state_dict_is_rejected():
  with pytest.raises(ValueError, match="missing"):
    ReduceLROnPlateau.from_state_dict({"learning_rate": 1.0})


def test_the_cnn_trainer_steps_it_as_the_benchmarks_do():
  # examples.cifar10.train and benchmarks.reproduce.cnn both step their
  # schedulers with these functions.
  config = dataclasses.replace(
    cnn_configs.PRESETS["tiny"], plateau_factor=0.5, plateau_patience=0
  )
  scheduler = cnn_train.plateau_scheduler(config, 1.0)
  lowered = [cnn_train.step_plateau(scheduler, m) for m in (1.0, 1.0, 0.5)]
  assert lowered == [False, True, False]
  assert scheduler.learning_rate == 0.5
