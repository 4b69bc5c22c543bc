"""Pytest setup shared by the test suite and the doctests.

Before JAX starts:

* eight host CPU devices, so that sharding and data-parallel code can be
  tested on a single CPU machine;
* the CPU settings the trainers use (:mod:`examples.common.cpu_setup`);
* a persistent compilation cache shared by the test processes, so that the
  many runs of the same small models compile once.
"""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="exadam-jax-cache-")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

from examples.common import cpu_setup

cpu_setup.configure()
