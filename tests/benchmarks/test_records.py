"""Tests of the metric records (``benchmarks/reproduce/records.py``): curves
over seeds, final values, and the record files.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.reproduce import records, report
from tests.benchmarks.conftest import eval_records, final_records


def test_seed_curves_statistics_and_common_points():
  evals = eval_records(
    "adam", "epoch", [1, 2, 3], {"val_acc": [[0.2, 0.4, 0.6], [0.4, 0.6, 0.8]]}
  )
  evals = [r for r in evals if not (r["seed"] == 1 and r["epoch"] == 3)]
  curves = records.seed_curves(evals, "adam", "val_acc", "epoch")
  np.testing.assert_array_equal(curves.x, [1, 2])
  np.testing.assert_allclose(curves.mean, [0.3, 0.5])
  np.testing.assert_allclose(curves.std, [np.sqrt(0.02)] * 2)
  np.testing.assert_allclose(curves.last, [0.4, 0.6])


def test_seed_curves_needs_a_rate_when_there_are_several():
  evals = eval_records("adam", "step", [0], {"val_loss": [[1.0]]}, seeds=(0,))
  evals += eval_records(
    "adam", "step", [0], {"val_loss": [[2.0]]}, seeds=(0,), base_lr=1e-3
  )
  with pytest.raises(ValueError, match="pass base_lr"):
    records.seed_curves(evals, "adam", "val_loss", "step")
  curves = records.seed_curves(evals, "adam", "val_loss", "step", 1e-3)
  np.testing.assert_allclose(curves.last, [2.0])
  assert records.learning_rates_of(evals, "adam") == [1e-4, 1e-3]


def test_final_values_and_mean_and_std():
  finals = final_records("adam", [0.5, 0.7], seeds=(3, 1))
  np.testing.assert_allclose(
    records.final_values(finals, "adam", "test_acc"), [0.7, 0.5]
  )
  with pytest.raises(ValueError, match="No final records"):
    records.final_values(finals, "sgd", "test_acc")
  mean, std = records.mean_and_std(np.array([1.0, 3.0]))
  assert (mean, std) == pytest.approx((2.0, math.sqrt(2.0)))
  mean, std = records.mean_and_std(np.array([4.0]))
  assert mean == 4.0 and math.isnan(std)


def test_record_files_round_trip_and_tolerate_a_cut_last_line(tmp_path):
  path = records.metrics_path(tmp_path / "new", "gpt", report.SWEEP_STAGE)
  assert path == tmp_path / "new" / "sweep_gpt_metrics.jsonl"
  assert records.metrics_path(tmp_path, "cnn").name == "cnn_metrics.jsonl"
  writer = records.RecordWriter(path)
  writer.write([{"a": 1.0, "b": math.nan}])
  writer.write([{"a": 2.0}])
  assert writer.count == 2
  with open(path, "a", encoding="utf-8") as file:
    file.write('{"a": 3')
  read = records.read_records(path)
  assert [r["a"] for r in read] == [1.0, 2.0]
  assert math.isnan(read[0]["b"])
  path.write_text('{"a": 1}\nnot json\n{"a": 2}\n', encoding="utf-8")
  with pytest.raises(ValueError, match="line 2"):
    records.read_records(path)
