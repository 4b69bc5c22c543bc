"""Tests of the Flax NNX models: the CIFAR-10 CNN and the character MinGPT.

Keys use JAX's RBG PRNG: XLA:CPU takes about a second to compile threefry
sampling for each distinct parameter shape, which would dominate these tests.
"""

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from examples.cifar10 import model as cnn_lib
from examples.mingpt import model as gpt_lib

# A GPT small enough that every test compiles in well under a second.
SMALL_GPT = gpt_lib.GPTConfig(
  vocab_size=11, block_size=4, n_embd=16, n_head=2, n_layer=2, dropout_rate=0.2
)


def _key(seed: int) -> jax.Array:
  return jax.random.key(seed, impl="unsafe_rbg")


def _rngs(seed: int) -> nnx.Rngs:
  return nnx.Rngs(_key(seed))


def _num_params(module: nnx.Module) -> int:
  """Number of trainable (nnx.Param) scalars, as PyTorch counts parameters."""
  return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _batch_stats(module: nnx.Module) -> list[np.ndarray]:
  return [
    np.asarray(x) for x in jax.tree.leaves(nnx.state(module, nnx.BatchStat))
  ]


def _modes(module: nnx.Module) -> set[tuple[str, bool]]:
  """The (attribute, value) pairs that ``train()``/``eval()`` switch."""
  modes = set()
  for _, sub in nnx.iter_modules(module):
    if isinstance(sub, nnx.Dropout):
      modes.add(("deterministic", sub.deterministic))
    elif isinstance(sub, nnx.BatchNorm):
      modes.add(("use_running_average", sub.use_running_average))
  return modes


def _images(seed: int, batch: int = 4) -> jax.Array:
  return jax.random.uniform(
    _key(seed), (batch, *cnn_lib.IMAGE_SHAPE), minval=-1.0, maxval=1.0
  )


def _output_shape(module: nnx.Module, *input_shape: int) -> tuple[int, ...]:
  """Output shape of ``module`` on a float32 input, without computing it."""
  inputs = jax.ShapeDtypeStruct(input_shape, jnp.float32)
  return nnx.eval_shape(lambda m, x: m(x), module, inputs).shape


@nnx.jit
def _forward(model: nnx.Module, inputs: jax.Array) -> jax.Array:
  return model(inputs)


@nnx.jit
def _loss_without_dropout(model, inputs, labels):
  """Cross-entropy with dropout off and batch norm as in training mode."""
  logits = nnx.view(model, deterministic=True)(inputs)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _train_with_adam(model, inputs, labels, learning_rate, num_steps):
  """Takes ``num_steps`` optax.adam steps on one batch with a pure jitted step.

  The step receives the parameters and the rest of the state (batch
  statistics, dropout RNG state) as pytrees and rebuilds the model with
  ``nnx.merge`` inside ``jit``, as the training scripts do.

  Returns:
    The trained model and its final non-parameter state.
  """
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  optimizer = optax.adam(learning_rate)
  opt_state = optimizer.init(params)

  @jax.jit
  def train_step(params, rest, opt_state):
    def loss_fn(params):
      # copy=True: fresh Variables at the grad trace level, so that batch
      # norm and dropout can update them.
      model = nnx.merge(graphdef, params, rest, copy=True)
      logits = model(inputs)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return loss.mean(), nnx.split(model, nnx.Param, ...)[2]

    (_, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), rest, opt_state

  for _ in range(num_steps):
    params, rest, opt_state = train_step(params, rest, opt_state)
  return nnx.merge(graphdef, params, rest), rest


# ----------------------------------------------------------------------------
# CIFAR-10 CNN


@pytest.mark.parametrize(
  "variant, expected",
  [
    ("paper", 3_223_882),
    # Without each block's second conv + batch norm:
    # 3,223,882 - (37,056 + 147,840 + 590,592).
    ("notebook", 2_448_394),
  ],
)
def test_cnn_parameter_count(variant, expected):
  config = dataclasses.replace(cnn_lib.CNN_PRESETS["paper"], variant=variant)
  abstract = nnx.eval_shape(lambda: cnn_lib.CNN(config, rngs=nnx.Rngs(0)))
  leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
  assert _num_params(abstract) == expected


