"""Tests for examples.common.download: search order and atomic downloads."""

from __future__ import annotations

import hashlib
import pathlib
import urllib.error

import pytest

from examples.common import download

LAYOUTS = ("thing_folder", "thing.bin")


def _sha256(content: bytes) -> str:
  return hashlib.sha256(content).hexdigest()


def _source_file(tmp_path: pathlib.Path, content: bytes) -> download.RemoteFile:
  """Writes a file to serve by ``file://`` URL, and describes it."""
  source = tmp_path / "server" / "thing.bin"
  source.parent.mkdir(parents=True)
  source.write_bytes(content)
  return download.RemoteFile(source.as_uri(), _sha256(content), "thing.bin")


def test_cache_dir_follows_xdg_cache_home(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert download.cache_dir() == tmp_path / "xdg" / "exadam_optax"
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert download.cache_dir() == tmp_path / "home" / ".cache" / "exadam_optax"


def test_data_dirs_order_is_argument_env_cache(
  tmp_path, monkeypatch, isolated_data_env
):
  assert download.data_dirs() == [isolated_data_env]
  monkeypatch.setenv("EXADAM_DATA_DIR", "")
  assert download.data_dirs() == [isolated_data_env]
  monkeypatch.setenv("EXADAM_DATA_DIR", str(tmp_path / "env"))
  assert download.data_dirs(tmp_path / "arg") == [
    tmp_path / "arg",
    tmp_path / "env",
    isolated_data_env,
  ]
  assert download.data_dirs(str(tmp_path / "env")) == [
    tmp_path / "env",
    isolated_data_env,
  ]


def test_fetch_search_order_argument_then_env_then_cache(
  tmp_path, monkeypatch, isolated_data_env
):
  folders = {
    "arg": tmp_path / "arg",
    "env": tmp_path / "env",
    "cache": isolated_data_env,
  }
  for label, folder in folders.items():
    folder.mkdir(parents=True)
    (folder / "thing.bin").write_text(label)
  monkeypatch.setenv("EXADAM_DATA_DIR", str(folders["env"]))
  remote = download.RemoteFile("file:///nonexistent", "0" * 64, "thing.bin")

  def found() -> str:
    path = download.fetch(
      "Thing", LAYOUTS, remote, folders["arg"], download=False
    )
    return path.read_text()

  assert found() == "arg"
  (folders["arg"] / "thing.bin").unlink()
  assert found() == "env"
  (folders["env"] / "thing.bin").unlink()
  assert found() == "cache"


def test_fetch_prefers_first_layout_within_a_folder(
  tmp_path, isolated_data_env
):
  (tmp_path / "thing_folder").mkdir()
  (tmp_path / "thing.bin").write_bytes(b"x")
  remote = download.RemoteFile("file:///nonexistent", "0" * 64, "thing.bin")
  found = download.fetch("Thing", LAYOUTS, remote, tmp_path, download=False)
  assert found == tmp_path / "thing_folder"


def test_download_file_writes_verified_file(tmp_path):
  content = bytes(range(256)) * 5000
  remote = _source_file(tmp_path, content)
  destination = tmp_path / "out" / "nested" / "thing.bin"
  result = download.download_file(remote.url, destination, remote.sha256)
  assert result == destination
  assert destination.read_bytes() == content
  assert sorted(p.name for p in destination.parent.iterdir()) == ["thing.bin"]


def test_download_file_checksum_mismatch_leaves_no_file(tmp_path):
  remote = _source_file(tmp_path, b"not the published bytes")
  destination = tmp_path / "out" / "thing.bin"
  with pytest.raises(download.ChecksumMismatchError, match="SHA-256"):
    download.download_file(remote.url, destination, _sha256(b"published"))
  assert not destination.parent.exists()


def test_download_file_missing_source_leaves_no_file(tmp_path):
  destination = tmp_path / "out" / "thing.bin"
  with pytest.raises(urllib.error.URLError):
    download.download_file(
      (tmp_path / "missing.bin").as_uri(), destination, "0" * 64
    )
  assert not destination.parent.exists()


def test_fetch_downloads_into_first_data_folder(
  tmp_path, monkeypatch, isolated_data_env
):
  remote = _source_file(tmp_path, b"payload")
  monkeypatch.setenv("EXADAM_DATA_DIR", str(tmp_path / "env"))
  explicit = download.fetch("Thing", LAYOUTS, remote, tmp_path / "arg")
  assert explicit == tmp_path / "arg" / "thing.bin"
  assert explicit.read_bytes() == b"payload"
  assert not (tmp_path / "env").exists()
  assert not isolated_data_env.exists()

  from_env = download.fetch("Thing", LAYOUTS, remote)
  assert from_env == tmp_path / "env" / "thing.bin"
  assert from_env.read_bytes() == b"payload"

  monkeypatch.delenv("EXADAM_DATA_DIR")
  cached = download.fetch("Thing", LAYOUTS, remote)
  assert cached == isolated_data_env / "thing.bin"
  assert cached.read_bytes() == b"payload"


def test_fetch_checksum_mismatch_is_not_hidden(tmp_path, isolated_data_env):
  remote = _source_file(tmp_path, b"payload")
  tampered = download.RemoteFile(remote.url, _sha256(b"other"), "thing.bin")
  with pytest.raises(download.ChecksumMismatchError):
    download.fetch("Thing", LAYOUTS, tampered, tmp_path / "arg")
  assert not (tmp_path / "arg").exists()


def test_fetch_offline_raises_one_clear_error(
  tmp_path, monkeypatch, isolated_data_env
):
  monkeypatch.setenv("EXADAM_DATA_DIR", str(tmp_path / "env"))
  url = (tmp_path / "offline" / "thing.bin").as_uri()
  remote = download.RemoteFile(url, "ab" * 32, "thing.bin")
  with pytest.raises(download.DatasetNotFoundError) as raised:
    download.fetch("The Thing", LAYOUTS, remote, tmp_path / "arg")
  assert isinstance(raised.value, FileNotFoundError)
  assert isinstance(raised.value.__cause__, urllib.error.URLError)
  message = str(raised.value)
  assert "The Thing was not found" in message
  for folder in (tmp_path / "arg", tmp_path / "env", isolated_data_env):
    for layout in LAYOUTS:
      assert str(folder / layout) in message
  for hint in (url, "ab" * 32, "--data-dir", "EXADAM_DATA_DIR", "failed"):
    assert hint in message
  assert not (tmp_path / "arg").exists()


def test_fetch_without_download_does_not_download(tmp_path, isolated_data_env):
  remote = _source_file(tmp_path, b"payload")
  with pytest.raises(download.DatasetNotFoundError, match="download=False"):
    download.fetch("Thing", LAYOUTS, remote, tmp_path / "arg", download=False)
  assert not (tmp_path / "arg").exists()
  assert not isolated_data_env.exists()


def test_verify_sha256(tmp_path):
  path = tmp_path / "file.bin"
  path.write_bytes(b"abc")
  download.verify_sha256(path, _sha256(b"abc").upper())
  with pytest.raises(download.ChecksumMismatchError, match=str(path)):
    download.verify_sha256(path, _sha256(b"abd"))
