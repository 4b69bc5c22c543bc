"""Multi-process training: several local processes joined over 127.0.0.1.

Each process has two CPU devices; a run of two processes (four devices) is
compared with one process using four devices and the same global batch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from examples.cifar10 import configs as cnn_configs
from examples.cifar10 import train as cnn_train
from examples.common import training_run
from examples.mingpt import configs as gpt_configs
from examples.mingpt import train as gpt_train
from examples.mingpt.model import GPTConfig

# Each test starts subprocesses. One worker runs them all, so that the
# module's shared runs are made once and before the test that needs their
# programs in the compilation cache.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("multihost")]

ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMING_KEYS = ("first_step_seconds", "tokens_per_second", "images_per_second")
GPT_MODEL = GPTConfig(block_size=16, n_embd=16, n_head=2, n_layer=1)
GPT_ARGS = [
  "--preset=tiny",
  "--block-size=16",
  "--n-embd=16",
  "--n-head=2",
  "--n-layer=1",
  "--batch-size=8",
  "--eval-interval=2",
  "--eval-iters=2",
  "--checkpoint-every=2",
  "--sample-tokens=8",
  "--no-progress",
]


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _environment() -> dict[str, str]:
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  env["PYTHONPATH"] = str(ROOT)
  env["PYTHONUNBUFFERED"] = "1"
  return env


def _launch(
  command: list[str], num_processes: int, log_dir: pathlib.Path
) -> list[subprocess.Popen]:
  """Starts ``command`` once per process, joined over a free local port."""
  port = _free_port()
  log_dir.mkdir(parents=True, exist_ok=True)
  processes = []
  for index in range(num_processes):
    # The child writes through its own copy of the descriptor.
    with open(log_dir / f"process{index}.log", "w") as log:
      processes.append(
        subprocess.Popen(
          [
            *command,
            "--distributed",
            f"--coordinator-address=127.0.0.1:{port}",
            f"--num-processes={num_processes}",
            f"--process-id={index}",
          ],
          cwd=ROOT,
          env=_environment(),
          stdout=log,
          stderr=subprocess.STDOUT,
        )
      )
  return processes


def _wait(processes, timeout: float = 240.0) -> list[int]:
  deadline = time.monotonic() + timeout
  codes = []
  for process in processes:
    try:
      codes.append(process.wait(max(1.0, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
      for other in processes:
        other.kill()
      raise
  return codes


def _run_driver(tmp_path, name, trainer, args, num_processes=2) -> list[dict]:
  """Trains with :mod:`tests.examples.multihost_driver`; the summaries."""
  summary = tmp_path / f"{name}.json"
  command = [
    sys.executable,
    "-m",
    "tests.examples.multihost_driver",
    str(summary),
    trainer,
    *args,
  ]
  codes = _wait(_launch(command, num_processes, tmp_path / f"{name}_logs"))
  logs = {p.name: p.read_text() for p in (tmp_path / f"{name}_logs").iterdir()}
  assert codes == [0] * num_processes, logs
  return [
    json.loads(summary.with_suffix(f".{index}.json").read_text())
    for index in range(num_processes)
  ]


def _records(out_dir: pathlib.Path) -> list[dict]:
  lines = (out_dir / "metrics.jsonl").read_text().splitlines()
  return [
    {k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
    for line in lines
  ]


def _assert_losses_close(got, expected, names, rtol=1e-5):
  assert [r.get("step") for r in got] == [r.get("step") for r in expected]
  for record, reference in zip(got, expected, strict=True):
    for name in names:
      if name in reference:
        np.testing.assert_allclose(record[name], reference[name], rtol=rtol)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> pathlib.Path:
  path = tmp_path_factory.mktemp("text") / "text.txt"
  rng = np.random.default_rng(0)
  words = "to be or not to be that is the question whether tis nobler".split()
  path.write_text(" ".join(rng.choice(words, 3000)) + "\n", encoding="utf-8")
  return path


@pytest.fixture(scope="module")
def gpt_two_processes(tmp_path_factory, text_file):
  """An uninterrupted two-process MinGPT run of six iterations."""
  tmp_path = tmp_path_factory.mktemp("gpt2")
  out_dir = tmp_path / "run"
  args = [*GPT_ARGS, f"--text={text_file}", f"--out-dir={out_dir}", "--iters=6"]
  return out_dir, _run_driver(tmp_path, "dp", "mingpt", args)


def test_mingpt_two_processes_match_one_process_and_write_once(
  gpt_two_processes, text_file, tmp_path
):
  out_dir, summaries = gpt_two_processes
  assert [s["process"] for s in summaries] == [0, 1]
  assert {s["device_count"] for s in summaries} == {4}
  assert all(s["moments_follow_params"] for s in summaries)
  one = gpt_train.train(
    dataclasses.replace(
      gpt_configs.PRESETS["tiny"],
      model=GPT_MODEL,
      text=str(text_file),
      out_dir=str(tmp_path / "one"),
      iters=6,
      batch_size=8,
      eval_interval=2,
      eval_iters=2,
      checkpoint_every=2,
      sample_tokens=8,
      num_devices=4,
      progress=False,
    )
  )
  records = _records(out_dir)
  _assert_losses_close(
    records, _records(tmp_path / "one"), ("train_loss", "val_loss")
  )
  # Written once, by process 0: four records, one config, one sample.
  assert [r["step"] for r in records] == [0, 2, 4, 6]
  assert json.loads((out_dir / "config.json").read_text())["process_id"] == 0
  assert (out_dir / "sample.txt").read_text() == one.sample
  log = (out_dir.parent / "dp_logs" / "process1.log").read_text()
  assert "train_loss" not in log and "--- sample" not in log


def _as_if_stopped_at(out_dir: pathlib.Path, step: int) -> None:
  """Turns a finished run's folder into that of a job stopped after ``step``.

  The checkpoints after ``step``, the records after it and the sample go, so
  the folder holds what a job that saved at ``step`` and stopped had written.
  """
  for checkpoint in (out_dir / training_run.CHECKPOINT_DIR).iterdir():
    if checkpoint.name.isdigit() and int(checkpoint.name) > step:
      shutil.rmtree(checkpoint)
  metrics = out_dir / "metrics.jsonl"

  def written_by_then(line: str) -> bool:
    record = json.loads(line)
    return record.get("step", 0) <= step and not record.get("final")

  lines = metrics.read_text().splitlines(keepends=True)
  metrics.write_text("".join(filter(written_by_then, lines)))
  (out_dir / "sample.txt").unlink(missing_ok=True)


def test_mingpt_two_processes_resume_exactly(
  gpt_two_processes, text_file, tmp_path
):
  # The uninterrupted run's folder, cut back to its checkpoint at step 4,
  # resumed by two new processes.
  full_dir, full = gpt_two_processes
  out_dir = tmp_path / "run"
  shutil.copytree(full_dir, out_dir)
  _as_if_stopped_at(out_dir, 4)
  assert [r["step"] for r in _records(out_dir)] == [0, 2, 4]
  args = [*GPT_ARGS, f"--text={text_file}", f"--out-dir={out_dir}"]
  resumed = _run_driver(
    tmp_path, "second", "mingpt", [*args, "--iters=6", "--resume"]
  )
  log = (tmp_path / "second_logs" / "process0.log").read_text()
  assert "Resumed from the checkpoint at step 4" in log
  assert _records(out_dir) == _records(full_dir)
  assert [s["state_digest"] for s in resumed] == [
    s["state_digest"] for s in full
  ]


def test_fsdp_on_two_processes_matches_data_parallelism(
  gpt_two_processes, text_file, tmp_path
):
  dp_dir, dp_summaries = gpt_two_processes
  args = [
    *GPT_ARGS,
    f"--text={text_file}",
    f"--out-dir={tmp_path / 'run'}",
    "--iters=6",
    "--fsdp",
  ]
  summaries = _run_driver(tmp_path, "fsdp", "mingpt", args)
  assert all(s["params_sharded"] for s in summaries)
  assert all(s["moments_follow_params"] for s in summaries)
  assert (
    summaries[0]["state_bytes_per_device"]
    < dp_summaries[0]["state_bytes_per_device"] / 2
  )
  _assert_losses_close(
    _records(tmp_path / "run"), _records(dp_dir), ("train_loss", "val_loss")
  )


CNN_ARGS = [
  "--preset=tiny",
  "--augment",  # each process must draw its rows' augmentation
  "--batch-size=8",
  "--val-size=8",
  "--lr=1e-4",
  "--no-progress",
]


@pytest.fixture(scope="module")
def cnn_two_processes(tmp_path_factory, cifar_dir):
  """A two-process CIFAR-10 run of two epochs (four steps each)."""
  tmp_path = tmp_path_factory.mktemp("cnn2")
  out_dir = tmp_path / "run"
  args = [*CNN_ARGS, f"--data-dir={cifar_dir}", "--epochs=2"]
  summaries = _run_driver(
    tmp_path, "dp", "cifar10", [*args, f"--out-dir={out_dir}"]
  )
  return out_dir, summaries


def test_cifar10_two_processes_match_one_process(
  cnn_two_processes, cifar_dir, tmp_path
):
  # Batch norm's statistics and the gradients are summed in another order
  # across processes, and EXAdam's sign-like first steps amplify that
  # rounding: the training losses agree to 1e-5, the evaluations to 1e-4.
  out_dir, summaries = cnn_two_processes
  assert all(s["moments_follow_params"] for s in summaries)
  cnn_train.train(
    dataclasses.replace(
      cnn_configs.PRESETS["tiny"],
      data_dir=str(cifar_dir),
      batch_size=8,
      augment=True,
      val_size=8,
      epochs=2,
      lr=1e-4,
      num_devices=4,
      out_dir=str(tmp_path / "one"),
      progress=False,
    )
  )
  got, expected = _records(out_dir), _records(tmp_path / "one")
  _assert_losses_close(got, expected, ("train_loss",))
  _assert_losses_close(got, expected, ("val_loss", "test_loss"), rtol=1e-4)


def test_cifar10_two_processes_resume_exactly(
  cnn_two_processes, cifar_dir, tmp_path
):
  # The uninterrupted run's folder, cut back to its first epoch's checkpoint
  # and moved (a run folder may move between its sessions), resumed by two
  # new processes.
  full_dir, full = cnn_two_processes
  out_dir = tmp_path / "run"
  shutil.copytree(full_dir, out_dir)
  _as_if_stopped_at(out_dir, 4)
  assert [r["step"] for r in _records(out_dir)] == [4]
  args = [*CNN_ARGS, f"--data-dir={cifar_dir}", "--epochs=2"]
  resumed = _run_driver(
    tmp_path, "second", "cifar10", [*args, f"--out-dir={out_dir}", "--resume"]
  )
  log = (tmp_path / "second_logs" / "process0.log").read_text()
  assert "Resumed from the checkpoint at step 4" in log
  assert _records(out_dir) == _records(full_dir)
  assert [s["state_digest"] for s in resumed] == [
    s["state_digest"] for s in full
  ]


def _logs(log_dir: pathlib.Path) -> str:
  """Every process's log, for an assertion's message."""
  return "\n".join(
    f"--- {path.name}\n{path.read_text()[-3000:]}"
    for path in sorted(log_dir.iterdir())
  )


# A collective waits at most the heartbeat timeout for the other process, so
# the timeout must exceed how far the two processes can drift apart before
# the kill (one compiles or writes a checkpoint while the other already waits):
# more than 8 s on a 2-core machine that runs the rest of the suite beside it,
# and more than 20 s while one of them compiles, so the timed job starts with
# its programs in the compilation cache.
LOST_PROCESS_TIMEOUT = 20


def test_a_lost_process_stops_the_other_and_the_job_resumes(
  gpt_two_processes, text_file, tmp_path
):
  # gpt_two_processes ran the same model, optimizer and batches: its programs
  # are in the compilation cache that this job reads.
  del gpt_two_processes
  out_dir = tmp_path / "run"
  command = [
    sys.executable,
    "-m",
    "examples.mingpt.train",
    *GPT_ARGS,
    f"--text={text_file}",
    f"--out-dir={out_dir}",
    "--iters=100000",
    "--eval-interval=1000",
    f"--heartbeat-timeout={LOST_PROCESS_TIMEOUT}",
  ]
  log_dir = tmp_path / "logs"
  processes = _launch(command, 2, log_dir)
  try:
    checkpoints = out_dir / training_run.CHECKPOINT_DIR
    deadline = time.monotonic() + 180
    while not (
      checkpoints.is_dir() and any(p.name == "4" for p in checkpoints.iterdir())
    ):
      assert time.monotonic() < deadline, _logs(log_dir)
      assert all(p.poll() is None for p in processes), _logs(log_dir)
      time.sleep(0.5)
    processes[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    assert processes[0].wait(60) == 1, _logs(log_dir)
    # The bound, plus the watchdog's period and reaction time.
    assert time.monotonic() - killed < LOST_PROCESS_TIMEOUT * 1.2 + 10
  finally:
    for process in processes:  # --iters=100000 must not outlive the test
      process.kill()
      process.wait()
  lines = (log_dir / "process0.log").read_text().strip().splitlines()
  assert lines[-1].startswith("error: process 0: ")
  assert "process 1" in lines[-1] and "--resume" in lines[-1]

  resumed = [
    arg if not arg.startswith("--iters") else "--iters=10" for arg in command
  ]
  resumed_log_dir = tmp_path / "resumed_logs"
  codes = _wait(_launch([*resumed, "--resume"], 2, resumed_log_dir))
  assert codes == [0, 0], _logs(resumed_log_dir)
  log = (resumed_log_dir / "process0.log").read_text()
  assert "Resumed from the checkpoint at step" in log
  assert _records(out_dir)[-1]["step"] == 10
