"""Character-level text data for MinGPT: loading and encoding.

As in Karpathy's "Let's build GPT" lecture, every distinct character of the
text is a token, the first 90% of the text (by position) is the training set
and the rest the validation set. By default the text is tiny Shakespeare
(public domain), shipped beside this module as ``tinyshakespeare.txt`` and
checked against its published SHA-256; a copy found as
``tinyshakespeare/input.txt`` in a data folder (see
:mod:`examples.common.download` for the search order) is used instead and
checked the same way. Any UTF-8 text file can be given instead.
"""

from __future__ import annotations

import dataclasses
import functools
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
  """Returns the Unicode code points of ``text`` as a ``uint32`` array."""
  return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


@dataclasses.dataclass(frozen=True, eq=False)
class CharCorpus:
  """A text's character vocabulary and its encoded train / validation parts.

  Token ``i`` is the ``i``-th character of ``chars``, the text's distinct
  characters sorted by code point.

  Attributes:
    chars: The vocabulary, sorted unique characters.
    train: ``int32`` token ids of the first 90% of the text.
    val: ``int32`` token ids of the remaining 10%.
  """

  chars: tuple[str, ...]
  train: np.ndarray
  val: np.ndarray

  def __post_init__(self):
    """Checks the vocabulary and the token arrays.

    Raises:
      ValueError: If ``chars`` are not distinct single characters in
        ascending order, or ``train`` / ``val`` are not one-dimensional
        ``int32`` arrays of ids in ``[0, vocab_size)``.
    """
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
    """Builds the vocabulary of ``text`` and splits it by position.

    Args:
      text: The whole corpus.
      train_fraction: The share of characters, from the start, that forms the
        training set; the training set has ``int(train_fraction * len(text))``
        characters.

    Returns:
      The corpus.

    Raises:
      ValueError: If ``train_fraction`` is not in ``(0, 1)`` or either part
        would be empty.
    """
    if not 0.0 < train_fraction < 1.0:
      raise ValueError(
        f"train_fraction must lie strictly between 0 and 1, got "
        f"{train_fraction!r}."
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
    return cls(
      chars=tuple(chr(code_point) for code_point in vocabulary),
      train=ids[:num_train],
      val=ids[num_train:],
    )

  @property
  def vocab_size(self) -> int:
    """The number of distinct characters."""
    return len(self.chars)

  @property
  def default_prompt(self) -> str:
    """What a sample continues by default: a newline, if the text has one."""
    return "\n" if "\n" in self.chars else self.chars[0]

  @functools.cached_property
  def _sorted_code_points(self) -> np.ndarray:
    """The vocabulary's code points, ascending (token id order)."""
    return np.array([ord(char) for char in self.chars], dtype=np.uint32)

  def encode(self, text: str) -> np.ndarray:
    """Maps each character of ``text`` to its token id.

    Args:
      text: A string made of vocabulary characters.

    Returns:
      ``int32`` array of shape ``(len(text),)``.

    Raises:
      ValueError: If ``text`` holds characters outside the vocabulary.
    """
    code_points = _code_points(text)
    vocabulary = self._sorted_code_points
    ids = np.searchsorted(vocabulary, code_points)
    known = (ids < len(vocabulary)) & (
      vocabulary[np.minimum(ids, len(vocabulary) - 1)] == code_points
    )
    if not known.all():
      unknown = sorted({chr(code_point) for code_point in code_points[~known]})
      raise ValueError(
        f"Cannot encode characters outside the vocabulary: {unknown!r}. The "
        f"vocabulary has {self.vocab_size} characters, those of the training "
        "text."
      )
    return ids.astype(np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray | jax.Array) -> str:
    """Maps token ids back to text.

    Args:
      ids: A one-dimensional sequence of integer token ids.

    Returns:
      The decoded string.

    Raises:
      ValueError: If ``ids`` is not one-dimensional and integer, or holds an id
        outside ``[0, vocab_size)``.
    """
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
  """Checks that both parts of the text hold a window and its targets.

  Raises:
    ValueError: If the training or validation part is shorter than
      ``block_size + 1`` characters.
  """
  for name, ids in (("training", corpus.train), ("validation", corpus.val)):
    if len(ids) < block_size + 1:
      raise ValueError(
        f"The {name} part of the text has {len(ids)} characters, fewer than "
        f"block_size + 1 = {block_size + 1}; use a longer text (the validation "
        "part is its last 10%) or a smaller --block-size."
      )


def read_text_file(path: download_lib.PathLike) -> str:
  """Reads a UTF-8 text file.

  Args:
    path: The file.

  Returns:
    Its content.

  Raises:
    FileNotFoundError: If the file does not exist.
    ValueError: If it is not valid UTF-8.
  """
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise FileNotFoundError(
      f"Text file {path} does not exist or is not a file; pass an existing "
      "UTF-8 text file."
    )
  try:
    return path.read_text(encoding="utf-8")
  except UnicodeDecodeError as error:
    raise ValueError(
      f"{path} is not valid UTF-8 text ({error}); convert it to UTF-8."
    ) from error


def load_text(
  data_dir: download_lib.PathLike | None = None,
  text_file: download_lib.PathLike | None = None,
  *,
  verify: bool = True,
) -> CharCorpus:
  """Loads a character corpus: ``text_file`` if given, else tiny Shakespeare.

  Tiny Shakespeare is looked for as ``tinyshakespeare/input.txt`` in the data
  folders of :func:`examples.common.download.data_dirs`, and otherwise read
  from the copy shipped beside this module; either is checked against the
  published SHA-256 (once per file version, see
  :func:`examples.common.download.verify_once`).

  Args:
    data_dir: An explicit data folder (the ``--data-dir`` option), or None.
    text_file: A UTF-8 text file to use instead of tiny Shakespeare.
    verify: Whether to check tiny Shakespeare's SHA-256.

  Returns:
    The corpus, split 90 / 10 by position (tiny Shakespeare: 1,003,854
    training and 111,540 validation characters, vocabulary 65).

  Raises:
    examples.common.download.ChecksumMismatchError: If a tiny Shakespeare
      file is not the published one.
    FileNotFoundError: If ``text_file`` does not exist.
    ValueError: If the text is not UTF-8 or too short to split.
  """
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
  return CharCorpus.from_text(read_text_file(text_file))
