"""Runs python -m benchmarks.step_cost."""

from benchmarks.step_cost import cli

if __name__ == "__main__":
  cli.main()