def test_cnn_layer_output_shapes():
  model = cnn_lib.CNN(cnn_lib.CNN_PRESETS["tiny"], rngs=_rngs(0))
  model.eval()
  block = model.blocks[0]
  assert _output_shape(block.first_conv, 2, 32, 32, 3) == (2, 32, 32, 8)
  assert _output_shape(block.second_conv, 2, 32, 32, 8) == (2, 32, 32, 8)
  assert _output_shape(block.residual, 2, 32, 32, 8) == (2, 32, 32, 8)
  block_inputs = [(2, 32, 32, 3), (2, 16, 16, 8), (2, 8, 8, 16)]
  block_outputs = [(2, 16, 16, 8), (2, 8, 8, 16), (2, 4, 4, 32)]
  for block, inputs, outputs in zip(
    model.blocks, block_inputs, block_outputs, strict=True
  ):
    assert _output_shape(block, *inputs) == outputs
  assert _output_shape(model.hidden, 2, 4 * 4 * 32) == (2, 32)
  assert _output_shape(model.classifier, 2, 32) == (2, 10)
  images = jax.ShapeDtypeStruct((2, *cnn_lib.IMAGE_SHAPE), jnp.float32)
  logits = nnx.eval_shape(lambda m, x: m(x), model, images)
  assert logits.shape == (2, 10)
  assert logits.dtype == jnp.float32


def test_cnn_init_matches_pytorch_defaults():
  model = cnn_lib.CNN(cnn_lib.CNN_PRESETS["tiny"], rngs=_rngs(0))
  num_layers = 0
  for _, module in nnx.iter_modules(model):
    if isinstance(module, nnx.Conv | nnx.Linear):
      num_layers += 1
      kernel = np.asarray(module.kernel[...])
      bias = np.asarray(module.bias[...])
      bound = 1.0 / math.sqrt(math.prod(kernel.shape[:-1]))
      assert np.abs(kernel).max() <= bound
      assert np.abs(kernel).max() > 0.9 * bound
      if kernel.size >= 1000:  # the std of U(-b, b) is b / sqrt(3)
        np.testing.assert_allclose(kernel.std(), bound / math.sqrt(3), rtol=0.1)
      assert np.abs(bias).max() <= bound
      assert np.abs(bias).max() > 0.0
    elif isinstance(module, nnx.BatchNorm):
      assert module.momentum == 0.9
      assert module.epsilon == 1e-5
      np.testing.assert_array_equal(module.scale[...], 1.0)
      np.testing.assert_array_equal(module.bias[...], 0.0)
  assert num_layers == 3 * 4 + 2  # four convolutions per block, two dense


def test_cnn_train_and_eval_modes():
  model = cnn_lib.CNN(cnn_lib.CNN_PRESETS["tiny"], rngs=_rngs(0))
  x = _images(1)
  assert _modes(model) == {
    ("deterministic", False),
    ("use_running_average", False),
  }

  # Training mode: batch statistics feed PyTorch-style running averages
  # (new = 0.9 * old + 0.1 * batch), and dropout draws fresh masks.
  initial_stats = _batch_stats(model)
  first_conv = model.blocks[0].first_conv
  batch_mean = _forward(first_conv.conv, x).mean(axis=(0, 1, 2))
  first = _forward(model, x)
  np.testing.assert_allclose(
    first_conv.norm.mean[...], 0.1 * batch_mean, rtol=1e-5, atol=1e-7
  )
  assert not np.allclose(_forward(model, x), first)
  trained_stats = _batch_stats(model)
  for before, after in zip(initial_stats, trained_stats, strict=True):
    assert np.all(before != after)

  model.eval()
  assert _modes(model) == {
    ("deterministic", True),
    ("use_running_average", True),
  }
  np.testing.assert_array_equal(_forward(model, x), _forward(model, x))
  for before, after in zip(trained_stats, _batch_stats(model), strict=True):
    np.testing.assert_array_equal(before, after)


