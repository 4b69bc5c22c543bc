"""The compilation-cache benchmark on a two-step MinGPT (no timing claims)."""

import json

import numpy as np
import pytest

from benchmarks import first_step

# Each test starts subprocesses or trains for several seconds.
pytestmark = pytest.mark.slow


def test_reports_a_cold_and_a_warm_run(tmp_path):
  text = tmp_path / "text.txt"
  words = "to be or not to be that is the question".split()
  text.write_text(" ".join(np.random.default_rng(0).choice(words, 500)))
  trainer_args = (
    f"--preset tiny --text {text} --iters 2 --eval-interval 2 --eval-iters 1 "
    "--n-layer 1 --n-embd 16 --n-head 2 --block-size 16 --batch-size 8 "
    "--sample-tokens 0"
  )
  out = tmp_path / "out"
  argv = ["--trainers", "mingpt", "--trainer-args", trainer_args]
  assert first_step.main([*argv, "--out", str(out)]) == 0
  report = json.loads((out / "first_step_cpu.json").read_text())
  runs = report["results"]["mingpt"]
  assert len(runs) == 2
  assert all(r["first_step_seconds"] > 0 for r in runs)
  assert all(r["wall_seconds"] > r["first_step_seconds"] for r in runs)
  table = (out / "first_step_cpu.md").read_text()
  assert "| mingpt | 1 | cold |" in table and "| mingpt | 2 | warm |" in table


def test_one_run_is_refused():
  with pytest.raises(SystemExit) as stopped:
    first_step.parse_args(["--runs", "1"])
  assert stopped.value.code == 2


def test_a_failing_trainer_is_reported_without_a_traceback(tmp_path, capsys):
  argv = ["--trainers", "mingpt", "--trainer-args=--iters=-1"]
  assert first_step.main([*argv, "--out", str(tmp_path / "out")]) == 1
  error = capsys.readouterr().err
  assert error.startswith("benchmarks.first_step: ")
  assert "--iters=-1" in error and "Traceback" not in error
  assert not (tmp_path / "out").exists()
