"""Tests for examples.mingpt.data: character corpus and random windows."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from examples.common import download
from examples.mingpt import data, train

TEXT = "hello world, hello jax!\n" * 5


def test_corpus_vocabulary_and_split():
  corpus = data.CharCorpus.from_text(TEXT)
  assert corpus.chars == tuple(sorted(set(TEXT)))
  assert corpus.vocab_size == len(set(TEXT))
  assert len(corpus.train) == int(0.9 * len(TEXT)) == 108
  assert len(corpus.val) == len(TEXT) - 108
  assert corpus.train.dtype == np.int32 and corpus.val.dtype == np.int32
  np.testing.assert_array_equal(
    np.concatenate([corpus.train, corpus.val]), corpus.encode(TEXT)
  )
  assert corpus.decode(corpus.train) == TEXT[:108]
  assert corpus.decode(jnp.asarray(corpus.val)) == TEXT[108:]


def test_encode_decode_round_trip_non_ascii():
  text = "Grüße, 世界! 🙂 naïve café.\n" * 2
  corpus = data.CharCorpus.from_text(text)
  ids = corpus.encode(text)
  assert ids.dtype == np.int32 and ids.shape == (len(text),)
  assert corpus.decode(ids) == text
  assert corpus.chars == tuple(sorted(set(text)))
  assert corpus.decode(corpus.encode("")) == ""


def test_encode_rejects_unknown_characters():
  corpus = data.CharCorpus.from_text(TEXT)
  with pytest.raises(ValueError, match=r"\['Z', 'q'\]"):
    corpus.encode("hello qZq")


@pytest.mark.parametrize(
  ("ids", "match"),
  [([0, 99], r"\[0, 14\).*\[99\]"), ([-1], r"\[-1\]"), ([[0]], "one-dim")],
)
def test_decode_rejects_bad_ids(ids, match):
  corpus = data.CharCorpus.from_text(TEXT)
  assert corpus.vocab_size == 14
  with pytest.raises(ValueError, match=match):
    corpus.decode(ids)


def test_corpus_rejects_inconsistent_fields():
  ids = np.zeros(3, np.int32)
  with pytest.raises(ValueError, match="sorted"):
    data.CharCorpus(chars=("b", "a"), train=ids, val=ids)
  with pytest.raises(ValueError, match="int32"):
    data.CharCorpus(chars=("a",), train=ids.astype(np.int64), val=ids)
  with pytest.raises(ValueError, match=r"\[0, 1\)"):
    data.CharCorpus(chars=("a",), train=ids + 1, val=ids)


def test_too_short_text_is_rejected():
  for text in ("", "a"):
    with pytest.raises(ValueError, match="too few"):
      data.CharCorpus.from_text(text)
  two = data.CharCorpus.from_text("ab")
  assert two.decode(two.train) == "a" and two.decode(two.val) == "b"
  with pytest.raises(ValueError, match="train_fraction"):
    data.CharCorpus.from_text(TEXT, train_fraction=1.0)


def test_text_file_takes_precedence(tmp_path, isolated_data_env):
  shakespeare = tmp_path / "tinyshakespeare" / "input.txt"
  shakespeare.parent.mkdir()
  shakespeare.write_text("From the data folder.\n" * 3)
  own = tmp_path / "own.txt"
  own.write_text(TEXT, encoding="utf-8")
  corpus = data.load_text(tmp_path, own)
  assert corpus.decode(np.concatenate([corpus.train, corpus.val])) == TEXT
  from_folder = data.load_text(tmp_path, verify=False)
  assert from_folder.decode(from_folder.train).startswith("From the data")


def test_bad_text_files_are_rejected(tmp_path, isolated_data_env):
  with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
    data.load_text(text_file=tmp_path / "missing.txt")
  latin1 = tmp_path / "latin1.txt"
  latin1.write_bytes("café au lait, s'il vous plaît\n".encode("latin-1"))
  with pytest.raises(ValueError, match="UTF-8"):
    data.load_text(text_file=latin1)


def test_modified_tiny_shakespeare_copy_is_rejected(
  tmp_path, isolated_data_env
):
  copy = tmp_path / "tinyshakespeare" / "input.txt"
  copy.parent.mkdir()
  copy.write_text(TEXT)
  with pytest.raises(download.ChecksumMismatchError, match="--text FILE"):
    data.load_text(tmp_path)


def test_verified_copy_in_data_dir_is_used(tmp_path, isolated_data_env):
  copy = tmp_path / "tinyshakespeare" / "input.txt"
  copy.parent.mkdir()
  copy.write_bytes(data.EMBEDDED_TINY_SHAKESPEARE.read_bytes())
  assert data.load_text(tmp_path).vocab_size == 65
  assert (isolated_data_env / "verified.json").is_file()


def test_embedded_tiny_shakespeare_split(isolated_data_env):
  assert (
    download.sha256_of_file(data.EMBEDDED_TINY_SHAKESPEARE)
    == data.TINY_SHAKESPEARE_SHA256
  )
  corpus = data.load_text()
  assert corpus.vocab_size == 65
  assert len(corpus.train) == 1_003_854
  assert len(corpus.val) == 111_540
  assert corpus.decode(corpus.train[:14]) == "First Citizen:"


def test_sample_batch_windows_and_targets():
  data_ids = jnp.arange(100, dtype=jnp.int32)
  x, y = train.sample_batch(jax.random.key(0), data_ids, 16, 10)
  assert x.shape == y.shape == (16, 10)
  assert x.dtype == y.dtype == jnp.int32
  np.testing.assert_array_equal(x, x[:, :1] + jnp.arange(10))
  np.testing.assert_array_equal(y, x + 1)
  x_again, _ = train.sample_batch(jax.random.key(0), data_ids, 16, 10)
  np.testing.assert_array_equal(x, x_again)
  x_other, _ = train.sample_batch(jax.random.key(1), data_ids, 16, 10)
  assert not np.array_equal(x, x_other)


def test_sample_batch_covers_every_start():
  block_size = 5
  data_ids = jnp.arange(block_size + 3, dtype=jnp.int32)
  x, y = train.sample_batch(jax.random.key(0), data_ids, 300, block_size)
  assert set(np.asarray(x[:, 0]).tolist()) == {0, 1, 2}
  assert int(y.max()) == block_size + 2
  shortest = jnp.arange(block_size + 1, dtype=jnp.int32)
  x, y = train.sample_batch(jax.random.key(0), shortest, 4, block_size)
  np.testing.assert_array_equal(y, jnp.tile(shortest[1:], (4, 1)))


def test_check_corpus_needs_a_window_in_each_part():
  corpus = data.CharCorpus.from_text(TEXT)  # 108 training, 12 validation ids
  data.check_corpus(corpus, block_size=11)
  with pytest.raises(ValueError, match=r"validation part .* 12 .* = 13"):
    data.check_corpus(corpus, block_size=12)
  with pytest.raises(ValueError, match="training part"):
    data.check_corpus(data.CharCorpus.from_text("ab" * 5, 0.1), block_size=1)