def test_cnn_notebook_variant_structure():
  config = dataclasses.replace(cnn_lib.CNN_PRESETS["tiny"], variant="notebook")
  model = cnn_lib.CNN(config, rngs=_rngs(0))
  assert all(block.second_conv is None for block in model.blocks)
  assert model.hidden_dropout is None
  model.eval()
  assert _forward(model, _images(2)).shape == (4, 10)


def test_cnn_mixed_precision_keeps_float32_params_and_logits():
  config = dataclasses.replace(cnn_lib.CNN_PRESETS["tiny"], dtype="bfloat16")
  assert config.dtype == jnp.bfloat16
  model = nnx.eval_shape(lambda: cnn_lib.CNN(config, rngs=nnx.Rngs(0)))
  model.eval()
  inputs = jax.ShapeDtypeStruct((2, *cnn_lib.IMAGE_SHAPE), jnp.float32)
  hidden = nnx.eval_shape(lambda m, x: m(x), model.blocks[0], inputs)
  assert hidden.dtype == jnp.bfloat16
  param_dtypes = {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))}
  assert param_dtypes == {jnp.dtype(jnp.float32)}
  assert nnx.eval_shape(lambda m, x: m(x), model, inputs).dtype == jnp.float32


def test_cnn_rejects_malformed_images():
  model = cnn_lib.CNN(cnn_lib.CNN_PRESETS["tiny"], rngs=_rngs(0))
  for shape, dtype in [
    ((2, 28, 28, 3), jnp.float32),
    ((32, 32, 3), jnp.float32),
    ((2, 32, 32, 3), jnp.uint8),
  ]:
    with pytest.raises(AssertionError):
      nnx.eval_shape(
        lambda m, x: m(x), model, jax.ShapeDtypeStruct(shape, dtype)
      )


@pytest.mark.parametrize(
  "overrides, message",
  [
    (dict(widths=64), "tuple of filter counts"),
    (dict(widths=()), "at least one block"),
    (dict(widths=(8, 8, 8, 8, 8, 8)), "at most 5 blocks"),
    (dict(widths=(8, 0)), "positive int"),
    (dict(dense_features=0), "dense_features"),
    (dict(num_classes=0), "num_classes"),
    (dict(dropout_rate=1.0), "dropout_rate"),
    (dict(dropout_rate="0.25"), "dropout_rate"),
    (dict(variant="colab"), "variant"),
    (dict(dtype=jnp.int32), "floating dtype"),
    (dict(param_dtype="not-a-dtype"), "floating dtype"),
  ],
)
def test_cnn_config_rejects_bad_values(overrides, message):
  with pytest.raises(ValueError, match=message):
    cnn_lib.CNNConfig(**overrides)


def test_cnn_config_normalises_and_type_checks():
  config = cnn_lib.CNNConfig(widths=[8, 16])
  assert config.widths == (8, 16)
  hash(config)  # usable as a static jit argument
  with pytest.raises(TypeError, match="CNNConfig"):
    cnn_lib.CNN({"widths": (8,)}, rngs=_rngs(0))


def test_cnn_jitted_adam_steps_on_split_state_reduce_loss():
  model = cnn_lib.CNN(cnn_lib.CNN_PRESETS["tiny"], rngs=_rngs(0))
  _, _, initial_rest = nnx.split(model, nnx.Param, ...)
  images = _images(4, batch=8)
  labels = jnp.arange(8)
  initial_loss = float(_loss_without_dropout(model, images, labels))
  trained, rest = _train_with_adam(
    model, images, labels, learning_rate=3e-3, num_steps=30
  )
  assert float(_loss_without_dropout(trained, images, labels)) < (
    0.5 * initial_loss
  )
  # Batch statistics and the dropout RNG counters advance through the state.
  for kind in (nnx.BatchStat, nnx.RngCount):
    before = jax.tree.leaves(nnx.filter_state(initial_rest, kind))
    after = jax.tree.leaves(nnx.filter_state(rest, kind))
    assert before
    for old, new in zip(before, after, strict=True):
      assert np.any(np.asarray(old) != np.asarray(new))


# ----------------------------------------------------------------------------
# MinGPT


