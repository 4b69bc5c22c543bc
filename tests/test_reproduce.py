"""Tests of the reproduction benchmark (``python -m benchmarks.reproduce``).

Metrics, tables, plots and the schedule are tested on synthetic records; the
batched training loops on the ``smoke`` preset with random data, where one
vmapped, scanned call over two runs must give the same numbers as one call per
run and step.
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import numpy as np
import pytest

from benchmarks import (
  repro_cnn,
  repro_convergence,
  repro_gpt,
  repro_plots,
  repro_records,
  repro_report,
  repro_runs,
  repro_schedule,
  repro_tables,
  reproduce,
)
from benchmarks.repro_presets import PRESETS, Arm, log_grid
from examples.cifar10 import data as cifar_data
from examples.common import sharding
from examples.mingpt import data as text_data

SMOKE = PRESETS["smoke"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT = "To be, or not to be, that is the question: whether 'tis nobler. " * 40


def _random_cifar(seed: int = 0) -> cifar_data.Cifar10:
  rng = np.random.default_rng(seed)

  def split(size):
    images = rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8)
    return images, rng.integers(0, 10, size).astype(np.int32)

  return cifar_data.Cifar10(*split(64), *split(32), *split(32))


def _eval_records(arm, x_key, xs, metrics, seeds=(0, 1), base_lr=1e-4):
  """Evaluation records: ``metrics[name]`` is (num_seeds, len(xs))."""
  records = []
  for seed_index, seed in enumerate(seeds):
    for point, x in enumerate(xs):
      record = {
        "arm": arm,
        "base_lr": base_lr,
        "seed": seed,
        "kind": "eval",
        x_key: x,
      }
      for name, values in metrics.items():
        record[name] = float(np.asarray(values)[seed_index, point])
      records.append(record)
  return records


# Convergence metric.


def test_first_reach_interpolates_accuracy_and_loss():
  x = np.array([1.0, 2.0, 3.0])
  accuracy = repro_convergence.first_reach(
    x, np.array([0.1, 0.3, 0.5]), 0.4, higher_is_better=True
  )
  assert accuracy == repro_convergence.Reach(3.0, 2.5)
  loss = repro_convergence.first_reach(
    x, np.array([4.0, 3.0, 1.0]), 2.5, higher_is_better=False
  )
  assert loss.first_eval == 3.0
  assert loss.crossing == pytest.approx(2.25)


def test_first_reach_edge_cases():
  x = np.array([0.0, 50.0, 100.0])
  never = repro_convergence.first_reach(
    x, np.array([3.0, 2.9, np.nan]), 2.0, higher_is_better=False
  )
  assert never == repro_convergence.Reach(None, None)
  at_once = repro_convergence.first_reach(
    x, np.array([0.9, 0.95, 0.97]), 0.5, higher_is_better=True
  )
  assert at_once == repro_convergence.Reach(0.0, 0.0, censored=True)
  with pytest.raises(ValueError, match="ascending"):
    repro_convergence.first_reach(
      np.array([2.0, 1.0]), np.array([0.0, 1.0]), 0.5, higher_is_better=True
    )


def test_speedup():
  assert repro_convergence.speedup(2.0, 4.0) == pytest.approx(0.5)
  assert repro_convergence.speedup(5.0, 4.0) == pytest.approx(-0.25)
  assert repro_convergence.speedup(None, 4.0) is None
  assert repro_convergence.speedup(2.0, None) is None


def test_speedup_bounds_follow_censored_crossings():
  reach = repro_convergence.Reach
  exact, censored = reach(3.0, 2.5), reach(1.0, 1.0, censored=True)
  assert repro_convergence.speedup_bound(exact, exact) == "="
  assert repro_convergence.speedup_bound(censored, exact) == ">="
  assert repro_convergence.speedup_bound(exact, censored) == "<="
  assert repro_convergence.speedup_bound(censored, censored) == "?"


# Records.


def test_seed_curves_statistics_and_common_points():
  records = _eval_records(
    "adam", "epoch", [1, 2, 3], {"val_acc": [[0.2, 0.4, 0.6], [0.4, 0.6, 0.8]]}
  )
  records = [r for r in records if not (r["seed"] == 1 and r["epoch"] == 3)]
  curves = repro_records.seed_curves(records, "adam", "val_acc", "epoch")
  np.testing.assert_array_equal(curves.x, [1, 2])
  np.testing.assert_allclose(curves.mean, [0.3, 0.5])
  np.testing.assert_allclose(curves.std, [np.sqrt(0.02)] * 2)
  np.testing.assert_allclose(curves.last, [0.4, 0.6])


def test_seed_curves_needs_a_rate_when_there_are_several():
  records = _eval_records(
    "adam", "step", [0], {"val_loss": [[1.0]]}, seeds=(0,)
  )
  records += _eval_records(
    "adam", "step", [0], {"val_loss": [[2.0]]}, seeds=(0,), base_lr=1e-3
  )
  with pytest.raises(ValueError, match="pass base_lr"):
    repro_records.seed_curves(records, "adam", "val_loss", "step")
  curves = repro_records.seed_curves(records, "adam", "val_loss", "step", 1e-3)
  np.testing.assert_allclose(curves.last, [2.0])


def test_record_files_round_trip_and_tolerate_a_cut_last_line(tmp_path):
  path = tmp_path / "m.jsonl"
  writer = repro_records.RecordWriter(path)
  writer.write([{"a": 1.0, "b": math.nan}])
  writer.write([{"a": 2.0}])
  with open(path, "a", encoding="utf-8") as file:
    file.write('{"a": 3')
  records = repro_records.read_records(path)
  assert [r["a"] for r in records] == [1.0, 2.0]
  assert math.isnan(records[0]["b"])
  path.write_text('{"a": 1}\nnot json\n{"a": 2}\n', encoding="utf-8")
  with pytest.raises(ValueError, match="line 2"):
    repro_records.read_records(path)


# Tables.


def _two_arm_cnn_records():
  epochs = [1, 2, 3, 4]
  records = []
  for arm, val_acc in (
    ("exadam", [[0.3, 0.6, 0.7, 0.8], [0.3, 0.6, 0.7, 0.8]]),
    ("adam", [[0.2, 0.3, 0.5, 0.6], [0.2, 0.3, 0.5, 0.6]]),
  ):
    records += _eval_records(
      arm,
      "epoch",
      epochs,
      {
        "val_acc": val_acc,
        "train_acc": [[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.6]],
        "train_loss": [[2.0] * 4, [1.0] * 4],
        "val_loss": [[2.0] * 4, [2.0] * 4],
      },
    )
    for seed, test_acc in ((0, 0.5), (1, 0.7)):
      records.append(
        {
          "arm": arm,
          "base_lr": 1e-4,
          "seed": seed,
          "kind": "final",
          "test_acc": test_acc,
        }
      )
  return records


def test_tables_1_and_2_show_mean_sd_and_paper_numbers():
  records = _two_arm_cnn_records()
  table1 = repro_tables.table1(records, ["exadam", "adam"])
  assert (
    "| EXAdam | 2 | 50.00 ± 14.14 | 97.72 | 80.00 ± 0.00 | 90.98 |" in table1
  )
  assert "epoch 4" in table1
  table2 = repro_tables.table2(records, ["exadam", "adam"])
  assert "| Adam | 2 | 60.00 ± 14.14 | 89.66 |" in table2


def test_table3_reports_best_validation_loss_and_where():
  records = []
  for arm, val in (("exadam", [4.0, 1.5, 1.8]), ("adam", [4.0, 2.0, 1.6])):
    records += _eval_records(
      arm,
      "step",
      [0, 500, 1000],
      {"val_loss": [val, val], "train_loss": [[4.0, 1.0, 0.5]] * 2},
    )
  table = repro_tables.table3(records, ["exadam", "adam"])
  assert "1.500 @ 500" in table
  assert "1.497 @ 2000" in table  # the paper's best for EXAdam
  assert "1.600 @ 1000" in table


def test_convergence_speedup_against_the_reference():
  result = repro_tables.convergence(
    _two_arm_cnn_records(),
    ["exadam", "adam"],
    metric="val_acc",
    x_key="epoch",
    reference="adam",
  )
  assert result.target == pytest.approx(0.6)
  rows = {row.arm: row for row in result.rows}
  assert rows["exadam"].reach == repro_convergence.Reach(2.0, 2.0)
  assert rows["adam"].reach == repro_convergence.Reach(4.0, 4.0)
  assert result.speedup_over("adam") == pytest.approx(0.5)
  table = repro_tables.convergence_table(result)
  assert "60.000%" in table and "50.0%" in table
  with pytest.raises(ValueError, match="reference"):
    repro_tables.convergence(
      _two_arm_cnn_records(),
      ["exadam"],
      metric="val_acc",
      x_key="epoch",
      reference="adam",
    )


def test_convergence_table_marks_targets_reached_at_the_first_epoch():
  records = _eval_records(
    "exadam", "epoch", [1, 2], {"val_acc": [[0.7, 0.8], [0.7, 0.8]]}
  )
  records += _eval_records(
    "adam", "epoch", [1, 2], {"val_acc": [[0.2, 0.6], [0.2, 0.6]]}
  )
  result = repro_tables.convergence(
    records,
    ["exadam", "adam"],
    metric="val_acc",
    x_key="epoch",
    reference="adam",
  )
  table = repro_tables.convergence_table(result)
  assert "| EXAdam | 1 | ≤ 1.00 |" in table
  assert "| ≥ 50.0% |" in table


def test_sweep_selects_lowest_final_loss_and_flags_edges():
  records = []
  for arm, losses in (
    ("adam", {1e-4: 2.0, 1e-3: 1.5, 1e-2: math.nan}),
    ("sgd", {1e-4: 3.0, 1e-3: 2.5, 1e-2: 2.0}),
    ("signum", {1e-4: math.nan}),
  ):
    for rate, loss in losses.items():
      records += _eval_records(
        arm,
        "step",
        [0, 10],
        {"val_loss": [[4.0, loss]]},
        seeds=(7,),
        base_lr=rate,
      )
  choices = {c.arm: c for c in repro_tables.sweep_choices(records, "step")}
  assert choices["adam"].best_lr == 1e-3 and not choices["adam"].at_edge
  assert choices["sgd"].best_lr == 1e-2 and choices["sgd"].at_edge
  assert choices["signum"].best_lr is None
  table = repro_tables.sweep_table(list(choices.values()))
  assert (
    "**1.500**" in table and "diverged" in table and "(edge of grid)" in table
  )


def test_log_grid_half_decades():
  assert log_grid(-5, -1) == (
    1e-5,
    3.16e-5,
    1e-4,
    3.16e-4,
    1e-3,
    3.16e-3,
    1e-2,
    3.16e-2,
    0.1,
  )
  with pytest.raises(ValueError):
    log_grid(-1, -5)


def test_figures_are_png_files(tmp_path):
  records = _two_arm_cnn_records()
  path = repro_plots.figure_cnn(
    records, ["exadam", "adam"], "val", tmp_path / "f.png", paper_points=True
  )
  assert path.read_bytes().startswith(PNG_SIGNATURE)
  choices = [
    repro_tables.SweepChoice("adam", {1e-4: 2.0, 1e-3: math.nan}, 1e-4, True)
  ]
  sweep = repro_plots.figure_sweep(choices, "sweep", tmp_path / "s.png")
  assert sweep.read_bytes().startswith(PNG_SIGNATURE)


# Schedule.


class _FakeGroup:
  def __init__(self, num_chunks, clock, seconds_per_chunk):
    self.num_chunks = num_chunks
    self.clock = clock
    self.seconds = seconds_per_chunk
    self.chunks_done = 0
    self.finished = 0

  def start(self):
    return [{"start": True}]

  def run_chunk(self):
    self.clock.now += self.seconds
    self.chunks_done += 1
    return [{"chunk": self.chunks_done}]

  def finish(self):
    self.finished += 1
    return [{"final": True}]


class _Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_round_robin_stops_every_group_at_the_same_round():
  clock = _Clock()
  groups = [_FakeGroup(10, clock, 5.0), _FakeGroup(10, clock, 5.0)]
  written = []
  outcome = repro_schedule.run_round_robin(
    groups, written.extend, time_budget=45.0, clock=clock, log=lambda _: None
  )
  # Rounds take 10 s; a round plus the finish reserve (12.5 s) must fit:
  # after 30 s a fourth round fits in 45 s, after 40 s a fifth does not.
  assert outcome.rounds_done == 4 and outcome.stopped_early
  assert [g.chunks_done for g in groups] == [4, 4]
  assert [g.finished for g in groups] == [1, 1]
  assert len(written) == 2 + 8 + 2
  full = repro_schedule.run_round_robin(
    [_FakeGroup(2, clock, 1.0)], written.extend, clock=clock, log=lambda _: None
  )
  assert full.rounds_done == 2 and not full.stopped_early
  with pytest.raises(ValueError, match="same number"):
    repro_schedule.run_round_robin(
      [_FakeGroup(2, clock, 1.0), _FakeGroup(3, clock, 1.0)], written.extend
    )


def test_seeds_that_fit():
  fit = repro_schedule.seeds_that_fit(
    chunk_seconds=1.0,
    compile_seconds=10.0,
    num_arms=6,
    num_chunks=100,
    time_left=1500.0,
    max_seeds=5,
  )
  # 1440 s left after compiling, 600.15 s per seed.
  assert fit == 2
  assert (
    repro_schedule.seeds_that_fit(
      chunk_seconds=10.0,
      compile_seconds=0.0,
      num_arms=6,
      num_chunks=100,
      time_left=100.0,
      max_seeds=3,
    )
    == 1
  )


# Batched training loops.


@pytest.fixture(scope="module")
def mesh():
  return sharding.make_data_mesh(1)


def _final_params(group, index):
  return jax.device_get(group.batched.run_state(index).params)


# SGD keeps the trajectories smooth functions of the arithmetic (Adam's first
# steps are signs of the gradient, which floating-point noise can flip), and
# unaugmented random images have no flat regions, hence no tied maxima in max
# pooling whose gradient XLA may route differently in a loop.
CNN_EQUALITY_PROTOCOL = dataclasses.replace(SMOKE.cnn, augment=False)
SINGLE = repro_runs.Execution(run_batch=1, scan_chunks=False)
VMAPPED = repro_runs.Execution(run_batch=None, scan_chunks=True)


def _sgd_runs():
  return [
    repro_runs.RunSpec(Arm("sgd", "sgd"), rate, seed)
    for rate, seed in ((0.05, 3), (0.1, 4))
  ]


def test_vmapped_scanned_cnn_runs_equal_single_runs(mesh):
  protocol = CNN_EQUALITY_PROTOCOL
  dataset = _random_cifar()
  groups = {
    name: repro_cnn.CNNRunGroup(_sgd_runs(), protocol, dataset, mesh, execution)
    for name, execution in (("vmapped", VMAPPED), ("single", SINGLE))
  }
  records = {
    name: [group.run_chunk() for _ in range(protocol.epochs)] + [group.finish()]
    for name, group in groups.items()
  }
  keys = (
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
  )
  for vmapped, single in zip(*records.values(), strict=True):
    for a, b in zip(vmapped, single, strict=True):
      assert a["run_id"] == b["run_id"]
      for key in keys:
        if key in a:
          assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
  for index in (0, 1):
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
      _final_params(groups["vmapped"], index),
      _final_params(groups["single"], index),
    )


def test_vmapped_scanned_gpt_runs_equal_single_runs(mesh):
  corpus = text_data.CharCorpus.from_text(TEXT)
  results = {}
  for name, execution in (("vmapped", VMAPPED), ("single", SINGLE)):
    group = repro_gpt.GPTRunGroup(
      _sgd_runs(), SMOKE.gpt, corpus, mesh, execution
    )
    results[name] = group.start() + [
      r for _ in range(group.num_chunks) for r in group.run_chunk()
    ]
  assert len(results["single"]) == 2 * 3
  for a, b in zip(results["vmapped"], results["single"], strict=True):
    assert (a["run_id"], a["step"]) == (b["run_id"], b["step"])
    for key in ("train_loss", "val_loss", "train_loss_running"):
      if key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-5), key


def test_plateau_lowers_each_runs_rate_in_the_batched_state(mesh):
  group = repro_cnn.CNNRunGroup(
    _sgd_runs(), CNN_EQUALITY_PROTOCOL, _random_cifar(), mesh, SINGLE
  )
  group.schedulers[0].best = -math.inf  # Run 0 can never improve.
  group.schedulers[1].patience = 10  # Run 1 keeps its rate.
  first = group.run_chunk()
  second = group.run_chunk()
  assert [r["lr"] for r in first] == pytest.approx([0.05, 0.1])
  # Patience 0: each bad epoch of run 0 lowers its rate tenfold.
  assert [r["lr"] for r in second] == pytest.approx([0.005, 0.1])
  np.testing.assert_allclose(
    group.batched.learning_rates(), [0.0005, 0.1], rtol=1e-6
  )


def test_adafactor_multiplier_is_injected(mesh):
  runs = [repro_runs.RunSpec(Arm("adafactor", "adafactor"), 0.5, 1)]
  group = repro_gpt.GPTRunGroup(
    runs, SMOKE.gpt, text_data.CharCorpus.from_text(TEXT), mesh, SINGLE
  )
  np.testing.assert_allclose(group.batched.learning_rates(), [0.5])


def test_batched_runs_reject_mixed_arms(mesh):
  runs = [
    repro_runs.RunSpec(Arm("adam", "adam"), 1e-3, 0),
    repro_runs.RunSpec(Arm("sgd", "sgd"), 1e-3, 0),
  ]
  with pytest.raises(ValueError, match="share one arm"):
    repro_runs.check_runs(runs)
  with pytest.raises(ValueError, match="run_batch"):
    dataclasses.replace(SINGLE, run_batch=0)


# The command line, end to end.


@pytest.fixture
def smoke_data(tmp_path, monkeypatch):
  """A data folder with a small text, and CIFAR-10 replaced by random images."""
  data_dir = tmp_path / "data"
  (data_dir / "tinyshakespeare").mkdir(parents=True)
  (data_dir / "tinyshakespeare" / "input.txt").write_text(
    TEXT, encoding="utf-8"
  )
  monkeypatch.setattr(
    cifar_data, "load_cifar10", lambda *args, **kwargs: _random_cifar(1)
  )
  return data_dir


def test_compare_mode_writes_records_tables_and_figures(tmp_path, smoke_data):
  out = tmp_path / "out"
  argv = [
    "--preset",
    "smoke",
    "--experiments",
    "cnn",
    "--seeds",
    "2",
    "--optimizers",
    "exadam",
    "adam",
    "--data-dir",
    str(smoke_data),
    "--out",
    str(out),
  ]
  assert reproduce.main(argv) == 0
  cnn = repro_records.read_records(out / "cnn_metrics.jsonl")
  # 2 arms x 2 seeds x (2 epochs + the test).
  assert len(cnn) == 12
  assert {r["seed"] for r in cnn} == {1234, 1235}
  assert {r["arm"] for r in cnn} == {"exadam", "adam"}
  info = json.loads((out / "run_info.json").read_text())
  assert info["experiments"]["cnn"]["outcome"]["rounds_done"] == 2
  tables = (out / "tables.md").read_text()
  for heading in ("Table 1", "Table 2", "Convergence speed"):
    assert heading in tables
  for name in ("figure1_cnn_train", "figure2_cnn_val"):
    assert (
      (out / "figures" / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE)
    )
  (out / "tables.md").unlink()
  assert reproduce.main(["--report-only", "--out", str(out)]) == 0
  assert (out / "tables.md").read_text() == tables
  with pytest.raises(FileExistsError):
    reproduce.main(argv)


def test_sweep_mode_reruns_each_optimizer_at_its_selected_rate(
  tmp_path, smoke_data
):
  out = tmp_path / "sweep"
  argv = [
    "--preset",
    "smoke",
    "--mode",
    "sweep",
    "--experiments",
    "gpt",
    "--seeds",
    "2",
    "--optimizers",
    "sgd",
    "--data-dir",
    str(smoke_data),
    "--out",
    str(out),
  ]
  assert reproduce.main(argv) == 0
  sweep = repro_records.read_records(out / "sweep_gpt_metrics.jsonl")
  assert {r["base_lr"] for r in sweep} == set(SMOKE.sweep.default)
  assert {r["seed"] for r in sweep} == {1234 + reproduce.SWEEP_SEED_OFFSET}
  info = repro_report.read_run_info(out)["experiments"]["gpt"]
  choice = repro_tables.sweep_choices(sweep, "step")[0]
  assert info["sweep"]["selected"] == {"sgd": choice.best_lr}
  tuned = repro_records.read_records(out / "gpt_metrics.jsonl")
  # 2 seeds x 3 evaluations at the selected rate.
  assert len(tuned) == 6
  assert {(r["base_lr"], r["seed"]) for r in tuned} == {
    (choice.best_lr, 1234),
    (choice.best_lr, 1235),
  }
  tables = (out / "tables.md").read_text()
  for heading in ("Learning-rate sweep", "Table 3", "Convergence speed"):
    assert heading in tables
  for name in ("sweep_gpt", "figure3_gpt"):
    assert (
      (out / "figures" / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE)
    )


def test_arms_for_each_mode():
  assert [a.label for a in reproduce.arms_for("cnn", "compare", None)] == [
    "exadam",
    "adam",
    "adamw",
    "adadelta",
    "rmsprop",
    "sgd",
  ]
  ablation = reproduce.arms_for("gpt", "ablation", None)
  assert ablation[-1].switches == type(ablation[-1].switches)(
    False, False, False
  )
  assert len({a.switches for a in ablation}) == 5
  with pytest.raises(ValueError, match="leaves none"):
    reproduce.arms_for("cnn", "compare", ["signum"])
