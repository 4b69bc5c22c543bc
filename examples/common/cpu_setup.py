"""Process settings, made before JAX starts, that speed up training on the CPU.

* Allocator: XLA mallocs temporary buffers every step, and glibc's defaults
  mmap large ones and trim freed memory, so each step faults them in again.
  ``M_MMAP_MAX=0``, ``M_TRIM_THRESHOLD=-1``, ``M_ARENA_MAX=1`` keep that memory
  (the resident size stays at the peak).
* Convolutions: jaxlib 0.10's YNNPACK is far slower than XLA at 3x3 weight
  gradients here; ``--xla_cpu_experimental_ynn_fusion_type=dot,reduce`` keeps
  it for matrix products and reductions. An unknown XLA flag aborts, so it is
  only set for :data:`YNN_FLAG_JAXLIB_VERSIONS`.

``EXADAM_CPU_SETUP=0`` turns both off; a flag value in ``XLA_FLAGS`` is kept.
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
  """Applies the chosen settings this process can take; returns their names."""
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
