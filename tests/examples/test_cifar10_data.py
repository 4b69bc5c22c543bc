"""Tests for CIFAR-10 loading (examples.cifar10.data) and augmentation."""

from __future__ import annotations

import math
import os
import pathlib
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from examples.cifar10 import augment, data
from examples.common import download

REPO_DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / "data"
IMAGES_PER_BATCH = 6  # As written by the conftest fixtures.
VAL_SIZE = 8


def _expected(arrays, val_size=VAL_SIZE):
  """The split that load_cifar10 should return for the fixture arrays."""
  train_images = np.concatenate([arrays[n][0] for n in data.TRAIN_BATCH_NAMES])
  train_labels = np.concatenate([arrays[n][1] for n in data.TRAIN_BATCH_NAMES])
  cut = len(train_images) - val_size
  test_images, test_labels = arrays[data.TEST_BATCH_NAME]
  return data.Cifar10(
    train_images[:cut],
    train_labels[:cut],
    train_images[cut:],
    train_labels[cut:],
    test_images,
    test_labels,
  )


def _assert_equal(loaded: data.Cifar10, expected: data.Cifar10) -> None:
  for field in data.Cifar10._fields:
    actual = getattr(loaded, field)
    want = getattr(expected, field)
    if field.endswith("images"):
      assert actual.dtype == np.uint8 and actual.shape[1:] == (32, 32, 3)
    else:
      assert actual.dtype == np.int32 and actual.ndim == 1
    np.testing.assert_array_equal(actual, want, err_msg=field)


@pytest.mark.parametrize("bytes_keys", [True, False])
def test_loads_unpacked_folder(
  tmp_path, isolated_data_env, cifar10_arrays, write_cifar10_folder, bytes_keys
):
  write_cifar10_folder(tmp_path, cifar10_arrays, bytes_keys=bytes_keys)
  loaded = data.load_cifar10(tmp_path, download=False, val_size=VAL_SIZE)
  _assert_equal(loaded, _expected(cifar10_arrays))
  assert len(loaded.train_images) == 5 * IMAGES_PER_BATCH - VAL_SIZE


def test_loads_archive_without_unpacking(
  tmp_path, isolated_data_env, cifar10_arrays, write_cifar10_archive
):
  folder = tmp_path / "data"
  sha256 = write_cifar10_archive(folder / data.ARCHIVE_NAME, cifar10_arrays)
  loaded = data.load_cifar10(
    folder, download=False, val_size=VAL_SIZE, archive_sha256=sha256
  )
  _assert_equal(loaded, _expected(cifar10_arrays))
  assert sorted(p.name for p in folder.iterdir()) == [data.ARCHIVE_NAME]


def test_downloads_archive_from_url(
  tmp_path, isolated_data_env, cifar10_arrays, write_cifar10_archive
):
  served = tmp_path / "server" / data.ARCHIVE_NAME
  sha256 = write_cifar10_archive(served, cifar10_arrays)
  loaded = data.load_cifar10(
    val_size=VAL_SIZE, url=served.as_uri(), archive_sha256=sha256
  )
  _assert_equal(loaded, _expected(cifar10_arrays))
  cached = isolated_data_env / data.ARCHIVE_NAME
  assert cached.read_bytes() == served.read_bytes()


def test_folder_is_preferred_to_archive(
  tmp_path, isolated_data_env, cifar10_arrays, write_cifar10_folder
):
  write_cifar10_folder(tmp_path, cifar10_arrays)
  (tmp_path / data.ARCHIVE_NAME).write_bytes(b"corrupt")
  loaded = data.load_cifar10(tmp_path, download=False, val_size=VAL_SIZE)
  _assert_equal(loaded, _expected(cifar10_arrays))


def test_archive_with_wrong_checksum_is_refused(
  tmp_path, isolated_data_env, cifar10_arrays, write_cifar10_archive
):
  write_cifar10_archive(tmp_path / data.ARCHIVE_NAME, cifar10_arrays)
  with pytest.raises(download.ChecksumMismatchError, match=data.CIFAR10_SHA256):
    data.load_cifar10(tmp_path, download=False, val_size=VAL_SIZE)


def test_corrupt_archive_gives_format_error(
  tmp_path, isolated_data_env, cifar10_arrays, write_cifar10_archive
):
  archive = tmp_path / data.ARCHIVE_NAME
  write_cifar10_archive(archive, cifar10_arrays)
  archive.write_bytes(archive.read_bytes()[:-2000])
  truncated_sha256 = download.sha256_of_file(archive)
  with pytest.raises(data.Cifar10FormatError, match=r"not a readable tar\.gz"):
    data.load_cifar10(
      tmp_path,
      download=False,
      val_size=VAL_SIZE,
      archive_sha256=truncated_sha256,
    )


