"""Runs python -m benchmarks.reproduce."""

from benchmarks.reproduce import cli
from examples.common import compile_cache

if __name__ == "__main__":
  # Every run of an experiment compiles the same programs; the cache
  # compiles them once for all runs, seeds and later invocations.
  compile_cache.enable()
  raise SystemExit(cli.main())
