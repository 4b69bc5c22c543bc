"""Tests of the figures (``benchmarks/reproduce/plots.py``), on synthetic
records.
"""

from __future__ import annotations

import math

from benchmarks.reproduce import plots, sweep
from tests.benchmarks.conftest import (
  eval_records,
  is_png,
  sweep_records,
  two_arm_cnn_records,
)


def test_figures_are_png_files(tmp_path):
  evals = two_arm_cnn_records()
  cnn_figure = plots.figure_cnn(
    evals, ["exadam", "adam"], "val", tmp_path / "f.png", paper_points=True
  )
  assert is_png(cnn_figure)
  gpt_evals = eval_records(
    "adam",
    "step",
    [0, 500],
    {"train_loss": [[4.0, 2.0]] * 2, "val_loss": [[4.0, 2.1]] * 2},
  )
  gpt_figure = plots.figure_gpt(
    gpt_evals, ["adam"], tmp_path / "sub" / "g.png", paper_points=True
  )
  assert is_png(gpt_figure)


def test_figure_sensitivity_draws_every_arm(tmp_path):
  evals = sweep_records(
    "gpt",
    {
      "adam": {1e-4: [1.5, 1.6], 1e-3: [1.4, 1.45], 1e-2: [math.nan, 2.0]},
      "signum": {1e-3: [math.nan, math.nan]},
    },
  )
  path = plots.figure_sensitivity(
    sweep.choose(evals, "gpt"), "sensitivity", tmp_path / "figures" / "s.png"
  )
  assert path == tmp_path / "figures" / "s.png" and is_png(path)
  accuracy = sweep.choose(
    sweep_records("cnn", {"adam": {1e-3: [0.5, 0.6]}}), "cnn"
  )
  assert is_png(plots.figure_sensitivity(accuracy, "cnn", tmp_path / "a.png"))
