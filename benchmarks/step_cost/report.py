"""Statistics, tables and files of the step-cost benchmark."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import flax
import jax
import jaxlib
import numpy as np
import optax

import exadam_optax
from benchmarks.step_cost.hlo import HloSummary
from benchmarks.step_cost.timing import Timings
from benchmarks.step_cost.trees import BenchmarkTree

BASELINE = "adam"
"""The optimizer every other one is compared with."""

NOMINAL_PEAK_GBPS = {"H200": 4800.0}
"""Nominal memory bandwidth (GB/s) by a substring of the device kind."""


def environment() -> dict[str, Any]:
  """Versions, device and host facts that the measurements depend on."""
  device = jax.devices()[0]
  return {
    "platform": device.platform,
    "device_kind": device.device_kind,
    "device_count": jax.device_count(),
    "cpu_count": os.cpu_count(),
    "python": platform.python_version(),
    "jax": jax.__version__,
    "jaxlib": jaxlib.__version__,
    "optax": optax.__version__,
    "flax": flax.__version__,
    "numpy": np.__version__,
    "exadam_optax": exadam_optax.__version__,
    **source_commit(),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "load_average": host_load(),
    "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds"
    ),
  }


def write_results(
  out: pathlib.Path, name: str, report: Mapping[str, Any], text: str
) -> tuple[pathlib.Path, pathlib.Path]:
  """Writes ``<out>/<name>_<platform>.json`` and ``.md`` and says where.

  Args:
    out: destination folder, created if missing.
    name: the benchmark's name, the files' stem before the platform.
    report: the report, written as JSON (``environment`` names the platform).
    text: the report's Markdown.

  Returns:
    The paths of the JSON and Markdown files.
  """
  out.mkdir(parents=True, exist_ok=True)
  stem = f"{name}_{report['environment']['platform']}"
  json_path = out / f"{stem}.json"
  json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
  md_path = out / f"{stem}.md"
  md_path.write_text(text, encoding="utf-8")
  print(f"Wrote {json_path} and {md_path}", flush=True)
  return json_path, md_path


def source_commit() -> dict[str, Any]:
  """The git commit of the code that ran, and whether its tracked files differ.

  Results are kept only if they can be traced to the code that made them;
  outside a git checkout (an installed wheel) both are None.
  """
  checkout = pathlib.Path(__file__).resolve().parent

  def git(*args: str) -> str | None:
    try:
      done = subprocess.run(
        ["git", "-C", str(checkout), *args],
        capture_output=True,
        text=True,
        check=True,
      )
    except (OSError, subprocess.CalledProcessError):
      return None
    return done.stdout.strip()

  commit = git("rev-parse", "HEAD")
  changes = git("status", "--porcelain", "--untracked-files=no")
  return {
    "commit": commit,
    "commit_modified": None if changes is None else bool(changes),
  }


def report_head(
  title: str, report: Mapping[str, Any], *extra: str
) -> list[str]:
  """A markdown report's first lines: title, command and environment.

  Args:
    title: The heading, to which the platform is appended.
    report: A report with ``command`` and ``environment`` (an
      :func:`environment` dict).
    *extra: further versions to name after optax's (e.g. ``"torch 2.5"``).
  """
  env = report["environment"]
  versions = ", ".join(
    [
      f"jax {env['jax']}",
      f"flax {env['flax']}",
      f"optax {env['optax']}",
      *extra,
    ]
  )
  return [
    f"# {title} ({env['platform']})",
    "",
    f"Command: `{report['command']}`",
    "",
    f"Device: {env['device_kind']}, {env['cpu_count']} CPUs; {versions}; "
    f"{env['date_utc']}; load average at the start {env['load_average']}.",
    "",
  ]


def host_load() -> list[float] | None:
  """The host's 1, 5 and 15 minute load averages, where the OS reports them.

  Other processes running on the CPU make the timings noisier; the load
  tells how busy the host was.
  """
  try:
    return [round(load, 2) for load in os.getloadavg()]
  except (AttributeError, OSError):
    return None


def nominal_peak_gbps(device_kind: str) -> float | None:
  """Nominal memory bandwidth of a known device kind, else ``None``."""
  for name, gbps in NOMINAL_PEAK_GBPS.items():
    if name in device_kind:
      return gbps
  return None


def command_line(argv: Sequence[str]) -> str:
  """The shell command that reruns the benchmark with ``argv``."""
  return shlex.join(["python", "-m", "benchmarks.step_cost", *argv])


def tree_result(
  tree: BenchmarkTree, timings: Timings, peak_gbps: float | None
) -> dict[str, Any]:
  """Statistics of one tree's timings.

  For each optimizer: quartiles of the per-step time in microseconds; the
  ratio of its median to Adam's median; quartiles of the per-round ratio
  to Adam (paired samples of the same round); the achieved bandwidth
  ``min_traffic_bytes / median`` in GB/s and, if ``peak_gbps`` is given,
  its fraction of the peak.

  Args:
    tree: the measured tree.
    timings: its interleaved timings, which must include ``"adam"``.
    peak_gbps: the device's memory bandwidth in GB/s, or ``None``.

  Returns:
    A JSON-ready dictionary.
  """
  baseline = timings.seconds[BASELINE]
  optimizers = {}
  for name, seconds in timings.seconds.items():
    q25, median, q75 = np.percentile(seconds, [25, 50, 75])
    paired = np.percentile(seconds / baseline, [25, 50, 75])
    gbps = tree.min_traffic_bytes / median / 1e9
    optimizers[name] = {
      "median_us": median * 1e6,
      "q25_us": q25 * 1e6,
      "q75_us": q75 * 1e6,
      "ratio_to_adam": median / np.median(baseline),
      "paired_ratio_q25": paired[0],
      "paired_ratio_median": paired[1],
      "paired_ratio_q75": paired[2],
      "gb_per_s": gbps,
      "peak_fraction": None if peak_gbps is None else gbps / peak_gbps,
      "first_call_s": timings.compile_seconds[name],
    }
  return {
    "tree": tree.name,
    "num_params": tree.num_params,
    "num_leaves": tree.num_leaves,
    "min_traffic_bytes": tree.min_traffic_bytes,
    "rounds": len(baseline),
    "calls_per_sample": timings.calls_per_sample,
    "optimizers": _plain(optimizers),
  }


def hlo_result(summaries: Mapping[str, HloSummary]) -> dict[str, Any]:
  """The HLO summaries as a JSON-ready dictionary."""
  return {name: dataclasses.asdict(s) for name, s in summaries.items()}


_TIMING_HEADER = (
  "tree",
  "params",
  "leaves",
  "optimizer",
  "median us",
  "IQR us",
  "x Adam",
  "paired x Adam (IQR)",
  "GB/s",
  "of peak",
)
_HLO_COUNTS = (
  "fusions",
  "array_passes",
  "array_streams",
  "divides",
  "roots",
  "transcendentals",
)
_HLO_HEADER = ("optimizer", *(key.replace("_", " ") for key in _HLO_COUNTS))


def timing_rows(result: Mapping[str, Any]) -> list[tuple[str, ...]]:
  """Table rows of one tree's statistics, one per optimizer."""
  rows = []
  for name, s in result["optimizers"].items():
    peak = s["peak_fraction"]
    rows.append(
      (
        result["tree"],
        f"{result['num_params']:,}",
        str(result["num_leaves"]),
        name,
        f"{s['median_us']:.1f}",
        f"{s['q25_us']:.1f}-{s['q75_us']:.1f}",
        f"{s['ratio_to_adam']:.3f}",
        f"{s['paired_ratio_median']:.3f} "
        f"({s['paired_ratio_q25']:.3f}-{s['paired_ratio_q75']:.3f})",
        f"{s['gb_per_s']:.1f}",
        "-" if peak is None else f"{peak:.0%}",
      )
    )
  return rows


