"""Character-level text data for MinGPT, as in Karpathy's lecture: each distinct
character is a token; the first 90% of the text trains, the rest validates."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence

import jax
import numpy as np

from examples.common import download as download_lib

TINY_SHAKESPEARE_SHA256 = (
  "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
)
TINY_SHAKESPEARE_PATH = "tinyshakespeare/input.txt"
EMBEDDED_TINY_SHAKESPEARE = pathlib.Path(__file__).with_name(
  "tinyshakespeare.txt"
)
"""The copy shipped with the examples (the file of karpathy/char-rnn)."""
TRAIN_FRACTION = 0.9


def _code_points(text: str) -> np.ndarray:
  return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


@dataclasses.dataclass(frozen=True, eq=False)
class CharCorpus:
  """A text's character vocabulary and its encoded train / validation parts.

  ``chars``: the distinct characters by code point (token ``i`` is
  ``chars[i]``); ``train`` / ``val``: 1-D ``int32`` ids of the first 90% / the
  rest. ``ValueError`` if the fields do not have these forms."""

  chars: tuple[str, ...]
  train: np.ndarray
  val: np.ndarray

  def __post_init__(self):
    if any(len(char) != 1 for char in self.chars) or list(self.chars) != sorted(
      set(self.chars)
    ):
      raise ValueError(
        "chars must be distinct single characters sorted by code point; build "
        "the corpus with CharCorpus.from_text."
      )
    for name, ids in (("train", self.train), ("val", self.val)):
      if not isinstance(ids, np.ndarray) or ids.dtype != np.int32:
        raise ValueError(f"{name} must be an int32 numpy array.")
      if ids.ndim != 1 or (
        ids.size and (ids.min() < 0 or ids.max() >= len(self.chars))
      ):
        raise ValueError(
          f"{name} must be one-dimensional with ids in [0, "
          f"{len(self.chars)}); got shape {ids.shape}."
        )

  @classmethod
  def from_text(
    cls, text: str, train_fraction: float = TRAIN_FRACTION
  ) -> CharCorpus:
    """Builds the vocabulary; the first ``int(train_fraction * len(text))``
    characters train (``ValueError`` if either part would be empty)."""
    if not 0.0 < train_fraction < 1.0:
      raise ValueError(
        f"train_fraction must be in (0, 1), got {train_fraction}."
      )
    num_train = int(train_fraction * len(text))
    if num_train == 0 or num_train == len(text):
      raise ValueError(
        f"The text has {len(text)} characters, too few to split into "
        f"non-empty training and validation parts at {train_fraction}; use a "
        "longer text."
      )
    code_points = _code_points(text)
    vocabulary = np.unique(code_points)
    ids = np.searchsorted(vocabulary, code_points).astype(np.int32)
    chars = tuple(chr(code_point) for code_point in vocabulary)
    return cls(chars, ids[:num_train], ids[num_train:])

  @property
  def vocab_size(self) -> int:
    """The number of distinct characters."""
    return len(self.chars)

  @property
  def default_prompt(self) -> str:
    """What a sample continues by default: a newline, if the text has one."""
    return "\n" if "\n" in self.chars else self.chars[0]

  def encode(self, text: str) -> np.ndarray:
    """The ``int32`` token ids of ``text``; ``ValueError`` for unknown ones."""
    code_points = _code_points(text)
    vocabulary = np.array([ord(char) for char in self.chars], dtype=np.uint32)
    ids = np.searchsorted(vocabulary, code_points)
    known = np.isin(code_points, vocabulary)
    if not known.all():
      unknown = sorted({chr(code_point) for code_point in code_points[~known]})
      raise ValueError(
        f"Cannot encode characters outside the vocabulary: {unknown!r}. The "
        f"vocabulary has {self.vocab_size} characters, those of the training "
        "text."
      )
    return ids.astype(np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray | jax.Array) -> str:
    """The text of 1-D integer token ids; ``ValueError`` for other ids."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
      raise ValueError(
        "decode expects a one-dimensional sequence of integer token ids, got "
        f"{ids.dtype} of shape {ids.shape}."
      )
    bad = (ids < 0) | (ids >= self.vocab_size)
    if bad.any():
      raise ValueError(
        f"Token ids must lie in [0, {self.vocab_size}); got "
        f"{sorted(set(ids[bad].tolist()))}."
      )
    return "".join(self.chars[token] for token in ids.tolist())


def check_corpus(corpus: CharCorpus, block_size: int) -> None:
  """``ValueError`` unless both parts hold ``block_size + 1`` characters."""
  for name, ids in (("training", corpus.train), ("validation", corpus.val)):
    if len(ids) < block_size + 1:
      raise ValueError(
        f"The {name} part of the text has {len(ids)} characters, fewer than "
        f"block_size + 1 = {block_size + 1}; use a longer text (the validation "
        "part is its last 10%) or a smaller --block-size."
      )


def load_text(
  data_dir: download_lib.PathLike | None = None,
  text_file: download_lib.PathLike | None = None,
  *,
  verify: bool = True,
) -> CharCorpus:
  """Loads UTF-8 ``text_file`` if given, else tiny Shakespeare, split 90 / 10.

  Tiny Shakespeare (public domain) is ``tinyshakespeare/input.txt`` in the first
  of :func:`examples.common.download.data_dirs` (``data_dir``, if not None,
  first) that has it, else the copy shipped here; ``verify`` checks its
  published SHA-256 (``ChecksumMismatchError``). ``FileNotFoundError`` for a
  missing ``text_file``; ``ValueError`` for text not UTF-8 or too short."""
  if text_file is None:
    text_file = (
      download_lib.find_local((TINY_SHAKESPEARE_PATH,), data_dir)
      or EMBEDDED_TINY_SHAKESPEARE
    )
    if verify:
      download_lib.verify_once(
        text_file,
        TINY_SHAKESPEARE_SHA256,
        accept_hint="To train on a different text on purpose, pass it with "
        "--text FILE (or turn the check off with --no-verify-data).",
      )
  path = pathlib.Path(text_file).expanduser()
  if not path.is_file():
    raise FileNotFoundError(
      f"Text file {path} does not exist or is not a file; pass an existing "
      "UTF-8 text file."
    )
  try:
    text = path.read_text(encoding="utf-8")
  except UnicodeDecodeError as error:
    raise ValueError(
      f"{path} is not valid UTF-8 text ({error}); convert it to UTF-8."
    ) from error
  return CharCorpus.from_text(text)