def test_gpt_parameter_count_of_paper_preset():
  config = gpt_lib.GPT_PRESETS["paper"](vocab_size=65)
  abstract = nnx.eval_shape(lambda: gpt_lib.MinGPT(config, rngs=nnx.Rngs(0)))
  leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
  assert _num_params(abstract) == 14_335_553


def test_gpt_parameter_count_formula_on_tiny_preset():
  config = gpt_lib.GPT_PRESETS["tiny"](vocab_size=65)
  vocab, width, block = 65, config.n_embd, config.block_size
  per_block = (
    2 * 2 * width  # two LayerNorms
    + 3 * width * width  # query, key, value without bias
    + (width * width + width)  # output projection
    + (width * 4 * width + 4 * width)  # feed-forward expansion
    + (4 * width * width + width)  # feed-forward contraction
  )
  expected = (
    vocab * width  # token embedding
    + block * width  # position embedding
    + config.n_layer * per_block
    + 2 * width  # final LayerNorm
    + (width * vocab + vocab)  # lm_head
  )
  abstract = nnx.eval_shape(lambda: gpt_lib.MinGPT(config, rngs=nnx.Rngs(0)))
  assert _num_params(abstract) == expected


def test_gpt_presets():
  assert gpt_lib.GPT_PRESETS["paper"](vocab_size=65) == gpt_lib.GPTConfig(65)
  tiny = gpt_lib.GPT_PRESETS["tiny"](vocab_size=65, dtype=jnp.bfloat16)
  sizes = (tiny.n_embd, tiny.n_head, tiny.n_layer, tiny.block_size)
  assert sizes == (64, 4, 2, 64)
  assert tiny.dtype == jnp.bfloat16


def test_gpt_mixed_precision_keeps_float32_params_and_logits():
  config = gpt_lib.GPT_PRESETS["tiny"](vocab_size=65, dtype=jnp.bfloat16)
  model = nnx.eval_shape(lambda: gpt_lib.MinGPT(config, rngs=nnx.Rngs(0)))
  ids = jax.ShapeDtypeStruct((2, 64), jnp.int32)
  hidden = nnx.eval_shape(
    lambda m, x: m.blocks[0](m.token_embedding(x)), model, ids
  )
  assert hidden.dtype == jnp.bfloat16
  param_dtypes = {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))}
  assert param_dtypes == {jnp.dtype(jnp.float32)}
  assert nnx.eval_shape(lambda m, x: m(x), model, ids).dtype == jnp.float32


def test_gpt_init_follows_karpathy():
  config = gpt_lib.GPT_PRESETS["tiny"](vocab_size=65)
  model = gpt_lib.MinGPT(config, rngs=_rngs(0))
  weights = []
  for _, module in nnx.iter_modules(model):
    if isinstance(module, nnx.Linear):
      weights.append(np.asarray(module.kernel[...]).ravel())
      if module.bias is not None:
        np.testing.assert_array_equal(module.bias[...], 0.0)
    elif isinstance(module, nnx.Embed):
      weights.append(np.asarray(module.embedding[...]).ravel())
    elif isinstance(module, nnx.LayerNorm):
      assert module.epsilon == 1e-5
      np.testing.assert_array_equal(module.scale[...], 1.0)
      np.testing.assert_array_equal(module.bias[...], 0.0)
  # Six Linear layers per block, the lm_head and the two embeddings.
  assert len(weights) == 6 * config.n_layer + 1 + 2
  all_weights = np.concatenate(weights)
  np.testing.assert_allclose(all_weights.std(), 0.02, rtol=0.02)
  assert abs(all_weights.mean()) < 1e-3
  attention = model.blocks[0].attention
  assert attention.query.bias is None
  assert attention.key.bias is None
  assert attention.value.bias is None
  assert attention.projection.bias is not None
  assert model.lm_head.bias is not None


