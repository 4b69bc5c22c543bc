"""The character-level MinGPT of the EXAdam paper (section 3.2) in Flax NNX.

This is the GPT of Karpathy's "Let's build GPT" lecture: learned token and
position embeddings, ``n_layer`` pre-LayerNorm transformer blocks of causal
multi-head self-attention and a ReLU feed-forward net, a final LayerNorm and a
linear language-model head. With the paper's settings (vocabulary 65, 384
embedding features, 8 heads, 8 layers, context 256) it has 14,335,553
parameters.

Details kept from the lecture code:

* query, key and value projections have no bias; the attention scores are
  scaled by ``n_embd ** -0.5`` (not ``head_size ** -0.5``);
* dropout is applied to the attention weights, after the attention output
  projection and after the feed-forward net (not to the embeddings);
* Linear and Embedding weights are drawn from :math:`N(0, 0.02^2)`, biases
  start at zero and LayerNorm uses epsilon 1e-5.

Training and evaluation differ only in the ``train`` argument of the call:
with ``train=True`` dropout draws its masks from the ``dropout`` stream of the
``rngs`` passed to the call; the model holds no random state of its own.
:func:`generate` samples text autoregressively in one compiled loop.
"""

from __future__ import annotations

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from examples.common import config as config_lib

_WEIGHT_INIT = jax.nn.initializers.normal(stddev=0.02)
_LAYER_NORM_EPSILON = 1e-5
_FEED_FORWARD_EXPANSION = 4


@dataclasses.dataclass(frozen=True)
class GPTConfig:
  """Hyperparameters of :class:`MinGPT` (the vocabulary comes from the data).

  Each field's docstring is also its option's ``--help`` in the trainer
  (:mod:`examples.common.cli`), so it is written as plain sentences, each
  line ending one.

  Raises:
    ValueError: If a field is out of range or ``n_embd`` is not divisible by
      ``n_head`` (checked on construction), saying what to change.
  """

  block_size: int = 256
  """Longest context the model reads, in tokens (its learned positions)."""
  n_embd: int = 384
  """Embedding width, a multiple of the number of heads."""
  n_head: int = 8
  """Number of attention heads, each n_embd / n_head wide."""
  n_layer: int = 8
  """Number of transformer blocks."""
  dropout_rate: float = 0.2
  """Dropout probability, in [0, 1)."""
  dtype: str = "float32"
  """Computation dtype (bfloat16 for mixed precision)."""
  param_dtype: str = "float32"
  """Dtype of the parameters."""

  def __post_init__(self) -> None:
    for name in ("block_size", "n_embd", "n_head", "n_layer"):
      config_lib.check_positive(name, getattr(self, name))
    if self.n_embd % self.n_head:
      raise ValueError(
        f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}) "
        "so that every head has the same width; "
        f"{_head_counts_near(self.n_embd, self.n_head)}."
      )
    rate = self.dropout_rate
    if isinstance(rate, bool) or not isinstance(rate, int | float):
      raise ValueError(f"dropout_rate must be a float in [0, 1), got {rate!r}.")
    if not 0.0 <= rate < 1.0:
      raise ValueError(f"dropout_rate must lie in [0, 1), got {rate!r}.")
    for name in ("dtype", "param_dtype"):
      object.__setattr__(
        self, name, config_lib.float_dtype(name, getattr(self, name)).name
      )


def _head_counts_near(n_embd: int, n_head: int) -> str:
  """How to fix an ``n_head`` that does not divide ``n_embd``: the nearest
  head counts that do (the next larger one if below twice ``n_head``)."""
  below = max(d for d in range(1, min(n_head, n_embd) + 1) if n_embd % d == 0)
  above = [
    d for d in range(n_head + 1, min(2 * n_head, n_embd) + 1) if n_embd % d == 0
  ][:1]
  counts = " or ".join(str(count) for count in [below, *above])
  return f"use n_head {counts}, or an n_embd that is a multiple of {n_head}"


GPT_PRESETS: dict[str, GPTConfig] = {
  "paper": GPTConfig(),
  "tiny": GPTConfig(block_size=64, n_embd=64, n_head=4, n_layer=2),
}
"""Named configurations: the paper's model and a tiny one for CPU runs."""


