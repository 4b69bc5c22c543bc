"""Tests of the reproduction's command line
(``python -m benchmarks.reproduce``, ``benchmarks/reproduce/cli.py``): its
arguments, and each mode end to end on the ``smoke`` preset, with a tiny
CIFAR-10 folder in the official layout and the tiny Shakespeare text shipped
with the examples.
"""

from __future__ import annotations

import pytest

from benchmarks.reproduce import (
  cli,
  orchestration,
  records,
  report,
  schedule,
  sweep,
)
from benchmarks.reproduce.presets import ABLATION_ARMS, extend_grid
from tests.benchmarks.conftest import SMOKE, is_png


@pytest.mark.parametrize(
  ("argv", "message"),
  [
    (["--mode", "ablation"], "exactly one of --lr and --tuned-from"),
    (
      ["--mode", "ablation", "--lr", "1e-3", "--tuned-from", "x"],
      "exactly one of --lr and --tuned-from",
    ),
    (
      ["--mode", "ablation", "--lr", "1e-3", "--optimizers", "adam"],
      "--optimizers does not apply",
    ),
    (["--auto-seeds"], "--auto-seeds needs --time-budget"),
    (["--lr", "0"], "must be a positive number"),
    (["--seeds", "0"], "must be a positive integer"),
  ],
)
def test_bad_arguments_are_rejected(argv, message, capsys, tmp_path):
  with pytest.raises(SystemExit):
    cli.parse_args([*argv, "--out", str(tmp_path)])
  assert message in capsys.readouterr().err


def test_ablation_takes_exactly_one_rate(tmp_path):
  args = cli.parse_args(["--mode", "ablation", "--lr", "2e-4", "--out", "o"])
  assert args.lr == 2e-4 and args.tuned_from is None
  args = cli.parse_args(
    ["--mode", "ablation", "--tuned-from", str(tmp_path), "--out", "o"]
  )
  assert args.tuned_from == tmp_path and args.lr is None
  # Rebuilding the report needs neither.
  assert cli.parse_args(["--mode", "ablation", "--report-only", "--out", "o"])


def _argv(out, data_dir, *options):
  return [
    "--preset",
    "smoke",
    *options,
    "--data-dir",
    str(data_dir),
    "--out",
    str(out),
  ]


@pytest.mark.slow
def test_compare_mode_writes_records_tables_and_figures(
  tmp_path, smoke_cifar_dir, module_data_env, capsys
):
  out = tmp_path / "out"
  argv = _argv(
    out,
    smoke_cifar_dir,
    *("--mode", "compare", "--experiments", "cnn", "--seeds", "2"),
    *("--optimizers", "exadam", "adam"),
  )
  assert cli.main(argv) == 0
  cnn_records = records.read_records(out / "cnn_metrics.jsonl")
  # 2 arms x 2 seeds x (2 epochs + the test).
  assert len(cnn_records) == 12
  assert {r["seed"] for r in cnn_records} == {1234, 1235}
  assert {r["arm"] for r in cnn_records} == {"exadam", "adam"}
  assert {r["base_lr"] for r in cnn_records} == {SMOKE.cnn.lr}
  assert {r["epoch"] for r in cnn_records} == {1, 2}
  # 32 training images in batches of 16.
  assert {r["step"] for r in cnn_records if r["kind"] == "eval"} == {2, 4}
  assert not (out / "sweep_cnn_metrics.jsonl").exists()
  info = report.read_run_info(out)
  assert info["preset"] == "smoke" and info["mode"] == "compare"
  assert info["command"].startswith("python -m benchmarks.reproduce --preset")
  entry = info["experiments"]["cnn"]
  assert entry["arms"] == ["exadam", "adam"]
  assert entry["seeds"] == [1234, 1235]
  assert entry["protocol"]["max_train_images"] == 32
  assert entry["outcome"]["rounds_done"] == 2
  assert not entry["outcome"]["stopped_early"]
  text = (out / "tables.md").read_text()
  for heading in ("Table 1", "Table 2", "Convergence speed"):
    assert heading in text
  for name in ("figure1_cnn_train", "figure2_cnn_val"):
    assert is_png(out / "figures" / f"{name}.png")
  (out / "tables.md").unlink()
  assert cli.main(["--report-only", "--out", str(out)]) == 0
  assert (out / "tables.md").read_text() == text
  # The same command again finds every stage finished and trains nothing.
  metrics = (out / "cnn_metrics.jsonl").read_text()
  assert cli.main(argv) == 0
  assert (out / "cnn_metrics.jsonl").read_text() == metrics
  # Another command is refused, in one line.
  capsys.readouterr()
  assert cli.main([*argv, "--seeds", "3"]) == 1
  error = capsys.readouterr().err
  assert error.startswith("error: ") and error.count("\n") == 1
  assert "seeds: 2 -> 3" in error


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, module_data_env):
  """A finished ``--mode sweep`` of EXAdam on MinGPT, one seed per stage.

  In four iterations the larger of the smoke grid's rates (1e-3, 1e-2) is
  the better one, so the choice lies at the grid's upper edge and the grid
  is extended there.
  """
  out = tmp_path_factory.mktemp("sweep") / "out"
  argv = _argv(
    out,
    tmp_path_factory.mktemp("no_data"),
    *("--mode", "sweep", "--experiments", "gpt", "--optimizers", "exadam"),
    *("--sweep-seeds", "1", "--seeds", "1"),
  )
  assert cli.main(argv) == 0
  return out


