"""The character-level MinGPT of the EXAdam paper (section 3.2) in Flax NNX.

Karpathy's "Let's build GPT" details: no Q/K/V bias; scores scaled by
``n_embd ** -0.5`` (not ``head_size ** -0.5``); dropout on attention weights
and residual branches, not embeddings; N(0, 0.02^2) weights. The model holds
no random state: dropout masks come from the call's ``rngs``."""

from __future__ import annotations

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from examples.common import config as config_lib

_WEIGHT_INIT = jax.nn.initializers.normal(stddev=0.02)


@dataclasses.dataclass(frozen=True)
class GPTConfig:
  """Hyperparameters of :class:`MinGPT`; ``ValueError`` if one is invalid."""

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
  """The nearest head counts that divide ``n_embd``, as a fix to suggest."""
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
  in_features: int, out_features: int, config: GPTConfig, *, use_bias=True, rngs
) -> nnx.Linear:
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
    epsilon=1e-5,
    dtype=config.dtype,
    param_dtype=config.param_dtype,
    rngs=rngs,
  )


class CausalSelfAttention(nnx.Module):
  """Causal self-attention; head: ``dropout(softmax(Q K^T / sqrt(C))) V``."""

  def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
    width = config.n_embd
    self.num_heads = config.n_head
    self.score_scale = width**-0.5
    self.query = _linear(width, width, config, use_bias=False, rngs=rngs)
    self.key = _linear(width, width, config, use_bias=False, rngs=rngs)
    self.value = _linear(width, width, config, use_bias=False, rngs=rngs)
    self.attention_dropout = nnx.Dropout(config.dropout_rate)
    self.projection = _linear(width, width, config, rngs=rngs)
    self.output_dropout = nnx.Dropout(config.dropout_rate)

  def __call__(
    self, x: jax.Array, *, train: bool, rngs: nnx.Rngs | None
  ) -> jax.Array:
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
  """``dropout(W2 relu(W1 x + b1) + b2)`` with a 4x wider hidden layer."""

  def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
    width, hidden = config.n_embd, 4 * config.n_embd
    self.expand = _linear(width, hidden, config, rngs=rngs)
    self.contract = _linear(hidden, width, config, rngs=rngs)
    self.dropout = nnx.Dropout(config.dropout_rate)

  def __call__(
    self, x: jax.Array, *, train: bool, rngs: nnx.Rngs | None
  ) -> jax.Array:
    hidden = self.contract(jax.nn.relu(self.expand(x)))
    return self.dropout(hidden, deterministic=not train, rngs=rngs)


class TransformerBlock(nnx.Module):
  """Pre-LayerNorm block: ``x + attn(ln1(x))``, then ``x + ffn(ln2(x))``."""

  def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
    self.attention_norm = _layer_norm(config, rngs=rngs)
    self.attention = CausalSelfAttention(config, rngs=rngs)
    self.feed_forward_norm = _layer_norm(config, rngs=rngs)
    self.feed_forward = FeedForward(config, rngs=rngs)

  def __call__(
    self, x: jax.Array, *, train: bool, rngs: nnx.Rngs | None
  ) -> jax.Array:
    x = x + self.attention(self.attention_norm(x), train=train, rngs=rngs)
    return x + self.feed_forward(
      self.feed_forward_norm(x), train=train, rngs=rngs
    )


class MinGPT(nnx.Module):
  """Karpathy's character-level GPT; ``rngs.params`` (or ``default``) inits it.

  >>> import jax
  >>> from flax import nnx
  >>> model = MinGPT(GPT_PRESETS["tiny"], vocab_size=65, rngs=nnx.Rngs(0))
  >>> ids = jax.numpy.zeros((2, 10), jax.numpy.int32)
  >>> model(ids, train=True, rngs=nnx.Rngs(dropout=jax.random.key(1))).shape
  (2, 10, 65)
  """

  def __init__(self, config: GPTConfig, vocab_size: int, *, rngs: nnx.Rngs):
    if not isinstance(config, GPTConfig):
      raise TypeError(
        "MinGPT expects a GPTConfig (e.g. GPT_PRESETS['paper']), got "
        f"{type(config).__name__}."
      )
    config_lib.check_positive("vocab_size", vocab_size)
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
    self.lm_head = _linear(config.n_embd, vocab_size, config, rngs=rngs)

  def __call__(
    self,
    token_ids: jax.Array,
    *,
    train: bool = False,
    rngs: nnx.Rngs | None = None,
  ) -> jax.Array:
    """float32 next-token logits ``(batch, time, vocab_size)``, causally.

    ``token_ids``: ints in ``[0, vocab_size)`` (others give NaN, unchecked under
    ``jit``), ``1 <= time <= block_size``. ``train`` turns dropout on, its masks
    from the ``dropout`` stream of ``rngs``."""
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
  """Appends ``max_new_tokens`` sampled tokens to ``prompt_ids``, dropout off.

  Token ``t`` is drawn with ``fold_in(key, t)`` from ``softmax(logits /
  temperature)`` after the (at most ``block_size``) tokens before it, so key,
  model and prompt fix the result. ``prompt_ids`` is integer ``(batch, T0)``,
  ``T0 >= 1``; returns int32 ``(batch, T0 + max_new_tokens)``. ``ValueError``
  if an argument is malformed or out of range."""
  prompt_ids = jnp.asarray(prompt_ids)
  if prompt_ids.ndim != 2 or prompt_ids.shape[1] < 1:
    raise ValueError(
      "generate expects prompt_ids of shape (batch, T0) with T0 >= 1, got "
      f"shape {prompt_ids.shape}; add a batch axis or a start token."
    )
  if not jnp.issubdtype(prompt_ids.dtype, jnp.integer):
    raise ValueError(f"prompt_ids must be integers, got {prompt_ids.dtype}.")
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
  model = nnx.merge(graphdef, state)
  batch, prompt_length = prompt_ids.shape
  total_length = prompt_length + max_new_tokens
  window = min(model.config.block_size, total_length)
  tokens = jnp.zeros((batch, total_length), jnp.int32)
  tokens = tokens.at[:, :prompt_length].set(prompt_ids)

  def sample_at(position: jax.Array, tokens: jax.Array) -> jax.Array:
    # Causal attention keeps placeholders at/after `position` out of the logits.
    start = jnp.maximum(position - window, 0)
    context = jax.lax.dynamic_slice_in_dim(tokens, start, window, axis=1)
    last_logits = jax.lax.dynamic_index_in_dim(
      model(context), position - 1 - start, axis=1, keepdims=False
    )
    next_token = jax.random.categorical(
      jax.random.fold_in(key, position), last_logits / temperature, axis=-1
    )
    return tokens.at[:, position].set(next_token.astype(jnp.int32))

  return jax.lax.fori_loop(prompt_length, total_length, sample_at, tokens)