def test_archive_missing_a_batch_gives_format_error(
  tmp_path, isolated_data_env, cifar10_arrays, write_cifar10_archive
):
  archive = tmp_path / data.ARCHIVE_NAME
  sha256 = write_cifar10_archive(
    archive, cifar10_arrays, skip=("data_batch_3",)
  )
  with pytest.raises(data.Cifar10FormatError, match="data_batch_3"):
    data.load_cifar10(
      tmp_path, download=False, val_size=VAL_SIZE, archive_sha256=sha256
    )


class _RunsShellCommand:
  """An object whose unpickling would run a shell command."""

  def __init__(self, command: str):
    self.command = command

  def __reduce__(self):
    return (os.system, (self.command,))


def test_malicious_pickle_is_refused_and_not_run(
  tmp_path,
  isolated_data_env,
  cifar10_arrays,
  write_cifar10_folder,
  python2_style_pickle,
):
  folder = write_cifar10_folder(tmp_path, cifar10_arrays)
  marker = tmp_path / "code_ran"
  payload = {b"data": _RunsShellCommand(f"touch {marker}"), b"labels": []}
  (folder / "data_batch_2").write_bytes(python2_style_pickle(payload))
  with pytest.raises(pickle.UnpicklingError) as raised:
    data.load_cifar10(tmp_path, download=False, val_size=VAL_SIZE)
  message = str(raised.value)
  assert f"{os.system.__module__}.system" in message
  assert "data_batch_2" in message and "Refused" in message
  assert not marker.exists()


@pytest.mark.parametrize(
  ("batch", "match"),
  [
    ({b"labels": [0]}, "lacks the entries"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
    ({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}, "3072"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "one integer"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "0..9"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0.5]}, "integers"),
    ([1, 2, 3], "not the dict"),
  ],
)
def test_malformed_batch_gives_format_error(
  tmp_path,
  isolated_data_env,
  cifar10_arrays,
  write_cifar10_folder,
  python2_style_pickle,
  batch,
  match,
):
  folder = write_cifar10_folder(tmp_path, cifar10_arrays)
  (folder / "test_batch").write_bytes(python2_style_pickle(batch))
  with pytest.raises(data.Cifar10FormatError, match=match):
    data.load_cifar10(tmp_path, download=False, val_size=VAL_SIZE)


def test_truncated_or_missing_batch_gives_format_error(
  tmp_path, isolated_data_env, cifar10_arrays, write_cifar10_folder
):
  folder = write_cifar10_folder(tmp_path, cifar10_arrays)
  batch = folder / "data_batch_1"
  batch.write_bytes(batch.read_bytes()[:100])
  with pytest.raises(data.Cifar10FormatError, match="truncated"):
    data.load_cifar10(tmp_path, download=False, val_size=VAL_SIZE)
  batch.unlink()
  with pytest.raises(data.Cifar10FormatError, match="data_batch_1 is missing"):
    data.load_cifar10(tmp_path, download=False, val_size=VAL_SIZE)


@pytest.mark.parametrize("val_size", [-1, 1.5, True])
def test_bad_val_size_is_rejected_before_loading(isolated_data_env, val_size):
  with pytest.raises(ValueError, match="val_size"):
    data.load_cifar10(download=False, val_size=val_size)


def test_val_size_must_leave_training_images(
  tmp_path, isolated_data_env, cifar10_arrays, write_cifar10_folder
):
  write_cifar10_folder(tmp_path, cifar10_arrays)
  with pytest.raises(ValueError, match=r"\[0, 30\)"):
    data.load_cifar10(tmp_path, download=False, val_size=30)
  loaded = data.load_cifar10(tmp_path, download=False, val_size=0)
  assert len(loaded.train_images) == 30 and len(loaded.val_images) == 0


def test_missing_data_set_error_names_official_layout(
  tmp_path, isolated_data_env
):
  with pytest.raises(download.DatasetNotFoundError) as raised:
    data.load_cifar10(tmp_path, download=False)
  message = str(raised.value)
  assert str(tmp_path / data.FOLDER_NAME) in message
  assert str(tmp_path / data.ARCHIVE_NAME) in message
  assert data.CIFAR10_URL in message
  assert "make_cifar10_batches" not in message


@pytest.mark.skipif(
  not (REPO_DATA_DIR / data.FOLDER_NAME).is_dir(),
  reason="no CIFAR-10 copy in the repository's data/ folder",
)
def test_real_cifar10_split(isolated_data_env):
  loaded = data.load_cifar10(REPO_DATA_DIR, download=False)
  assert loaded.train_images.shape == (40_000, 32, 32, 3)
  assert loaded.val_images.shape == (10_000, 32, 32, 3)
  assert loaded.test_images.shape == (10_000, 32, 32, 3)
  for labels in (loaded.train_labels, loaded.val_labels, loaded.test_labels):
    assert set(np.unique(labels).tolist()) == set(range(10))
  np.testing.assert_array_equal(np.bincount(loaded.test_labels), [1000] * 10)