@pytest.mark.slow
def test_sweeps_from_reuses_an_arm_and_sweeps_the_others(
  sweep_dir, tmp_path, capsys
):
  out = tmp_path / "out"
  options = ("--mode", "sweep", "--experiments", "gpt", "--seeds", "1")
  argv = _argv(
    out,
    tmp_path,
    *options,
    *("--optimizers", "exadam", "adamw", "--first-seed", "3000"),
    *("--sweeps-from", str(sweep_dir)),
  )
  assert cli.main(argv) == 0
  theirs = report.read_run_info(sweep_dir)["experiments"]["gpt"]["sweep"]
  ours = report.read_run_info(out)["experiments"]["gpt"]["sweep"]
  # AdamW swept anew with the reused sweep's seed; EXAdam not swept again.
  swept = records.read_records(out / "sweep_gpt_metrics.jsonl")
  assert {r["arm"] for r in swept} == {"adamw"}
  assert {r["seed"] for r in swept} == set(theirs["seeds"])
  assert ours["seeds"] == theirs["seeds"]
  assert ours["reused_arms"] == ["exadam"]
  assert ours["selected"]["exadam"] == theirs["selected"]["exadam"]
  assert ours["selected"]["adamw"] is not None
  final = records.read_records(out / "gpt_metrics.jsonl")
  assert {(r["arm"], r["seed"]) for r in final} == {
    ("exadam", 3000),
    ("adamw", 3000),
  }
  assert {r["base_lr"] for r in final if r["arm"] == "exadam"} == {
    theirs["selected"]["exadam"]
  }
  # Final seeds that repeat a sweep seed, and a sweep of another protocol,
  # are refused in one line.
  for extra, message in [
    (
      ("--optimizers", "exadam", "--first-seed", str(theirs["seeds"][0])),
      "are also sweep seeds",
    ),
    (("--optimizers", "exadam", "--schedule", "cosine"), "another protocol"),
  ]:
    capsys.readouterr()
    again = _argv(
      tmp_path / f"refused-{len(extra)}-{extra[-1]}",
      tmp_path,
      *options,
      *extra,
      *("--sweeps-from", str(sweep_dir)),
    )
    assert cli.main(again) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1
    assert message in error


