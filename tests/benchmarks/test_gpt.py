"""Tests of the MinGPT experiment (``benchmarks/reproduce/gpt.py``): its
batched training loop on the ``smoke`` preset with the tiny Shakespeare text
shipped with the examples, where one vmapped, scanned call over two runs must
give the same numbers as one call per run and interval.
"""

from __future__ import annotations

import pytest

from benchmarks.reproduce import gpt, runs
from benchmarks.reproduce.presets import Arm
from tests.benchmarks.conftest import SINGLE, SMOKE, VMAPPED


def test_vmapped_scanned_gpt_runs_equal_single_runs(mesh, module_data_env):
  # MinGPT's trajectories are smooth enough for EXAdam itself (measured:
  # 1e-7 relative), and the single runs then share their compiled programs
  # with the sweep of test_reproduce_cli.py, when both run in one process: the same
  # arm, model and text.
  corpus = gpt.load(SMOKE.gpt, None, download=False)
  exadam_runs = [
    runs.RunSpec(Arm("exadam", "exadam"), rate, seed)
    for rate, seed in ((1e-3, 3), (1e-2, 4))
  ]
  results = {}
  for name, execution in (("vmapped", VMAPPED), ("single", SINGLE)):
    group = gpt.GPTRunGroup(exadam_runs, SMOKE.gpt, corpus, mesh, execution)
    assert group.num_chunks == 2
    results[name] = group.start() + [
      r for _ in range(group.num_chunks) for r in group.run_chunk()
    ]
    assert group.finish() == []
  assert len(results["single"]) == 2 * 3
  assert [r["step"] for r in results["single"]] == [0, 0, 2, 2, 4, 4]
  assert [r["lr"] for r in results["single"]] == pytest.approx([1e-3, 1e-2] * 3)
  for a, b in zip(results["vmapped"], results["single"], strict=True):
    assert (a["run_id"], a["step"]) == (b["run_id"], b["step"])
    assert ("train_loss_running" in a) == (a["step"] > 0)
    for key in ("train_loss", "val_loss", "train_loss_running"):
      if key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-5), key


def test_gpt_intervals_end_with_the_last_iteration():
  assert gpt.interval_lengths(4, 2) == (2, 2)
  assert gpt.interval_lengths(5, 2) == (2, 2, 1)
  assert gpt.interval_lengths(1, 500) == (1,)
