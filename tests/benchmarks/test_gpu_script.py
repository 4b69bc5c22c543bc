"""The GPU script's CPU dry run: the wiring works before a GPU run spends time."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

import pytest

# Each test starts subprocesses or trains for several seconds.
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_smoke_dry_run_writes_every_result(tmp_path, cifar_dir):
  out = tmp_path / "out"
  env = {
    **os.environ,
    "EXADAM_GPU_SMOKE": "1",
    "EXADAM_GPU_DATA": str(cifar_dir),
    "EXADAM_GPU_WORK": str(tmp_path / "work"),
    # A budget that only caps: the smoke stages end long before it, also on
    # a slow or busy machine.
    "EXADAM_GPU_BUDGET": "900",
    # The interpreter running the tests, whether or not its environment is
    # activated (a bare ``python`` on PATH may be another one).
    "PYTHON": sys.executable,
  }
  done = subprocess.run(
    ["bash", "benchmarks/gpu/run.sh", str(out)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=1200,
  )
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  assert sorted(p.name for p in out.iterdir()) == [
    "results.tar.gz",
    "run.log",
    "step_cost.md",
    "tables.md",
    "tuned.md",
  ]
  log = (out / "run.log").read_text()
  assert "environment check passed" in log
  with tarfile.open(out / "results.tar.gz") as tar:
    names = tar.getnames()
  assert "results/reproduce/run_info.json" in names
  assert "results/tuned/run_info.json" in names
  assert any(name.startswith("results/step_cost/step_cost_") for name in names)
  info = json.loads(
    (tmp_path / "work/results/reproduce/run_info.json").read_text()
  )
  assert (info["preset"], info["mode"]) == ("smoke", "compare")
  assert set(info["experiments"]) == {"cnn", "gpt"}
  tuned = json.loads(
    (tmp_path / "work/results/tuned/run_info.json").read_text()
  )
  assert (tuned["preset"], tuned["mode"]) == ("smoke", "sweep")
  assert set(tuned["experiments"]) == {"gpt"}
  assert set(tuned["experiments"]["gpt"]["sweep"]["selected"]) == {
    "exadam",
    "adam",
  }
