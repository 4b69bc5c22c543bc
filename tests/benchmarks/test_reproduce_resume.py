"""A stopped ``python -m benchmarks.reproduce`` continues where it stopped.

Each test runs a smoke-preset reproduction once without interruption and
once stopped at some point (an exception raised where a kill or a signal
would strike, a damaged checkpoint, a torn metrics line), then starts the
stopped one again with the same command. The continued folder must hold the
same records as the uninterrupted one: the same runs, evaluations and
values, bit for bit.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from benchmarks.reproduce import cli, orchestration, records, report, resume

# Each test starts subprocesses or trains for several seconds.
pytestmark = pytest.mark.slow

GPT_SWEEP = (
  *("--mode", "sweep", "--experiments", "gpt"),
  *("--optimizers", "exadam", "adam", "--sweep-seeds", "1", "--seeds", "2"),
)
CNN_COMPARE = (
  *("--mode", "compare", "--experiments", "cnn", "--seeds", "2"),
  *("--optimizers", "exadam", "adam"),
)
REPOSITORY = pathlib.Path(__file__).resolve().parents[2]


class Killed(Exception):
  """Stands for a kill: raised where the process would die."""


def _argv(out, data_dir, options):
  return [
    *("--preset", "smoke", *options),
    *("--data-dir", str(data_dir), "--out", str(out)),
  ]


def _records(out: pathlib.Path) -> list[dict]:
  found = []
  for path in sorted(out.glob("*_metrics.jsonl")):
    found += [{**r, "file": path.name} for r in records.read_records(path)]
  return sorted(found, key=lambda r: json.dumps(r, sort_keys=True))


def _kill_at_save(monkeypatch, number: int, *, before: bool):
  """Makes the ``number``-th checkpoint save raise :class:`Killed`, before
  writing it (its chunk's records are then on disk without a checkpoint)
  or after."""
  real_save = resume.GroupCheckpoints.save
  count = [0]

  def save(self, group, stage_seconds):
    count[0] += 1
    if count[0] == number and before:
      raise Killed
    real_save(self, group, stage_seconds)
    if count[0] == number:
      raise Killed

  monkeypatch.setattr(resume.GroupCheckpoints, "save", save)


class _Uninterrupted:
  """Each reproduction's uninterrupted folder, run when a test first asks.

  With ``-n``, every worker that takes a test of this module runs the
  module's fixtures again: one that only takes CNN tests then pays for the
  CNN reproduction alone.
  """

  def __init__(self, tmp_path_factory, data_dir):
    self._tmp_path_factory = tmp_path_factory
    self._data_dir = data_dir
    self._folders: dict[str, pathlib.Path] = {}

  def __getitem__(self, name: str) -> pathlib.Path:
    if name not in self._folders:
      out = self._tmp_path_factory.mktemp(f"uninterrupted_{name}")
      options = {"gpt": GPT_SWEEP, "cnn": CNN_COMPARE}[name]
      assert cli.main(_argv(out, self._data_dir, options)) == 0
      self._folders[name] = out
    return self._folders[name]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, smoke_cifar_dir, module_data_env):
  """Both reproductions run from start to end, by their options."""
  return _Uninterrupted(tmp_path_factory, smoke_cifar_dir)


def _continued(out, data_dir, options, number, before) -> dict:
  """Stops a reproduction at the ``number``-th checkpoint save, then runs
  the same command again, noting the stages that continuation trained."""
  argv = _argv(out, data_dir, options)
  with pytest.MonkeyPatch.context() as patch:
    _kill_at_save(patch, number, before=before)
    with pytest.raises(Killed):
      cli.main(argv)
  stopped = {
    "checkpoints_kept": (out / resume.CHECKPOINT_DIR).is_dir(),
    "stages_done": set(report.read_run_info(out)["stages"]),
  }
  trained = []
  real_run_stage = orchestration.Reproduction.run_stage

  def run_stage(self, context, stage, *rest, **options):
    if stage not in self.info["stages"]:
      trained.append(stage)
    return real_run_stage(self, context, stage, *rest, **options)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(orchestration.Reproduction, "run_stage", run_stage)
    code = cli.main(argv)
  return {**stopped, "code": code, "trained": trained}


@pytest.fixture(scope="module")
def gpt_stopped_in_a_later_stage(
  tmp_path_factory, smoke_cifar_dir, module_data_env
):
  """The GPT sweep stopped after the 7th save (in sweep stage 1) and
  continued: a case of the parametrized test below, whose continuation
  :func:`test_finished_stages_are_not_run_again` also checks, so that the
  reproduction runs once for both."""
  out = tmp_path_factory.mktemp("gpt_stopped_in_a_later_stage") / "out"
  return out, _continued(out, smoke_cifar_dir, GPT_SWEEP, 7, False)


@pytest.mark.parametrize(
  ("name", "options", "number", "before"),
  [
    ("gpt", GPT_SWEEP, 1, False),  # after the first checkpoint
    ("gpt", GPT_SWEEP, 4, True),  # a chunk's records without its checkpoint
    ("gpt", GPT_SWEEP, 7, False),  # in a later sweep stage
    ("cnn", CNN_COMPARE, 3, True),  # mid-stage, plateau schedulers restored
  ],
)
def test_a_killed_reproduction_continues_to_the_same_records(
  name,
  options,
  number,
  before,
  uninterrupted,
  tmp_path,
  smoke_cifar_dir,
  module_data_env,
  request,
):
  if (name, number, before) == ("gpt", 7, False):
    out, continued = request.getfixturevalue("gpt_stopped_in_a_later_stage")
  else:
    out = tmp_path / "out"
    continued = _continued(out, smoke_cifar_dir, options, number, before)
  assert continued["checkpoints_kept"]
  assert continued["code"] == 0
  assert _records(out) == _records(uninterrupted[name])
  info = report.read_run_info(out)
  assert set(info["stages"]) == set(
    report.read_run_info(uninterrupted[name])["stages"]
  )
  assert len(info["resumed"]) == 1
  # Finished stages leave no checkpoints behind.
  assert not list((out / resume.CHECKPOINT_DIR).iterdir())


def test_finished_stages_are_not_run_again(gpt_stopped_in_a_later_stage):
  _, continued = gpt_stopped_in_a_later_stage
  assert "gpt-sweep-0" in continued["stages_done"]
  assert continued["code"] == 0
  assert not continued["stages_done"] & set(continued["trained"])
  assert "gpt-final" in continued["trained"]


def test_a_torn_last_record_and_a_damaged_checkpoint_are_recovered(
  uninterrupted, tmp_path, smoke_cifar_dir, module_data_env, monkeypatch, capsys
):
  out = tmp_path / "out"
  argv = _argv(out, smoke_cifar_dir, CNN_COMPARE)
  with monkeypatch.context() as patch:
    _kill_at_save(patch, 4, before=False)
    with pytest.raises(Killed):
      cli.main(argv)
  # A write cut short by the kill, and the newest checkpoint of one arm cut
  # short as a full disk leaves it.
  with open(out / "cnn_metrics.jsonl", "a", encoding="utf-8") as file:
    file.write('{"arm": "exadam", "kind": "ev')
  arm_dir = resume.stage_dir(out, "cnn-final") / "adam"
  newest = max(int(p.name) for p in arm_dir.iterdir() if p.name.isdigit())
  for path in (arm_dir / str(newest)).rglob("*"):
    if path.is_file() and path.stat().st_size > 0:
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  capsys.readouterr()
  assert cli.main(argv) == 0
  assert _records(out) == _records(uninterrupted["cnn"])
  printed = capsys.readouterr().out
  assert f"Checkpoint {newest} in {arm_dir} did not restore" in printed
  (damaged,) = (out / resume.DAMAGED_DIR / "cnn-final" / "adam").iterdir()
  assert damaged.name.startswith(f"{newest}-") and str(damaged) in printed


def test_another_command_does_not_continue_a_folder(
  tmp_path, smoke_cifar_dir, module_data_env, monkeypatch, capsys
):
  out = tmp_path / "out"
  argv = _argv(out, smoke_cifar_dir, CNN_COMPARE)
  with monkeypatch.context() as patch:
    _kill_at_save(patch, 1, before=False)
    with pytest.raises(Killed):
      cli.main(argv)
  capsys.readouterr()
  assert cli.main([*argv, "--first-seed", "7"]) == 1
  error = capsys.readouterr().err
  assert error.startswith("error: ") and error.count("\n") == 1
  assert "first_seed: 1234 -> 7" in error and "run its command again" in error


def test_sigterm_stops_in_one_line_and_the_same_command_continues(
  uninterrupted, tmp_path, smoke_cifar_dir, module_data_env, capsys
):
  out = tmp_path / "out"
  argv = _argv(out, smoke_cifar_dir, GPT_SWEEP)
  command = [sys.executable, *("-m", "benchmarks.reproduce"), *argv]
  environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
  process = subprocess.Popen(
    command,
    cwd=REPOSITORY,
    env=environment,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  # The signal comes as soon as the reproduction has begun, before it has
  # trained a chunk.
  deadline = time.monotonic() + 240
  while not (out / report.RUN_INFO_FILE).exists():
    assert process.poll() is None, process.communicate()
    assert time.monotonic() < deadline, "no run_info.json within 240 s"
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 128 + signal.SIGTERM
  assert stderr.strip().splitlines() == [
    f"SIGTERM: stopped; every finished chunk is saved in {out}; run the same "
    "command again to continue."
  ]
  # The stop needs a process of its own to receive the signal; the
  # continuation only reads the folder, so the same command line runs in this
  # process, on the programs the uninterrupted run compiled, instead of a
  # second process importing JAX and tracing every program again.
  capsys.readouterr()
  assert cli.main(argv) == 0
  assert "continuing the reproduction" in capsys.readouterr().out
  assert _records(out) == _records(uninterrupted["gpt"])


@pytest.mark.parametrize("signals", [1, 2])
def test_a_stop_signal_saves_the_chunk_in_progress_a_second_stops_at_once(
  signals,
  uninterrupted,
  tmp_path,
  smoke_cifar_dir,
  module_data_env,
  monkeypatch,
  capsys,
):
  out = tmp_path / "out"
  argv = _argv(out, smoke_cifar_dir, GPT_SWEEP)
  real_save = resume.GroupCheckpoints.save
  saved = []

  def save(self, group, stage_seconds):
    # The signals arrive as the first chunk ends, before its checkpoint.
    if not saved:
      for _ in range(signals):
        signal.raise_signal(signal.SIGTERM)
    real_save(self, group, stage_seconds)
    saved.append(group.chunks_done)

  with monkeypatch.context() as patch:
    patch.setattr(resume.GroupCheckpoints, "save", save)
    assert cli.main(argv) == 128 + signal.SIGTERM
  printed = capsys.readouterr()
  assert "SIGTERM received: saving the chunk in progress" in printed.out
  assert printed.err.splitlines() == [
    f"SIGTERM: stopped; every finished chunk is saved in {out}; run the same "
    "command again to continue."
  ]
  # One signal: the chunk is saved and nothing runs after it. A second one
  # stops at once, before the save.
  assert saved == ([1] if signals == 1 else [])
  assert cli.main(argv) == 0
  assert _records(out) == _records(uninterrupted["gpt"])
