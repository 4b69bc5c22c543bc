"""Pytest setup shared by the test suite and the doctests.

Before JAX starts:

* eight host CPU devices, so that sharding and data-parallel code can be
  tested on a single CPU machine;
* the CPU settings the trainers use (:mod:`examples.common.cpu_setup`);
* JAX's persistent compilation cache, every program in it, in a folder kept
  between sessions outside the checkout (``test-jax-<jaxlib version>/`` in
  the cache folder, ``$XDG_CACHE_HOME/exadam_optax`` or
  ``~/.cache/exadam_optax``), so that the many runs of the same small models
  compile once, and a second session not at all. It is passed on to the
  processes the tests start through the environment;
  ``JAX_COMPILATION_CACHE_DIR`` moves it, ``JAX_ENABLE_COMPILATION_CACHE=0``
  turns it off.
"""

import importlib.metadata
import os

from examples.common import download  # imports no JAX

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# Keyed by jaxlib: entries of other versions are never loaded (their key
# differs), so the folder of a version no longer installed can be deleted.
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR",
  str(
    download.cache_dir() / f"test-jax-{importlib.metadata.version('jaxlib')}"
  ),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

from examples.common import cpu_setup

cpu_setup.configure()
