"""Runs python -m benchmarks.throughput."""

from benchmarks.throughput import cli

if __name__ == "__main__":
  raise SystemExit(cli.main())
