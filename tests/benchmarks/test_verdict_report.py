"""benchmarks.reproduce.verdict_report: the page and README block."""

import dataclasses
import json

import numpy as np

from benchmarks.reproduce import records, report, verdict, verdict_report
from benchmarks.reproduce.presets import PRESETS

ARMS = verdict_report.ARMS
RATES = {"adam": 2e-3, "adamw": 4.64e-3, "exadam": 4.64e-4}
RATES[verdict.CONSTANT_STEP] = 1e-3


def _seed_folder(results, seed, finals, finished=True):
  """A finished (or not) MinGPT seed folder with one loss curve per arm."""
  folder = results / "verdict-gpt" / f"seed-{seed}"
  folder.mkdir(parents=True)
  protocol = PRESETS["cpu-long"].with_schedule("cosine", 0.05, 0.1)
  info = {
    "stages": {"gpt-final": {}} if finished else {},
    "environment": {"commit": "0123456789abcdef"},
    "experiments": {
      "gpt": {
        "protocol": json.loads(
          json.dumps(dataclasses.asdict(protocol.protocol("gpt")))
        ),
        "sweep": {
          "selected": RATES,
          "seeds": [2234, 2235],
          "reused_from": [],
        },
      }
    },
  }
  report.write_run_info(folder, info)
  if seed == 3000:  # the first seed's folder holds the sweeps
    sweeps = records.RecordWriter(records.metrics_path(folder, "gpt", "sweep"))
    sweeps.write(
      {
        "arm": arm,
        "base_lr": rate,
        "seed": sweep_seed,
        "kind": "eval",
        "step": 5000,
        # Each arm's best rate is RATES[arm] on sweep seed 2234 and twice
        # it on 2235.
        "val_loss": 1.8 + abs(rate / RATES[arm] - (1 + (sweep_seed == 2235))),
      }
      for arm in ARMS
      for rate in (RATES[arm], 2 * RATES[arm], 4 * RATES[arm])
      for sweep_seed in (2234, 2235)
    )
  writer = records.RecordWriter(records.metrics_path(folder, "gpt"))
  writer.write(
    {
      "arm": arm,
      "base_lr": RATES[arm],
      "seed": seed,
      "kind": "eval",
      "step": step,
      "val_loss": value,
    }
    for arm in ARMS
    for step, value in (
      (0, 4.2),
      (2500, finals[arm] + 0.2),
      (5000, finals[arm]),
    )
  )


def test_page_and_block_from_seed_folders(tmp_path):
  rng = np.random.default_rng(0)
  for index, seed in enumerate(range(3000, 3006)):
    base = 1.8 + rng.normal(0.0, 0.01)
    finals = {
      "adam": base,
      "adamw": base + rng.normal(0.0, 0.002),
      "exadam": base - 0.05 + rng.normal(0.0, 0.002),
      verdict.CONSTANT_STEP: base + rng.normal(0.0, 0.03),
    }
    # The last folder has not finished: it is left out.
    _seed_folder(tmp_path, seed, finals, finished=index < 5)
  experiment = verdict_report.load("gpt", tmp_path)
  assert experiment.seeds == [3000, 3001, 3002, 3003, 3004]
  assert experiment.rates == RATES
  words = {(c.arm, c.other): c.word for c in experiment.comparisons}
  assert words[("exadam", "adam")] == "better"
  assert words[("adamw", "adam")] == "equivalent"
  assert verdict_report.load("cnn", tmp_path) is None
  page = verdict_report.page({"gpt": experiment, "cnn": None})
  assert "5 of the 10 planned; the runs continue" in page
  assert "code at commit 0123456." in page
  assert "MinGPT with 112,193 parameters on tiny Shakespeare" in page
  exadam_adam = experiment.comparisons[0]
  assert abs(exadam_adam.mean + 0.05) < 0.005
  assert f"| EXAdam vs Adam | {exadam_adam.mean:+.3g} (" in page
  assert "No final seed has finished yet." in page
  rule = verdict_report.rate_rule_table(experiment).splitlines()
  assert rule[2] == (
    "| sweep seed 2234 | 0.002 | 0.00464 | 0.000464 | 0.001 | 0.23 | 0.5 |"
  )
  assert rule[3] == (
    "| sweep seed 2235 | 0.004 | 0.00928 | 0.000928 | 0.002 | 0.23 | 0.5 |"
  )
  block = verdict_report.readme_block({"gpt": experiment, "cnn": None})
  assert block.startswith(verdict_report.START)
  assert block.endswith(verdict_report.END)
  assert "**better**" in block and "Bootstrap" not in block
  text = f"intro\n{verdict_report.START}\nold\n{verdict_report.END}\nrest\n"
  assert verdict_report.with_block(text, block) == f"intro\n{block}\nrest\n"
  figure = verdict_report.figure(experiment, tmp_path / "f.png")
  assert figure.read_bytes().startswith(b"\x89PNG")


def test_committed_page_and_readme_are_what_the_records_give(capsys):
  assert verdict_report.main(["--check"]) == 0, capsys.readouterr().err