def test_gpt_layer_output_shapes():
  model = gpt_lib.MinGPT(SMALL_GPT, rngs=_rngs(0))
  model.eval()
  ids = jax.ShapeDtypeStruct((2, 3), jnp.int32)
  embedded = nnx.eval_shape(lambda m, x: m(x), model.token_embedding, ids)
  assert embedded.shape == (2, 3, 16)
  positions = jax.ShapeDtypeStruct((3,), jnp.int32)
  assert nnx.eval_shape(
    lambda m, x: m(x), model.position_embedding, positions
  ).shape == (3, 16)
  for block in model.blocks:
    for layer in (
      block.attention_norm,
      block.attention,
      block.feed_forward_norm,
      block.feed_forward,
      block,
    ):
      assert _output_shape(layer, 2, 3, 16) == (2, 3, 16)
  assert _output_shape(model.final_norm, 2, 3, 16) == (2, 3, 16)
  assert _output_shape(model.lm_head, 2, 3, 16) == (2, 3, 11)
  logits = nnx.eval_shape(lambda m, x: m(x), model, ids)
  assert logits.shape == (2, 3, 11)
  assert logits.dtype == jnp.float32
  full = jax.ShapeDtypeStruct((1, 4), jnp.int32)
  assert nnx.eval_shape(lambda m, x: m(x), model, full).shape == (1, 4, 11)


def test_gpt_rejects_malformed_token_ids():
  model = gpt_lib.MinGPT(SMALL_GPT, rngs=_rngs(0))

  def call(shape, dtype):
    ids = jax.ShapeDtypeStruct(shape, dtype)
    return nnx.eval_shape(lambda m, x: m(x), model, ids)

  with pytest.raises(ValueError, match="block_size=4"):
    call((1, 5), jnp.int32)
  with pytest.raises(ValueError, match="between 1 and"):
    call((1, 0), jnp.int32)
  with pytest.raises(AssertionError):
    call((4,), jnp.int32)
  with pytest.raises(AssertionError):
    call((1, 4), jnp.float32)


def test_gpt_is_causal():
  model = gpt_lib.MinGPT(SMALL_GPT, rngs=_rngs(0))
  model.eval()
  ids = jax.random.randint(_key(1), (2, 4), 0, SMALL_GPT.vocab_size)
  changed_ids = ids.at[:, 2].set((ids[:, 2] + 1) % SMALL_GPT.vocab_size)
  logits, changed_logits = _forward(model, ids), _forward(model, changed_ids)
  np.testing.assert_allclose(
    logits[:, :2], changed_logits[:, :2], rtol=0, atol=1e-6
  )
  for position in range(2, 4):
    assert not np.allclose(logits[:, position], changed_logits[:, position])


def test_gpt_train_and_eval_modes():
  model = gpt_lib.MinGPT(SMALL_GPT, rngs=_rngs(0))
  ids = jax.random.randint(_key(2), (2, 4), 0, SMALL_GPT.vocab_size)
  assert _modes(model) == {("deterministic", False)}
  assert not np.allclose(_forward(model, ids), _forward(model, ids))
  model.eval()
  assert _modes(model) == {("deterministic", True)}
  np.testing.assert_array_equal(_forward(model, ids), _forward(model, ids))