def _linear(
  in_features: int,
  out_features: int,
  config: GPTConfig,
  *,
  use_bias: bool,
  rngs: nnx.Rngs,
) -> nnx.Linear:
  """A Linear layer with Karpathy's initialisation: N(0, 0.02^2), zero bias."""
  return nnx.Linear(
    in_features,
    out_features,
    use_bias=use_bias,
    kernel_init=_WEIGHT_INIT,
    bias_init=jax.nn.initializers.zeros,
    dtype=config.dtype,
    param_dtype=config.param_dtype,
    rngs=rngs,
  )


def _layer_norm(config: GPTConfig, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(
    config.n_embd,
    epsilon=_LAYER_NORM_EPSILON,
    dtype=config.dtype,
    param_dtype=config.param_dtype,
    rngs=rngs,
  )


class CausalSelfAttention(nnx.Module):
  """Multi-head causal self-attention with dropout on the attention weights.

  For each head with queries :math:`Q`, keys :math:`K` and values :math:`V`
  (``T x head_size`` each), computes
  :math:`\\mathrm{dropout}(\\mathrm{softmax}(\\mathrm{mask}(Q K^T / \\sqrt{C}))) V`
  with :math:`C` = ``n_embd`` and a mask that hides later positions, then
  concatenates the heads and applies the output projection and dropout.

  Args:
    config: supplies ``n_embd``, ``n_head``, the dropout rate and dtypes.
    rngs: random streams for parameter initialisation and dropout.
  """

  def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
    width = config.n_embd
    self.num_heads = config.n_head
    self.score_scale = width**-0.5
    self.query = _linear(width, width, config, use_bias=False, rngs=rngs)
    self.key = _linear(width, width, config, use_bias=False, rngs=rngs)
    self.value = _linear(width, width, config, use_bias=False, rngs=rngs)
    self.attention_dropout = nnx.Dropout(config.dropout_rate)
    self.projection = _linear(width, width, config, use_bias=True, rngs=rngs)
    self.output_dropout = nnx.Dropout(config.dropout_rate)

  def __call__(
    self, x: jax.Array, *, train: bool, rngs: nnx.Rngs | None
  ) -> jax.Array:
    """Maps ``(batch, time, n_embd)`` to the same shape."""
    batch, time, width = x.shape
    head_shape = (batch, time, self.num_heads, width // self.num_heads)
    query = self.query(x).reshape(head_shape)
    key = self.key(x).reshape(head_shape)
    value = self.value(x).reshape(head_shape)
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key) * self.score_scale
    causal = jnp.tril(jnp.ones((time, time), dtype=bool))
    scores = jnp.where(causal, scores.astype(jnp.float32), -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1).astype(value.dtype)
    weights = self.attention_dropout(
      weights, deterministic=not train, rngs=rngs
    )
    heads = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
    return self.output_dropout(
      self.projection(heads.reshape(batch, time, width)),
      deterministic=not train,
      rngs=rngs,
    )


class FeedForward(nnx.Module):
  """``dropout(W2 relu(W1 x + b1) + b2)`` with a 4x wider hidden layer.

  Args:
    config: supplies ``n_embd``, the dropout rate and dtypes.
    rngs: random streams for parameter initialisation and dropout.
  """

  def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
    hidden = _FEED_FORWARD_EXPANSION * config.n_embd
    self.expand = _linear(
      config.n_embd, hidden, config, use_bias=True, rngs=rngs
    )
    self.contract = _linear(
      hidden, config.n_embd, config, use_bias=True, rngs=rngs
    )
    self.dropout = nnx.Dropout(config.dropout_rate)

  def __call__(
    self, x: jax.Array, *, train: bool, rngs: nnx.Rngs | None
  ) -> jax.Array:
    """Maps ``(batch, time, n_embd)`` to the same shape."""
    hidden = self.contract(jax.nn.relu(self.expand(x)))
    return self.dropout(hidden, deterministic=not train, rngs=rngs)


class TransformerBlock(nnx.Module):
  """Pre-LayerNorm block: ``x + attn(ln1(x))``, then ``x + ffn(ln2(x))``.

  Args:
    config: the model's hyperparameters.
    rngs: random streams for parameter initialisation and dropout.
  """

  def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
    self.attention_norm = _layer_norm(config, rngs=rngs)
    self.attention = CausalSelfAttention(config, rngs=rngs)
    self.feed_forward_norm = _layer_norm(config, rngs=rngs)
    self.feed_forward = FeedForward(config, rngs=rngs)

  def __call__(
    self, x: jax.Array, *, train: bool, rngs: nnx.Rngs | None
  ) -> jax.Array:
    """Maps ``(batch, time, n_embd)`` to the same shape."""
    x = x + self.attention(self.attention_norm(x), train=train, rngs=rngs)
    return x + self.feed_forward(
      self.feed_forward_norm(x), train=train, rngs=rngs
    )


class MinGPT(nnx.Module):
  """Karpathy's character-level GPT, as trained in the EXAdam paper.

  Example::

    >>> import jax
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> model = MinGPT(GPT_PRESETS["tiny"], vocab_size=65, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 10), jnp.int32)).shape
    (2, 10, 65)
    >>> dropout = nnx.Rngs(dropout=jax.random.key(1))
    >>> model(jnp.zeros((2, 10), jnp.int32), train=True, rngs=dropout).shape
    (2, 10, 65)

  Args:
    config: the architecture; see :class:`GPTConfig` and :data:`GPT_PRESETS`.
    vocab_size: number of distinct tokens (characters of the corpus).
    rngs: random streams; ``params`` (or ``default``) initialises the
      parameters.

  Raises:
    TypeError: if ``config`` is not a :class:`GPTConfig`.
    ValueError: if ``vocab_size`` is not a positive int.
  """

  def __init__(self, config: GPTConfig, vocab_size: int, *, rngs: nnx.Rngs):
    if not isinstance(config, GPTConfig):
      raise TypeError(
        "MinGPT expects a GPTConfig (e.g. GPT_PRESETS['paper']), got "
        f"{type(config).__name__}."
      )
    if (
      isinstance(vocab_size, bool)
      or not isinstance(vocab_size, int)
      or vocab_size < 1
    ):
      raise ValueError(
        f"MinGPT's vocab_size must be a positive int, got {vocab_size!r}."
      )
    self.config = config
    self.vocab_size = vocab_size
    embed = functools.partial(
      nnx.Embed,
      features=config.n_embd,
      embedding_init=_WEIGHT_INIT,
      dtype=config.dtype,
      param_dtype=config.param_dtype,
      rngs=rngs,
    )
    self.token_embedding = embed(vocab_size)
    self.position_embedding = embed(config.block_size)
    self.blocks = nnx.List(
      [TransformerBlock(config, rngs=rngs) for _ in range(config.n_layer)]
    )
    self.final_norm = _layer_norm(config, rngs=rngs)
    self.lm_head = _linear(
      config.n_embd, vocab_size, config, use_bias=True, rngs=rngs
    )

  def __call__(
    self,
    token_ids: jax.Array,
    *,
    train: bool = False,
    rngs: nnx.Rngs | None = None,
  ) -> jax.Array:
    """Computes next-token logits at every position.

    Args:
      token_ids: integer array of shape ``(batch, time)`` with
        ``1 <= time <= block_size`` and values in ``[0, vocab_size)`` (values
        outside that range cannot be checked under ``jit`` and give NaN).
      train: apply dropout, as in training.
      rngs: with ``train=True``, the ``dropout`` stream for the masks.

    Returns:
      float32 logits of shape ``(batch, time, vocab_size)``; position ``t``
      depends only on ``token_ids[:, :t + 1]``.

    Raises:
      AssertionError: if ``token_ids`` is not a 2-D integer array.
      ValueError: if ``time`` is 0 or exceeds ``block_size``.
    """
    chex.assert_rank(token_ids, 2)
    chex.assert_type(token_ids, int)
    batch, time = token_ids.shape
    if not 1 <= time <= self.config.block_size:
      raise ValueError(
        f"MinGPT got a context of {time} tokens, but it reads between 1 and "
        f"block_size={self.config.block_size}; crop the input to its last "
        f"{self.config.block_size} tokens."
      )
    x = self.token_embedding(token_ids) + self.position_embedding(
      jnp.arange(time)
    )
    for block in self.blocks:
      x = block(x, train=train, rngs=rngs)
    logits = self.lm_head(self.final_norm(x)).astype(jnp.float32)
    chex.assert_shape(logits, (batch, time, self.vocab_size))
    return logits


def generate(
  model: MinGPT,
  key: jax.Array,
  prompt_ids: jax.Array,
  max_new_tokens: int,
  temperature: float = 1.0,
) -> jax.Array:
  """Samples a continuation of ``prompt_ids`` token by token.

  At each position :math:`t \\ge T_0` the model reads the last
  ``block_size`` tokens before :math:`t` (all of them while fewer exist) and
  token :math:`t` is drawn from
  :math:`\\mathrm{softmax}(\\ell_{t-1} / \\tau)`, where :math:`\\ell_{t-1}` are
  the logits at the last context position and :math:`\\tau` the temperature,
  using the key ``jax.random.fold_in(key, t)``. Dropout is off. All
  tokens are produced by a single compiled ``lax.fori_loop`` over a
  fixed-size token buffer; calls with the same shapes reuse the compilation.

  Args:
    model: the language model.
    key: PRNG key; the same key, model and prompt give the same tokens.
    prompt_ids: integer array of shape ``(batch, T0)`` with ``T0 >= 1``.
    max_new_tokens: number of tokens to append, ``>= 0``.
    temperature: positive softmax temperature; lower is greedier.

  Returns:
    int32 array of shape ``(batch, T0 + max_new_tokens)`` that starts with
    ``prompt_ids``.

  Raises:
    ValueError: if ``prompt_ids`` is not a non-empty 2-D integer array,
      ``max_new_tokens`` is negative or ``temperature`` is not positive.
  """
  prompt_ids = jnp.asarray(prompt_ids)
  if prompt_ids.ndim != 2 or prompt_ids.shape[1] < 1:
    raise ValueError(
      "generate expects prompt_ids of shape (batch, T0) with T0 >= 1, got "
      f"shape {prompt_ids.shape}; add a batch axis or a start token."
    )
  if not jnp.issubdtype(prompt_ids.dtype, jnp.integer):
    raise ValueError(
      f"generate expects integer prompt_ids (token indices), got {prompt_ids.dtype}."
    )
  if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
    raise ValueError(f"max_new_tokens must be an int, got {max_new_tokens!r}.")
  if max_new_tokens < 0:
    raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}.")
  if not temperature > 0:
    raise ValueError(f"temperature must be positive, got {temperature!r}.")
  graphdef, state = nnx.split(model)
  return _sample_tokens(
    graphdef,
    state,
    key,
    prompt_ids.astype(jnp.int32),
    jnp.float32(temperature),
    max_new_tokens=max_new_tokens,
  )


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens"))
def _sample_tokens(
  graphdef: nnx.GraphDef,
  state: nnx.State,
  key: jax.Array,
  prompt_ids: jax.Array,
  temperature: jax.Array,
  *,
  max_new_tokens: int,
) -> jax.Array:
  """The compiled sampling loop of :func:`generate` (arguments validated there)."""
  model = nnx.merge(graphdef, state)
  batch, prompt_length = prompt_ids.shape
  total_length = prompt_length + max_new_tokens
  window = min(model.config.block_size, total_length)
  tokens = jnp.zeros((batch, total_length), jnp.int32)
  tokens = tokens.at[:, :prompt_length].set(prompt_ids)

  def sample_at(position: jax.Array, tokens: jax.Array) -> jax.Array:
    # The window starts at 0 until `position` exceeds it; positions >= `position`
    # inside it hold placeholders that causal attention keeps from the logits read.
    start = jnp.maximum(position - window, 0)
    context = jax.lax.dynamic_slice_in_dim(tokens, start, window, axis=1)
    logits = model(context)
    last_logits = jax.lax.dynamic_index_in_dim(
      logits, position - 1 - start, axis=1, keepdims=False
    )
    next_token = jax.random.categorical(
      jax.random.fold_in(key, position), last_logits / temperature, axis=-1
    )
    return tokens.at[:, position].set(next_token.astype(jnp.int32))

  return jax.lax.fori_loop(prompt_length, total_length, sample_at, tokens)
