"""Benchmarks of ``exadam_optax`` against optax's Adam family.

Run them as modules from the repository root, e.g.
``python -m benchmarks.step_cost``.
"""
