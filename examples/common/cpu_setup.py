"""Process settings that make JAX train faster on the CPU.

Two settings, applied by :func:`configure` before JAX starts its backend
(the trainers and benchmarks call it first thing; the test suite too):

* **Allocator.** XLA's CPU runtime allocates its temporary buffers with
  ``malloc`` for every step. With glibc's defaults, large buffers are mapped
  with ``mmap`` and unmapped when freed, and freed heap memory is trimmed, so
  each step faults its working set in again (millions of page faults a step
  for the paper's MinGPT). ``mallopt`` with ``M_MMAP_MAX = 0`` (no mmap for
  allocations), ``M_TRIM_THRESHOLD = -1`` (never trim) and
  ``M_ARENA_MAX = 1`` (one heap, so freed memory is reused by every thread)
  keeps that memory in the process. It is applied in-process, so no launcher
  or preloaded library is needed; the resident size then stays at the peak.
* **Convolutions.** jaxlib 0.10 hands convolutions to YNNPACK, whose kernel
  for the weight gradient of a 3x3 convolution is several times slower than
  XLA's own (Eigen) on this kind of CPU. The XLA flag
  ``--xla_cpu_experimental_ynn_fusion_type=dot,reduce`` keeps YNNPACK for
  matrix products and reductions only. The flag is experimental, and an
  unknown XLA flag aborts the process, so it is only set for the jaxlib
  versions it was measured with (:data:`YNN_FLAG_JAXLIB_VERSIONS`).

``benchmarks/throughput`` measures both, on and off. Set
``EXADAM_CPU_SETUP=0`` to leave the process as it is; a value for the XLA
flag already in ``XLA_FLAGS`` is kept.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

import jaxlib

ENV_VAR = "EXADAM_CPU_SETUP"
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_FLAG_VALUE = "dot,reduce"
YNN_FLAG_JAXLIB_VERSIONS = ("0.10.",)
"""Version prefixes of jaxlib that know the flag and were measured with it."""

# mallopt's parameter numbers, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def configure(*, malloc: bool = True, xla: bool = True) -> list[str]:
  """Applies the settings this process can take; returns what was applied.

  Args:
    malloc: Whether to apply the allocator setting.
    xla: Whether to add the XLA flag.

  Returns:
    ``"malloc"`` and/or ``"xla"``, for the settings applied (none when turned
    off with ``EXADAM_CPU_SETUP=0`` or unavailable on this platform).
  """
  if os.environ.get(ENV_VAR, "1") == "0":
    return []
  applied = []
  if malloc and _configure_glibc_malloc():
    applied.append("malloc")
  if xla and _add_ynn_flag():
    applied.append("xla")
  return applied


def _configure_glibc_malloc() -> bool:
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return False
  libc = ctypes.CDLL(ctypes.util.find_library("c"))
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))
  return all(libc.mallopt(option, value) == 1 for option, value in settings)


def _add_ynn_flag() -> bool:
  flags = os.environ.get("XLA_FLAGS", "")
  if YNN_FLAG in flags or not jaxlib.__version__.startswith(
    YNN_FLAG_JAXLIB_VERSIONS
  ):
    return False
  os.environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}={YNN_FLAG_VALUE}".strip()
  return True