def hlo_rows(hlo: Mapping[str, Mapping[str, int]]) -> list[tuple[str, ...]]:
  """Table rows of the HLO summaries, one per optimizer."""
  return [
    (name, *(str(summary[key]) for key in _HLO_COUNTS))
    for name, summary in hlo.items()
  ]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """A plain-text table with aligned columns."""
  widths = [
    max(len(cell) for cell in column)
    for column in zip(header, *rows, strict=True)
  ]
  lines = [
    "  ".join(
      cell.ljust(width) for cell, width in zip(row, widths, strict=True)
    )
    for row in (header, *rows)
  ]
  lines.insert(1, "  ".join("-" * width for width in widths))
  return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """A GitHub-flavoured markdown table."""
  lines = [
    "| " + " | ".join(header) + " |",
    "|" + "|".join("---" for _ in header) + "|",
  ]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def print_tree_result(result: Mapping[str, Any]) -> None:
  """Prints one tree's table as soon as it is measured."""
  print(text_table(_TIMING_HEADER, timing_rows(result)), flush=True)
  print(flush=True)


def print_hlo(hlo: Mapping[str, Mapping[str, int]], num_elements: int) -> None:
  """Prints the HLO summary table."""
  print(f"Compiled HLO of one step on a flat vector of {num_elements:,}:")
  print(text_table(_HLO_HEADER, hlo_rows(hlo)), flush=True)
  print(flush=True)


