"""JAX's persistent compilation cache: where it is, and that it never fails."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from examples.common import cli, compile_cache, download
from examples.mingpt import configs as gpt_configs

# Each test starts subprocesses or trains for several seconds.
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Compiles two programs with the cache the argument names, prints their values.
PROGRAM = """
  import sys
  from examples.common import compile_cache
  print(compile_cache.enable(sys.argv[1] if len(sys.argv) > 1 else None))
  import jax, jax.numpy as jnp
  x = jnp.arange(6.0).reshape(2, 3)
  print(jax.jit(lambda x: jnp.sin(x) * 2)(x).sum())
  print(jax.jit(lambda x: jnp.tanh(x) @ x.T)(x).sum())
"""


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
  environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
  return subprocess.run(
    [sys.executable, "-c", textwrap.dedent(PROGRAM), *args],
    cwd=ROOT,
    env=environment,
    capture_output=True,
    text=True,
    check=True,
  )


def _entries(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(folder.glob("*-cache"))


def test_the_folder_is_the_option_then_the_variable_then_the_cache_folder(
  tmp_path, monkeypatch
):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  monkeypatch.delenv(compile_cache.DIR_ENV_VAR, raising=False)
  monkeypatch.delenv(compile_cache.ENABLE_ENV_VAR, raising=False)
  assert compile_cache.folder() == download.cache_dir() / "jax"
  monkeypatch.setenv(compile_cache.DIR_ENV_VAR, str(tmp_path / "env"))
  assert compile_cache.folder() == tmp_path / "env"
  assert compile_cache.folder(str(tmp_path / "option")) == tmp_path / "option"
  assert compile_cache.folder("off") is None
  assert compile_cache.folder("OFF") is None
  monkeypatch.setenv(compile_cache.ENABLE_ENV_VAR, "false")
  assert compile_cache.folder() is None
  # A folder given on the command line wins over the variable.
  assert compile_cache.folder(str(tmp_path / "option")) == tmp_path / "option"


def test_the_trainers_pass_the_option_on(tmp_path, monkeypatch):
  asked = []
  monkeypatch.setattr(compile_cache, "enable", asked.append)
  argv = ["--preset", "tiny", "--compilation-cache", str(tmp_path)]
  assert cli.main(lambda config: None, gpt_configs.PRESETS, argv) == 0
  assert (
    cli.main(lambda config: None, gpt_configs.PRESETS, ["--preset=tiny"]) == 0
  )
  assert asked == [str(tmp_path), None]


def test_a_second_run_loads_every_program_from_the_cache(tmp_path):
  first = _run(str(tmp_path))
  entries = _entries(tmp_path)
  # Both programs and the small ones around them, however fast they compile.
  assert len(entries) >= 2
  mtimes = [entry.stat().st_mtime_ns for entry in entries]
  second = _run(str(tmp_path))
  assert second.stdout == first.stdout
  assert second.stderr == ""
  assert _entries(tmp_path) == entries
  assert [entry.stat().st_mtime_ns for entry in entries] == mtimes


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_corrupt_cache_is_ignored_with_one_line(tmp_path, damage):
  first = _run(str(tmp_path))
  entries = _entries(tmp_path)
  assert len(entries) >= 2
  for entry in entries:
    content = entry.read_bytes()
    entry.write_bytes(
      {
        "truncated": content[: len(content) // 2],
        "garbage": os.urandom(len(content)),
        "empty": b"",
      }[damage]
    )
  second = _run(str(tmp_path))
  assert second.stdout == first.stdout
  lines = second.stderr.splitlines()
  assert len(lines) == 1, second.stderr
  assert lines[0].startswith("warning: ignoring unreadable entries")
  assert str(tmp_path) in lines[0]


def test_off_writes_nothing(tmp_path):
  # The option turns it off even where the variable names a folder.
  done = _run("off", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "env"))
  assert done.stdout.splitlines()[0] == "None"
  assert done.stderr == ""
  assert not (tmp_path / "env").exists()
  done = _run(
    JAX_COMPILATION_CACHE_DIR=str(tmp_path / "env"),
    JAX_ENABLE_COMPILATION_CACHE="0",
  )
  assert done.stdout.splitlines()[0] == "None"
  assert not (tmp_path / "env").exists()


def test_a_folder_that_cannot_be_created_leaves_the_cache_off(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  done = _run(str(blocker / "cache"))
  assert done.stdout.splitlines()[0] == "None"
  lines = done.stderr.splitlines()
  assert len(lines) == 1, done.stderr
  assert lines[0].startswith("warning: compilation cache off: cannot create")