# Augmentation.


def _identity_params(batch_size: int) -> augment.AffineParams:
  return augment.AffineParams(
    flip=jnp.zeros(batch_size, bool),
    angle=jnp.zeros(batch_size),
    shift=jnp.zeros((batch_size, 2)),
    scale=jnp.ones(batch_size),
  )


@pytest.fixture
def normalized_images() -> jax.Array:
  rng = np.random.default_rng(1)
  pixels = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  return augment.normalize(pixels)


def test_normalize_maps_pixels_to_unit_interval():
  pixels = np.array([0, 51, 255], np.uint8)
  normalized = augment.normalize(pixels)
  assert normalized.dtype == jnp.float32
  np.testing.assert_allclose(normalized, [-1.0, -0.6, 1.0], rtol=1e-6)
  with pytest.raises(TypeError, match="uint8"):
    augment.normalize(np.zeros(3, np.float32))


def test_identity_parameters_reproduce_input_exactly(normalized_images):
  apply = jax.jit(augment.apply_affine)
  output = apply(normalized_images, _identity_params(4))
  np.testing.assert_array_equal(output, normalized_images)


def test_flip_mirrors_columns(normalized_images):
  params = _identity_params(4)._replace(flip=jnp.array([True, False] * 2))
  output = augment.apply_affine(normalized_images, params)
  np.testing.assert_array_equal(output[0::2], normalized_images[0::2, :, ::-1])
  np.testing.assert_array_equal(output[1::2], normalized_images[1::2])


def test_shift_moves_image_and_fills_black(normalized_images):
  params = _identity_params(4)._replace(
    shift=jnp.tile(jnp.array([[3.0, -2.0]]), (4, 1))
  )
  output = augment.apply_affine(normalized_images, params)
  np.testing.assert_array_equal(
    output[:, :-2, 3:], normalized_images[:, 2:, :-3]
  )
  assert (output[:, :, :3] == augment.BLACK).all()
  assert (output[:, -2:, :] == augment.BLACK).all()


def test_quarter_turn_is_counter_clockwise(normalized_images):
  params = _identity_params(4)._replace(angle=jnp.full(4, math.pi / 2))
  output = augment.apply_affine(normalized_images, params)
  expected = np.rot90(np.asarray(normalized_images), k=1, axes=(1, 2))
  np.testing.assert_allclose(output, expected, atol=1e-5)


def test_zoom_keeps_centre_and_fills_border_when_shrinking():
  image = jnp.ones((1, 32, 32, 1))
  params = _identity_params(1)._replace(scale=jnp.array([0.5]))
  output = augment.apply_affine(image, params)[0, :, :, 0]
  assert (output[12:20, 12:20] == 1.0).all()
  assert (output[:7] == augment.BLACK).all() and (
    output[-7:] == augment.BLACK
  ).all()


def test_sampled_parameters_follow_the_paper_ranges():
  params = augment.sample_affine_params(jax.random.key(0), 2000, 32, 32)
  assert np.abs(np.degrees(params.angle)).max() <= 5.0
  assert np.degrees(params.angle).std() > 2.5
  np.testing.assert_array_equal(params.shift, np.round(params.shift))
  assert np.abs(params.shift).max() == 3.0
  assert 0.9 <= params.scale.min() and params.scale.max() <= 1.1
  assert 0.45 < params.flip.mean() < 0.55


def test_augment_is_random_per_image_and_keeps_range(normalized_images):
  augment_jit = jax.jit(augment.augment)
  same = jnp.repeat(normalized_images[:1], 8, axis=0)
  output = augment_jit(jax.random.key(0), same)
  assert output.shape == same.shape and output.dtype == jnp.float32
  assert output.min() >= -1.0 and output.max() <= 1.0
  assert len({np.asarray(image).tobytes() for image in output}) == 8
  np.testing.assert_array_equal(output, augment_jit(jax.random.key(0), same))
  other = augment_jit(jax.random.key(1), same)
  assert not np.array_equal(output, other)


def test_augment_rejects_unnormalized_images():
  with pytest.raises(ValueError, match="normalize"):
    augment.augment(jax.random.key(0), jnp.zeros((2, 32, 32, 3), jnp.uint8))
  with pytest.raises(ValueError, match="normalize"):
    augment.augment(jax.random.key(0), jnp.zeros((32, 32, 3)))
