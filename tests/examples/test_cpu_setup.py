"""The process settings of examples.common.cpu_setup."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from examples.common import cpu_setup

# Each test starts subprocesses or trains for several seconds.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _run(code: str, **env: str) -> str:
  done = subprocess.run(
    [sys.executable, "-c", textwrap.dedent(code)],
    cwd=ROOT,
    env={**os.environ, "PYTHONPATH": ROOT, **env},
    capture_output=True,
    text=True,
    check=True,
  )
  return done.stdout.strip()


@pytest.mark.skipif(
  platform.libc_ver()[0] != "glibc", reason="the allocator setting is glibc's"
)
def test_large_allocations_stay_in_the_heap():
  code = """
    import ctypes, numpy as np
    from examples.common import cpu_setup

    class MallInfo2(ctypes.Structure):
      _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
        "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    print(cpu_setup.configure(xla=False))
    before = libc.mallinfo2().hblkhd  # bytes in mmapped blocks
    big = np.ones(50_000_000, np.uint8)
    print(libc.mallinfo2().hblkhd - before)
  """
  assert _run(code, XLA_FLAGS="").splitlines() == ["['malloc']", "0"]
  off = _run(code, XLA_FLAGS="", EXADAM_CPU_SETUP="0").splitlines()
  assert off[0] == "[]" and int(off[1]) >= 50_000_000  # glibc mmaps it


def test_the_xla_flag_is_added_once_and_a_users_value_is_kept(monkeypatch):
  monkeypatch.setattr(cpu_setup.jaxlib, "__version__", "0.10.2")
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  assert cpu_setup._add_ynn_flag()
  flags = os.environ["XLA_FLAGS"]
  assert flags.endswith(f"{cpu_setup.YNN_FLAG}={cpu_setup.YNN_FLAG_VALUE}")
  assert not cpu_setup._add_ynn_flag()
  assert os.environ["XLA_FLAGS"] == flags
  monkeypatch.setenv("XLA_FLAGS", f"{cpu_setup.YNN_FLAG}=dot")
  assert not cpu_setup._add_ynn_flag()
  assert os.environ["XLA_FLAGS"] == f"{cpu_setup.YNN_FLAG}=dot"


def test_the_xla_flag_is_left_out_for_unmeasured_jaxlib_versions(monkeypatch):
  # An XLA flag that a jaxlib does not know aborts the process.
  monkeypatch.setattr(cpu_setup.jaxlib, "__version__", "0.11.2")
  monkeypatch.setenv("XLA_FLAGS", "")
  assert not cpu_setup._add_ynn_flag()
  assert os.environ["XLA_FLAGS"] == ""


def test_turned_off_by_the_environment(monkeypatch):
  monkeypatch.setenv(cpu_setup.ENV_VAR, "0")
  assert cpu_setup.configure() == []