@pytest.mark.parametrize(
  "overrides, message",
  [
    (dict(n_embd=10, n_head=3), "divisible"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(block_size=0), "block_size"),
    (dict(n_layer=True), "n_layer"),
    (dict(n_head=2.0), "n_head"),
    (dict(dropout_rate=-0.1), "dropout_rate"),
    (dict(dtype=jnp.int8), "floating dtype"),
  ],
)
def test_gpt_config_rejects_bad_values(overrides, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(SMALL_GPT, **overrides)


def test_gpt_rejects_wrong_config_type():
  with pytest.raises(TypeError, match="GPTConfig"):
    gpt_lib.MinGPT(cnn_lib.CNN_PRESETS["tiny"], rngs=_rngs(0))


def test_gpt_jitted_adam_steps_on_split_state_reduce_loss():
  config = gpt_lib.GPT_PRESETS["tiny"](vocab_size=65)
  model = gpt_lib.MinGPT(config, rngs=_rngs(0))
  tokens = jax.random.randint(_key(3), (4, 65), 0, 65)
  inputs, targets = tokens[:, :-1], tokens[:, 1:]
  initial_loss = float(_loss_without_dropout(model, inputs, targets))
  assert initial_loss == pytest.approx(math.log(65), rel=0.02)
  trained, rest = _train_with_adam(
    model, inputs, targets, learning_rate=1e-3, num_steps=20
  )
  assert float(_loss_without_dropout(trained, inputs, targets)) < (
    initial_loss - 0.5
  )
  counts = jax.tree.leaves(nnx.filter_state(rest, nnx.RngCount))
  assert counts
  assert all(int(count) == 20 for count in counts)


# ----------------------------------------------------------------------------
# Text generation


def _reference_generate(model, key, prompt, max_new_tokens, temperature):
  """Token-by-token generation in Python, as in Karpathy's lecture."""
  tokens = prompt
  for position in range(prompt.shape[1], prompt.shape[1] + max_new_tokens):
    logits = _forward(model, tokens[:, -model.config.block_size :])[:, -1]
    next_token = jax.random.categorical(
      jax.random.fold_in(key, position), logits / temperature, axis=-1
    )
    tokens = jnp.concatenate([tokens, next_token[:, None].astype(jnp.int32)], 1)
  return tokens


def test_generate_matches_reference_and_preserves_prompt():
  model = gpt_lib.MinGPT(SMALL_GPT, rngs=_rngs(0))  # in training mode
  key = _key(7)
  prompt = jnp.array([[1, 2], [4, 5]], jnp.int32)
  # 2 + 6 tokens > block_size 4: the context window gets cropped.
  tokens = gpt_lib.generate(model, key, prompt, 6, temperature=0.8)
  assert tokens.shape == (2, 8)
  assert tokens.dtype == jnp.int32
  np.testing.assert_array_equal(tokens[:, :2], prompt)
  assert int(tokens.min()) >= 0
  assert int(tokens.max()) < SMALL_GPT.vocab_size
  # generate left the model in training mode, yet sampled without dropout.
  assert _modes(model) == {("deterministic", False)}
  np.testing.assert_array_equal(
    gpt_lib.generate(model, key, prompt, 6, temperature=0.8), tokens
  )
  assert not np.array_equal(
    gpt_lib.generate(model, _key(8), prompt, 6, temperature=0.8), tokens
  )
  model.eval()
  np.testing.assert_array_equal(
    _reference_generate(model, key, prompt, 6, temperature=0.8), tokens
  )


def test_generate_is_one_loop_whatever_the_length():
  model = gpt_lib.MinGPT(SMALL_GPT, rngs=_rngs(0))
  prompt = jnp.zeros((1, 2), jnp.int32)

  def program(max_new_tokens):
    return str(
      jax.make_jaxpr(
        lambda key: gpt_lib.generate(model, key, prompt, max_new_tokens)
      )(_key(0))
    )

  short, long = program(3), program(12)
  assert len(re.findall(r"= (?:scan|while)\[", short)) == 1
  assert len(short.splitlines()) == len(long.splitlines())


def test_generate_without_new_tokens_returns_prompt():
  model = gpt_lib.MinGPT(SMALL_GPT, rngs=_rngs(0))
  prompt = jnp.array([[3, 1, 4, 1, 5]])
  tokens = gpt_lib.generate(model, _key(0), prompt, 0)
  np.testing.assert_array_equal(tokens, prompt)


@pytest.mark.parametrize(
  "prompt, max_new_tokens, temperature, message",
  [
    (np.zeros((3,), np.int32), 2, 1.0, "shape"),
    (np.zeros((1, 0), np.int32), 2, 1.0, "T0 >= 1"),
    (np.zeros((1, 3), np.float32), 2, 1.0, "integer"),
    (np.zeros((1, 3), np.int32), -1, 1.0, "max_new_tokens"),
    (np.zeros((1, 3), np.int32), 2.0, 1.0, "max_new_tokens"),
    (np.zeros((1, 3), np.int32), 2, 0.0, "temperature"),
  ],
)
def test_generate_rejects_bad_arguments(
  prompt, max_new_tokens, temperature, message
):
  model = gpt_lib.MinGPT(SMALL_GPT, rngs=_rngs(0))
  with pytest.raises(ValueError, match=message):
    gpt_lib.generate(model, _key(0), prompt, max_new_tokens, temperature)
