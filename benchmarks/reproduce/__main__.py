"""Runs python -m benchmarks.reproduce."""

from benchmarks.reproduce import cli

if __name__ == "__main__":
  raise SystemExit(cli.main())