def test_sweep_mode_extends_a_grid_whose_choice_is_at_an_edge(sweep_dir):
  grid = SMOKE.grid("gpt", "exadam")
  sweep_records = records.read_records(sweep_dir / "sweep_gpt_metrics.jsonl")
  assert {r["seed"] for r in sweep_records} == {
    1234 + orchestration.SWEEP_SEED_OFFSET
  }
  assert {r["arm"] for r in sweep_records} == {"exadam"}
  first_stage = [r for r in sweep_records if r["base_lr"] in grid]
  (first_choice,) = sweep.choose(first_stage, "gpt")
  assert first_choice.at_edge is not None, "the test needs an edge case"
  entry = report.read_run_info(sweep_dir)["experiments"]["gpt"]
  extensions = entry["sweep"]["extensions"]
  assert extensions[0] == {
    "exadam": list(extend_grid(grid, first_choice.at_edge))
  }
  assert 1 <= len(extensions) <= orchestration.MAX_EXTENSIONS
  tried = sorted({r["base_lr"] for r in sweep_records})
  assert tried == sorted(
    {*grid, *(rate for stage in extensions for rate in stage["exadam"])}
  )
  assert entry["sweep"]["grid"] == {"exadam": tried}
  assert len(entry["sweep"]["outcomes"]) == len(extensions) + 1
  # 3 evaluations (before training, after 2 and 4 iterations) per rate.
  assert len(sweep_records) == 3 * len(tried)
  (choice,) = sweep.choose(sweep_records, "gpt")
  assert entry["sweep"]["selected"] == {"exadam": choice.best_lr}
  if len(extensions) < orchestration.MAX_EXTENSIONS:
    assert choice.at_edge is None
  final = records.read_records(sweep_dir / "gpt_metrics.jsonl")
  assert len(final) == 3
  assert {(r["arm"], r["base_lr"], r["seed"]) for r in final} == {
    ("exadam", choice.best_lr, 1234)
  }
  assert entry["seeds"] == [1234]
  text = (sweep_dir / "tables.md").read_text()
  for heading in (
    "Learning-rate sweep",
    "Learning-rate transfer",
    "Each optimizer at its own best learning rate",
    "Convergence speed",
  ):
    assert heading in text
  assert f"**{choice.score(choice.best_lr):.3f}**" in text
  for name in ("sensitivity_gpt", "tuned_figure3_gpt"):
    assert is_png(sweep_dir / "figures" / f"{name}.png")


def _fake_stage(calls):
  """A ``Reproduction.run_stage`` that trains nothing: it writes one made-up
  evaluation per run and evaluation point and returns a full outcome."""

  def run_stage(
    self, context, stage, runs_by_arm, path, time_budget, length=None
  ):
    del self, stage, length
    calls.append([run for group in runs_by_arm for run in group])
    writer = records.RecordWriter(path)
    for group in runs_by_arm:
      for index, run in enumerate(group):
        for step in (0, 2, 4):
          writer.write(
            [
              {
                **run.identity(),
                "experiment": context.experiment,
                "kind": "eval",
                "step": step,
                "train_loss": 4.0 - 0.5 * step,
                "val_loss": 4.0 - 0.4 * step + 0.01 * index,
                "lr": run.learning_rate,
              }
            ]
          )
    return schedule.Outcome(2, 2, False, (1.0, 1.0), 2.0).as_dict()

  return run_stage


def test_ablation_mode_runs_every_arm_at_the_sweeps_exadam_rate(
  sweep_dir, tmp_path, monkeypatch, module_data_env
):
  selected = orchestration.tuned_rate(sweep_dir, "gpt", "exadam")
  calls = []
  monkeypatch.setattr(
    orchestration.Reproduction, "run_stage", _fake_stage(calls)
  )
  out = tmp_path / "ablation"
  argv = _argv(
    out,
    tmp_path,
    *("--mode", "ablation", "--experiments", "gpt", "--seeds", "2"),
    *("--tuned-from", str(sweep_dir)),
  )
  assert cli.main(argv) == 0
  (final_runs,) = calls
  assert [run.arm for run in final_runs[::2]] == list(ABLATION_ARMS)
  assert {run.learning_rate for run in final_runs} == {selected}
  assert {run.seed for run in final_runs} == {1234, 1235}
  entry = report.read_run_info(out)["experiments"]["gpt"]
  assert entry["learning_rate"] == selected
  assert entry["arms"] == [arm.label for arm in ABLATION_ARMS]
  text = (out / "tables.md").read_text()
  assert f"EXAdam's components at its tuned rate ({selected:g})" in text
  assert "EXAdam, all three off (= Adam)" in text
  assert is_png(out / "figures" / "ablation_figure3_gpt.png")
  # --lr instead of --tuned-from.
  calls.clear()
  other = tmp_path / "ablation_lr"
  assert (
    cli.main(
      _argv(
        other,
        tmp_path,
        *("--mode", "ablation", "--experiments", "gpt", "--seeds", "1"),
        *("--lr", "2e-3"),
      )
    )
    == 0
  )
  (final_runs,) = calls
  assert len(final_runs) == len(ABLATION_ARMS)
  assert {run.learning_rate for run in final_runs} == {2e-3}
  assert (
    report.read_run_info(other)["experiments"]["gpt"]["learning_rate"] == 2e-3
  )


def test_report_only_on_a_folder_without_results_fails_in_one_line(
  tmp_path, capsys
):
  assert cli.main(["--report-only", "--out", str(tmp_path / "none")]) == 1
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1
  assert "is not a reproduction folder" in err