def write_report(
  report: Mapping[str, Any], out_dir: pathlib.Path
) -> tuple[pathlib.Path, pathlib.Path]:
  """Writes ``step_cost_<platform>.json`` and ``.md`` into ``out_dir``.

  Args:
    report: the whole benchmark report (``command``, ``environment``,
      ``settings``, ``results`` and optionally ``hlo``).
    out_dir: destination folder, created if missing.

  Returns:
    The paths of the JSON and markdown files.
  """
  return write_results(out_dir, "step_cost", _plain(report), _markdown(report))


def _markdown(report: Mapping[str, Any]) -> str:
  env = report["environment"]
  settings = report["settings"]
  rows = [row for result in report["results"] for row in timing_rows(result)]
  parts = [
    f"# EXAdam step cost against optax's Adam ({env['platform']})",
    "",
    f"Command: `{report['command']}`",
    "",
    f"Device: {env['device_kind']} ({env['platform']}), {env['cpu_count']} "
    f"CPUs; jax {env['jax']}, jaxlib {env['jaxlib']}, optax {env['optax']}, "
    f"flax {env['flax']}, Python {env['python']}; {env['date_utc']}. "
    "Host load average (1, 5, 15 min) at the start: "
    f"{env['load_average']}, at the end: {env.get('load_average_end')}.",
    "",
    "One jitted training step: the optimizer's update and "
    "`optax.apply_updates`, with the parameter and state buffers donated, "
    f"{settings['dtype']} parameters, after {settings['warmup_steps']} "
    "warm-up steps. The optimizers are timed in interleaved rounds "
    "(rotating order); each figure is over all rounds: the median and the "
    "interquartile range of the per-step time, the ratio of the median to "
    "Adam's, the median and IQR of the per-round ratio to Adam, and the "
    "bandwidth the update would need at this speed if it moved only the "
    "minimum traffic (7 arrays: read parameters, gradients and both moments,"
    " write parameters and both moments; 28 bytes per float32 parameter).",
    "",
    markdown_table(_TIMING_HEADER, rows),
    "",
  ]
  if "hlo" in report:
    parts += [
      "Compiled HLO of one step on a flat vector of "
      f"{settings['hlo_size']:,} elements (see `benchmarks/step_cost/hlo.py`"
      "): fused kernels, passes over the arrays, arrays read and written by "
      "those passes, and per-element divisions, roots and other "
      "transcendental functions.",
      "",
      markdown_table(_HLO_HEADER, hlo_rows(report["hlo"])),
      "",
    ]
  return "\n".join(parts)


def _plain(value: Any) -> Any:
  """Converts numpy scalars in nested containers to Python numbers."""
  if isinstance(value, Mapping):
    return {key: _plain(item) for key, item in value.items()}
  if isinstance(value, list | tuple):
    return [_plain(item) for item in value]
  if isinstance(value, np.generic):
    return value.item()
  return value
