"""Character-level text data for MinGPT: loading, encoding and random windows.

As in Karpathy's "Let's build GPT" lecture, every distinct character of the
text is a token, the first 90% of the text (by position) is the training set
and the rest the validation set, and batches are random windows of the text.
By default the text is tiny Shakespeare, found as ``tinyshakespeare/input.txt``
in a data folder (see :mod:`examples.common.download` for the search order)
or downloaded there from karpathy/char-rnn; any UTF-8 text file can be given
instead.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from examples.common import download as download_lib

TINY_SHAKESPEARE_URL = (
  "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
  "tinyshakespeare/input.txt"
)
TINY_SHAKESPEARE_SHA256 = (
  "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
)
TINY_SHAKESPEARE_PATH = "tinyshakespeare/input.txt"
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
  download: bool = True,
  url: str = TINY_SHAKESPEARE_URL,
  sha256: str = TINY_SHAKESPEARE_SHA256,
) -> CharCorpus:
  """Loads a character corpus: ``text_file`` if given, else tiny Shakespeare.

  Tiny Shakespeare is looked for as ``tinyshakespeare/input.txt`` in the data
  folders of :func:`examples.common.download.data_dirs` and, if absent,
  downloaded into the first of them.

  Args:
    data_dir: An explicit data folder (the ``--data-dir`` option), or None.
    text_file: A UTF-8 text file to use instead of tiny Shakespeare; it takes
      precedence over the data folders.
    download: Whether to download tiny Shakespeare when it is not found.
    url: Where to download tiny Shakespeare from.
    sha256: Its expected SHA-256, checked after downloading.

  Returns:
    The corpus, split 90 / 10 by position (tiny Shakespeare: 1,003,854
    training and 111,540 validation characters, vocabulary 65).

  Raises:
    examples.common.download.DatasetNotFoundError: If tiny Shakespeare is
      needed but neither found nor downloadable.
    examples.common.download.ChecksumMismatchError: If the download is not
      the published file.
    FileNotFoundError: If ``text_file`` does not exist.
    ValueError: If the text is not UTF-8 or too short to split.
  """
  if text_file is None:
    text_file = download_lib.fetch(
      "Tiny Shakespeare",
      (TINY_SHAKESPEARE_PATH,),
      download_lib.RemoteFile(url, sha256, TINY_SHAKESPEARE_PATH),
      data_dir,
      download=download,
    )
  return CharCorpus.from_text(read_text_file(text_file))


@functools.partial(jax.jit, static_argnames=("batch_size", "block_size"))
def sample_batch(
  key: jax.Array, data: jax.Array, batch_size: int, block_size: int
) -> tuple[jax.Array, jax.Array]:
  """Draws random windows of consecutive tokens and their next tokens.

  Window starts are uniform in ``[0, len(data) - block_size)``, as in the
  lecture's ``get_batch``.

  Args:
    key: A JAX random key.
    data: One-dimensional integer token ids, e.g. ``jnp.asarray(corpus.train)``.
    batch_size: Number of windows (static).
    block_size: Window length (static).

  Returns:
    ``(x, y)``, both of shape ``(batch_size, block_size)`` and ``data``'s
    dtype: ``x[b] = data[s_b : s_b + block_size]`` and
    ``y[b] = data[s_b + 1 : s_b + block_size + 1]``.

  Raises:
    ValueError: If ``data`` is not a one-dimensional integer array, the sizes
      are not positive, or ``data`` is shorter than ``block_size + 1``.
  """
  for name, size in (("batch_size", batch_size), ("block_size", block_size)):
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
      raise ValueError(f"{name} must be a positive int, got {size!r}.")
  if data.ndim != 1 or not jnp.issubdtype(data.dtype, jnp.integer):
    raise ValueError(
      "data must be a one-dimensional array of integer token ids, got "
      f"{data.dtype} of shape {data.shape}."
    )
  if data.shape[0] < block_size + 1:
    raise ValueError(
      f"The text has {data.shape[0]} tokens, fewer than block_size + 1 = "
      f"{block_size + 1} needed for one window and its targets; use a longer "
      "text or a smaller block_size."
    )
  starts = jax.random.randint(key, (batch_size,), 0, data.shape[0] - block_size)

  def window(start: jax.Array, offset: int) -> jax.Array:
    return jax.lax.dynamic_slice(data, (start + offset,), (block_size,))

  x = jax.vmap(window, in_axes=(0, None))(starts, 0)
  y = jax.vmap(window, in_axes=(0, None))(starts, 1)
  chex.assert_shape([x, y], (batch_size, block_size))
  return x, y
