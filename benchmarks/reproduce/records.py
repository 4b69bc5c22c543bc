"""Metrics records of the reproduction: JSON-lines files and seed statistics.

Every run writes one record per evaluation (``"kind": "eval"``) and, in
experiment 1, a final test record (``"kind": "final"``); each record names its
run (``run_id``, ``arm``, ``optimizer``, ``base_lr``, ``seed``). Records are
appended to the file and flushed as soon as they exist, so a run that is
stopped early leaves every finished evaluation behind.

:func:`seed_curves` turns the records of an arm at one learning rate into a
:class:`SeedCurves`: one row per seed, one column per evaluation, with the
mean and sample standard deviation over seeds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from examples.common.metrics_log import parse_json_lines

EVAL = "eval"
FINAL = "final"


def metrics_path(
  out_dir: pathlib.Path, experiment: str, stage: str = ""
) -> pathlib.Path:
  """``<out_dir>/[<stage>_]<experiment>_metrics.jsonl``."""
  prefix = f"{stage}_" if stage else ""
  return out_dir / f"{prefix}{experiment}_metrics.jsonl"


class RecordWriter:
  """Appends records to a JSON-lines file, flushing after each batch.

  Args:
    path: The file; created (with its folder) if missing, appended to
      otherwise.
  """

  def __init__(self, path: pathlib.Path):
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self.count = 0

  def write(self, records: Iterable[dict[str, Any]]) -> None:
    """Appends ``records`` (NaN and infinities as JSON's ``NaN``/``Infinity``)."""
    lines = [json.dumps(record, sort_keys=True) + "\n" for record in records]
    with open(self.path, "a", encoding="utf-8") as file:
      file.writelines(lines)
      file.flush()
    self.count += len(lines)


def read_records(path: pathlib.Path) -> list[dict[str, Any]]:
  """Reads a JSON-lines file written by :class:`RecordWriter`.

  A last line that is not JSON (a run killed while writing) is skipped.

  Raises:
    FileNotFoundError: If the file does not exist.
    ValueError: If a line other than the last is not a JSON object.
  """
  text = pathlib.Path(path).read_text(encoding="utf-8")
  return parse_json_lines(text, path, any_last_line=True)[0]


@dataclasses.dataclass(frozen=True)
class SeedCurves:
  """One metric of one arm at one learning rate, over seeds and time.

  Attributes:
    x: Evaluation points (epochs or iterations), ascending, those every seed
      reached.
    values: ``(num_seeds, len(x))`` metric values, rows in ``seeds`` order.
    seeds: The seeds.
  """

  x: np.ndarray
  values: np.ndarray
  seeds: tuple[int, ...]

  @property
  def mean(self) -> np.ndarray:
    """Mean over seeds at each evaluation (NaN if a seed diverged)."""
    return self.values.mean(axis=0)

  @property
  def std(self) -> np.ndarray:
    """Sample standard deviation over seeds (0 for a single seed)."""
    if len(self.seeds) < 2:
      return np.zeros(len(self.x))
    return self.values.std(axis=0, ddof=1)

  @property
  def last(self) -> np.ndarray:
    """Each seed's value at the last evaluation."""
    return self.values[:, -1]


def _key(record: dict[str, Any]) -> tuple[str, float]:
  return record["arm"], float(record["base_lr"])


def arms_in_order(records: Sequence[dict[str, Any]]) -> list[str]:
  """The arms in the order their first record appears."""
  return list(dict.fromkeys(record["arm"] for record in records))


def learning_rates_of(
  records: Sequence[dict[str, Any]], arm: str
) -> list[float]:
  """The learning rates ``arm`` was run at, ascending."""
  return sorted({float(r["base_lr"]) for r in records if r["arm"] == arm})


def seed_curves(
  records: Sequence[dict[str, Any]],
  arm: str,
  metric: str,
  x_key: str,
  base_lr: float | None = None,
) -> SeedCurves:
  """Collects ``metric`` against ``x_key`` for every seed of an arm.

  Args:
    records: Metrics records of one experiment.
    arm: The arm label.
    metric: A field of the evaluation records, e.g. ``"val_loss"``.
    x_key: ``"epoch"`` or ``"step"``.
    base_lr: The learning rate; None requires the arm to have only one.

  Returns:
    The curves on the evaluation points that every seed reached.

  Raises:
    ValueError: If the arm has no evaluation records with ``metric``, or
      several learning rates and ``base_lr`` is None.
  """
  if base_lr is None:
    rates = learning_rates_of(records, arm)
    if len(rates) != 1:
      raise ValueError(
        f"Arm {arm!r} was run at learning rates {rates}; pass base_lr."
      )
    base_lr = rates[0]
  by_seed: dict[int, dict[float, float]] = {}
  for record in records:
    if (
      record.get("kind") == EVAL
      and _key(record) == (arm, float(base_lr))
      and metric in record
    ):
      by_seed.setdefault(int(record["seed"]), {})[record[x_key]] = float(
        record[metric]
      )
  if not by_seed:
    raise ValueError(
      f"No evaluation records with {metric!r} for arm {arm!r} at learning "
      f"rate {base_lr:g}."
    )
  seeds = tuple(sorted(by_seed))
  common = sorted(set.intersection(*(set(by_seed[s]) for s in seeds)))
  values = np.array([[by_seed[s][x] for x in common] for s in seeds])
  return SeedCurves(
    x=np.asarray(common),
    values=values.reshape(len(seeds), len(common)),
    seeds=seeds,
  )


def final_values(
  records: Sequence[dict[str, Any]],
  arm: str,
  metric: str,
  base_lr: float | None = None,
) -> np.ndarray:
  """Per-seed ``metric`` of the ``final`` records of an arm (seed order).

  Raises:
    ValueError: If there is no such record.
  """
  found = {
    int(r["seed"]): float(r[metric])
    for r in records
    if r.get("kind") == FINAL
    and r["arm"] == arm
    and (base_lr is None or float(r["base_lr"]) == float(base_lr))
  }
  if not found:
    raise ValueError(f"No final records with {metric!r} for arm {arm!r}.")
  return np.array([found[seed] for seed in sorted(found)])


def mean_and_std(values: np.ndarray) -> tuple[float, float]:
  """Mean and sample standard deviation (NaN for one value)."""
  values = np.asarray(values, dtype=np.float64)
  if values.size == 0:
    return math.nan, math.nan
  std = float(values.std(ddof=1)) if values.size > 1 else math.nan
  return float(values.mean()), std
