"""Pytest setup shared by the test suite and the doctests.

Eight host CPU devices are requested before JAX is imported, so that sharding
and data-parallel code can be tested on a single CPU machine.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
