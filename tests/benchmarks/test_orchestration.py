"""Tests of the orchestration (``benchmarks/reproduce/orchestration.py``):
the arms of each mode and the rates tuned by an earlier sweep.
"""

from __future__ import annotations

import pytest

from benchmarks.reproduce import orchestration, report
from benchmarks.reproduce.presets import ABLATION_ARMS


def test_arms_for_each_mode():
  assert [a.label for a in orchestration.arms_for("cnn", "compare", None)] == [
    "exadam",
    "adam",
    "adamw",
    "adadelta",
    "rmsprop",
    "sgd",
  ]
  assert [a.label for a in orchestration.arms_for("gpt", "sweep", None)] == [
    "exadam",
    "exadam-no-dynamic-step-size",
    "adam",
    "adamw",
    "adafactor",
  ]
  assert [
    a.label for a in orchestration.arms_for("cnn", "sweep", ["adam", "sgd"])
  ] == ["adam"]
  ablation = orchestration.arms_for("gpt", "ablation", None)
  assert (
    ablation
    == ABLATION_ARMS
    == orchestration.arms_for("cnn", "ablation", ["adam"])
  )
  assert {a.optimizer for a in ablation} == {"exadam"}
  assert ablation[-1].switches == type(ablation[-1].switches)(
    False, False, False
  )
  assert len({a.switches for a in ablation}) == 5
  with pytest.raises(ValueError, match="leaves none"):
    orchestration.arms_for("cnn", "compare", ["signum"])


def test_tuned_rate_needs_a_finished_sweep(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a reproduction folder"):
    orchestration.tuned_rate(tmp_path, "gpt", "exadam")
  info = {"experiments": {"gpt": {"sweep": {"selected": {"exadam": None}}}}}
  report.write_run_info(tmp_path, info)
  with pytest.raises(ValueError, match="no selected rate of 'exadam'"):
    orchestration.tuned_rate(tmp_path, "gpt", "exadam")
  with pytest.raises(ValueError, match="for experiment 'cnn'"):
    orchestration.tuned_rate(tmp_path, "cnn", "exadam")
  info["experiments"]["gpt"]["sweep"]["selected"]["exadam"] = 3e-3
  report.write_run_info(tmp_path, info)
  assert orchestration.tuned_rate(tmp_path, "gpt", "exadam") == 3e-3
