"""What both trainers share around their loop: :class:`TrainingRun`.

A run lives in one folder, which holds

* ``config.json``: the run's settings (the resolved run folder included);
* ``metrics.jsonl``: one JSON record per evaluation, oldest first;
* ``checkpoints/<step>/``: the latest few Orbax checkpoints, each holding the
  training state (parameters, model and optimizer state, step, key) and a
  JSON dict of host-side progress (data position, scheduler state, number of
  metrics records).

A :class:`TrainingRun` prepares the folder (a new run refuses a folder that
holds a run; ``resume`` checks that the settings which shape the computation
are unchanged), restores the latest checkpoint, fetches the per-step metrics
from the device in batches (so that the host never waits for a step it does
not need), stops the run at the first NaN or infinite loss
(:class:`NonFiniteLossError`), measures throughput, draws the progress bar
and writes records and checkpoints. On SIGTERM (what schedulers send before
preemption) or Ctrl-C it lets the loop save a checkpoint at the current step
and then raises :class:`RunStopped`; resuming continues exactly where it
stopped.

Orbax writes each checkpoint into a temporary folder and renames it into
place when complete, and ``metrics.jsonl`` and ``config.json`` are replaced
atomically, so a crash at any moment leaves a consistent run behind. In a
multi-process run only process 0 writes ``config.json``, ``metrics.jsonl`` and
the progress output; every process writes its part of the checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import signal
import threading
import time
from collections.abc import Collection
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import tqdm
from jax.experimental import multihost_utils

from examples.common import train_state as train_state_lib

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
_STATE_ITEM = "state"
_PROGRESS_ITEM = "progress"
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class NonFiniteLossError(FloatingPointError):
  """Raised when training produces a NaN or infinite loss or parameter.

  Attributes:
    step: The 1-based number of the step at fault.
  """

  def __init__(self, step: int, what: str):
    self.step = step
    super().__init__(
      f"{what} at step {step}: the run diverged. The last checkpoint, written "
      "before this step, is kept. Lower the learning rate (--lr) and start "
      "again, or resume from that checkpoint with other settings in a new run."
    )


class RunStopped(Exception):
  """Raised after a stop signal, once the checkpoint at the current step exists.

  Attributes:
    signal_name: ``"SIGTERM"`` or ``"SIGINT"``.
    step: The step of the checkpoint.
    out_dir: The run folder.
  """

  def __init__(self, signum: int, step: int, out_dir: pathlib.Path):
    self.signal_name = signal.Signals(signum).name
    self.exit_status = 128 + signum
    self.step = step
    self.out_dir = out_dir
    super().__init__(
      f"{self.signal_name}: stopped at step {step} and saved a checkpoint in "
      f"{out_dir}; run the same command with --resume to continue."
    )


def flatten(config: dict[str, Any]) -> dict[str, Any]:
  """Settings as a flat dict, nested ones under dotted keys (``model.n_layer``)."""
  flat = {}
  for name, value in config.items():
    if isinstance(value, dict):
      flat.update({f"{name}.{key}": item for key, item in value.items()})
    else:
      flat[name] = value
  return flat


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
  """The nested dict of a flat one with dotted keys."""
  nested: dict[str, Any] = {}
  for name, value in flat.items():
    head, _, tail = name.partition(".")
    if tail:
      nested.setdefault(head, {})[tail] = value
    else:
      nested[name] = value
  return nested


def _format(key: str, value: Any) -> str:
  if not isinstance(value, float):
    return f"{key} {value}"
  if key.endswith("per_second"):
    return f"{key} {value:,.0f}"
  if key.endswith(("loss", "acc")):
    return f"{key} {value:.4f}"
  return f"{key} {value:.4g}"


def _write_atomically(path: pathlib.Path, text: str) -> None:
  temporary = path.with_name(f".{path.name}.tmp")
  temporary.write_text(text, encoding="utf-8")
  os.replace(temporary, path)


def _read_records(path: pathlib.Path) -> list[dict[str, Any]]:
  if not path.exists():
    return []
  records = []
  with open(path, encoding="utf-8") as file:
    for number, line in enumerate(file, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as error:
        raise ValueError(
          f"{path}, line {number}, is not JSON ({error}); the metrics file is "
          "damaged. Delete that line, or start a new run in another --out-dir."
        ) from error
      if not isinstance(record, dict):
        raise ValueError(f"{path}, line {number}, is not a JSON object.")
      records.append(record)
  return records


class TrainingRun:
  """The folder, checkpoints, metrics log and progress of one training run.

  Use it as a context manager around the training loop::

    with TrainingRun(config, out_dir, ...) as run:
      state, progress = run.restore(state)
      while ...:
        state, metrics = train_step(state, ...)
        run.log_step(metrics)
        if time_to_evaluate:
          run.record({"step": step, "val_loss": ...})
        if time_to_save or run.stop_requested:
          run.save(step, state, {"step": step})

  Args:
    config: The run's settings, a (possibly nested) dataclass with ``resume``
      and ``keep_checkpoints`` fields; written to ``config.json``.
    out_dir: The run folder.
    total_steps: Steps of the whole run, for the progress bar.
    unit: What the throughput counts, e.g. ``"images"`` or ``"tokens"``.
    examples_per_step: Images or tokens per training step.
    resumable: Settings (flattened names, see :func:`flatten`) that may
      differ from the saved ``config.json`` when resuming.
    progress_bar: Whether to draw a progress bar.
    log_every: Steps between fetches of the per-step metrics.

  Raises:
    FileExistsError: If not resuming and ``out_dir`` already holds a run.
    ValueError: If resuming with settings that differ from the saved ones.
  """

  def __init__(
    self,
    config: Any,
    out_dir: pathlib.Path,
    *,
    total_steps: int,
    unit: str,
    examples_per_step: int,
    resumable: Collection[str],
    progress_bar: bool = True,
    log_every: int = 10,
  ):
    self.out_dir = pathlib.Path(out_dir).expanduser().absolute()
    self.is_writer = jax.process_index() == 0
    self._resume = config.resume
    self._unit = unit
    self._examples_per_step = examples_per_step
    self._log_every = log_every
    self._prepare_folder(flatten(dataclasses.asdict(config)), resumable)
    self._metrics_path = self.out_dir / METRICS_FILE
    self._records = _read_records(self._metrics_path)
    self._checkpoints = ocp.CheckpointManager(
      self.out_dir / CHECKPOINT_DIR,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_checkpoints,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
        create=True,
      ),
    )
    self._bar = tqdm.tqdm(
      total=total_steps,
      unit="step",
      disable=not (progress_bar and self.is_writer),
      dynamic_ncols=True,
    )
    self._pending: list[dict[str, jax.Array]] = []
    self._step = 0
    self._sums: dict[str, float] = {}
    self._count = 0
    self._clock = time.perf_counter()
    self._first_step_seconds: float | None = None
    self._first_step_recorded = False
    self._timed = [0, 0.0]  # steps and seconds of clean intervals
    self._signal_received: int | None = None  # on this process
    self._stop_signal: int | None = None  # agreed by all processes
    self._saved_handlers: dict[int, Any] = {}

  def _prepare_folder(
    self, config: dict[str, Any], resumable: Collection[str]
  ) -> None:
    # Through JSON, so that it compares with the saved file (tuples are lists).
    config = json.loads(json.dumps({**config, "out_dir": str(self.out_dir)}))
    config_path = self.out_dir / CONFIG_FILE
    checkpoints = self.out_dir / CHECKPOINT_DIR
    holds_run = (self.out_dir / METRICS_FILE).exists() or (
      checkpoints.is_dir()
      and any(p.name.isdigit() for p in checkpoints.iterdir())
    )
    if holds_run and not self._resume:
      raise FileExistsError(
        f"{self.out_dir} already holds a training run. Pass --resume to "
        "continue it, or choose another --out-dir."
      )
    if self._resume and config_path.exists():
      saved = flatten(json.loads(config_path.read_text(encoding="utf-8")))
      changed = sorted(
        name
        for name in set(saved) | set(config)
        if name not in resumable and saved.get(name) != config.get(name)
      )
      if changed:
        details = ", ".join(
          f"{name}: {saved.get(name)!r} -> {config.get(name)!r}"
          for name in changed
        )
        raise ValueError(
          f"Cannot resume the run in {self.out_dir} with different settings "
          f"({details}). Resume with the original settings (see its "
          "config.json), or start a new run in another --out-dir."
        )
    if self.is_writer:
      self.out_dir.mkdir(parents=True, exist_ok=True)
      _write_atomically(
        config_path,
        json.dumps(unflatten(config), indent=2, sort_keys=True) + "\n",
      )

  # Context management and signals.

  def __enter__(self) -> TrainingRun:
    if threading.current_thread() is threading.main_thread():
      for signum in _STOP_SIGNALS:
        self._saved_handlers[signum] = signal.signal(signum, self._on_signal)
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._saved_handlers.items():
      signal.signal(signum, handler)
    self._bar.close()
    self._checkpoints.close()

  def _on_signal(self, signum: int, frame) -> None:
    del frame
    if self._signal_received is not None:
      # A second signal: stop at once, losing what the checkpoint lacks.
      raise KeyboardInterrupt
    self._signal_received = signum
    if jax.process_count() == 1:
      self._stop_signal = signum
    self.print(
      f"{signal.Signals(signum).name} received: saving a checkpoint at the "
      "current step (send it again to stop at once)."
    )

  @property
  def stop_requested(self) -> bool:
    """Whether a stop signal arrived (on any process, as of the last fetch).

    In a multi-process run every process sees it at the same step: the flag
    is exchanged at the fixed steps where metrics are fetched (every
    ``log_every`` steps).
    """
    return self._stop_signal is not None

  # Records and progress.

  @property
  def records(self) -> list[dict[str, Any]]:
    """Copies of all records of ``metrics.jsonl``, oldest first."""
    return [dict(record) for record in self._records]

  def print(self, message: str) -> None:
    """Prints a line without breaking the progress bar (process 0 only)."""
    if self.is_writer:
      self._bar.write(message)

  def restore(self, state: Any) -> tuple[Any, dict[str, Any]]:
    """Continues from the latest checkpoint when resuming.

    Args:
      state: A freshly initialised state, which gives the restored arrays
        their structure, dtypes and shardings.

    Returns:
      ``(state, progress)``: the checkpoint's, or ``state`` and ``{}`` for a
      run that starts from scratch. Records written after the checkpoint are
      dropped from ``metrics.jsonl`` (they will be computed again).
    """
    step = self._checkpoints.latest_step()
    progress: dict[str, Any] = {}
    if self._resume and step is not None:
      abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
      restored = self._checkpoints.restore(
        step,
        args=ocp.args.Composite(
          **{
            _STATE_ITEM: ocp.args.StandardRestore(abstract),
            _PROGRESS_ITEM: ocp.args.JsonRestore(),
          }
        ),
      )
      state, progress = restored[_STATE_ITEM], dict(restored[_PROGRESS_ITEM])
      self._truncate_records(int(progress["metrics_records"]))
      self._sums = dict(progress["sums"])
      self._count = int(progress["count"])
      self._step = step
      self.print(
        f"Resumed from the checkpoint at step {step} in {self.out_dir}."
      )
    else:
      if self._resume:
        self.print(f"No checkpoint in {self.out_dir}; starting from scratch.")
      self._truncate_records(0)
    self._bar.update(self._step)
    self._clock = time.perf_counter()
    return state, progress

  def _truncate_records(self, count: int) -> None:
    if count > len(self._records):
      raise ValueError(
        f"{self._metrics_path} holds {len(self._records)} records but the "
        f"checkpoint counted {count}: the metrics file was truncated or "
        "replaced. Restore it, or start a new run in another --out-dir."
      )
    if count < len(self._records) or not self._metrics_path.exists():
      del self._records[count:]
      if self.is_writer:
        _write_atomically(
          self._metrics_path,
          "".join(json.dumps(r, sort_keys=True) + "\n" for r in self._records),
        )

  def log_step(self, metrics: dict[str, jax.Array]) -> None:
    """Notes one training step's metrics (device scalars, ``"loss"`` among them).

    The values are fetched every ``log_every`` steps, all at once; the first
    step of the process is waited for, to time it (it includes compilation).

    Raises:
      NonFiniteLossError: At a fetch, for the first NaN or infinite loss.
    """
    self._pending.append(metrics)
    if self._first_step_seconds is None:
      jax.block_until_ready(metrics)
      self._first_step_seconds = time.perf_counter() - self._clock
      self._fetch(timed=False)
    elif len(self._pending) >= self._log_every:
      self._fetch(timed=True)

  def _fetch(self, *, timed: bool) -> None:
    pending, self._pending = self._pending, []
    if pending:
      values = jax.device_get(pending)
      first = self._step + 1
      self._step += len(values)
      for offset, step_values in enumerate(values):
        if not math.isfinite(float(step_values["loss"])):
          raise NonFiniteLossError(
            first + offset, f"Training loss is {float(step_values['loss'])}"
          )
        for name, value in step_values.items():
          self._sums[name] = self._sums.get(name, 0.0) + float(value)
      self._count += len(values)
      now = time.perf_counter()
      if timed:
        self._timed[0] += len(values)
        self._timed[1] += now - self._clock
      self._clock = now
      self._bar.update(len(values))
      self._bar.set_postfix(
        loss=f"{float(values[-1]['loss']):.4f}",
        **{f"{self._unit}/s": f"{self._throughput():,.0f}"},
        refresh=False,
      )
    if jax.process_count() > 1 and self._stop_signal is None:
      flags = multihost_utils.process_allgather(
        np.int32(self._signal_received or 0)
      )
      if flags.any():
        self._stop_signal = int(flags[flags > 0][0])

  def _throughput(self) -> float:
    steps, seconds = self._timed
    return steps * self._examples_per_step / seconds if seconds else math.nan

  def running_means(self) -> dict[str, float]:
    """Means of each step metric since the last call (or the run's start).

    Fetches the pending steps first; the sums survive a resume.
    """
    self._fetch(timed=True)
    means = {name: total / self._count for name, total in self._sums.items()}
    self._sums, self._count = {}, 0
    return means

  def record(self, record: dict[str, Any]) -> None:
    """Appends an evaluation record to ``metrics.jsonl`` and prints it.

    The record gets ``<unit>_per_second``: the training throughput since the
    previous record, compilation and evaluations excluded (steps fetched
    together with an evaluation are left out of it), and, in the first record
    after the process's first step, ``first_step_seconds``.
    """
    self._fetch(timed=False)
    record = dict(record)
    if self._timed[0]:
      record[f"{self._unit}_per_second"] = self._throughput()
    if self._first_step_seconds is not None and not self._first_step_recorded:
      record["first_step_seconds"] = self._first_step_seconds
      self._first_step_recorded = True
    line = json.dumps(record, sort_keys=True)
    self._records.append(json.loads(line))
    if self.is_writer:
      with open(self._metrics_path, "a", encoding="utf-8") as file:
        file.write(line + "\n")
    self.print(", ".join(_format(key, value) for key, value in record.items()))
    self._timed = [0, 0.0]
    self._clock = time.perf_counter()

  # Checkpoints.

  def save(self, step: int, state: Any, progress: dict[str, Any]) -> None:
    """Writes a checkpoint and waits until it is complete.

    Raises:
      NonFiniteLossError: If a pending loss or the parameters are not finite
        (nothing is written then).
      RunStopped: After writing, if a stop signal arrived.
    """
    self._fetch(timed=False)
    if not train_state_lib.all_finite(state.params):
      raise NonFiniteLossError(
        step, "The parameters hold NaN or infinite values"
      )
    progress = {
      **progress,
      "metrics_records": len(self._records),
      "sums": self._sums,
      "count": self._count,
    }
    self._checkpoints.save(
      step,
      args=ocp.args.Composite(
        **{
          _STATE_ITEM: ocp.args.StandardSave(state),
          _PROGRESS_ITEM: ocp.args.JsonSave(progress),
        }
      ),
      force=True,
    )
    self._checkpoints.wait_until_finished()
    self._clock = time.perf_counter()
    if self._stop_signal is not None:
      raise RunStopped(self._stop_signal, step, self.out_dir)
