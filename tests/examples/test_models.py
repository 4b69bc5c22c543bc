"""Tests of the Flax NNX models: the CIFAR-10 CNN and the character MinGPT.

Keys use JAX's RBG PRNG: XLA:CPU takes about a second to compile threefry
sampling for each distinct parameter shape, which would dominate these tests.
"""

import dataclasses
import functools
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
  block_size=4, n_embd=16, n_head=2, n_layer=2, dropout_rate=0.2
)
SMALL_VOCAB = 11


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


def _variable_types(module: nnx.Module) -> set[type]:
  """The types of the Variables a module holds (its whole state)."""
  return {
    type(variable)
    for _, variable in nnx.to_flat_state(nnx.state(module, nnx.Variable))
  }


def _images(seed: int, batch: int = 4) -> jax.Array:
  return jax.random.uniform(
    _key(seed), (batch, *cnn_lib.IMAGE_SHAPE), minval=-1.0, maxval=1.0
  )


def _output_shape(module: nnx.Module, *input_shape: int) -> tuple[int, ...]:
  """Output shape of ``module`` on a float32 input in eval mode, not computed."""
  inputs = jax.ShapeDtypeStruct(input_shape, jnp.float32)

  def call(module, inputs):
    if isinstance(module, nnx.Linear | nnx.LayerNorm):
      return module(inputs)
    if isinstance(module, cnn_lib.ConvBatchNorm | cnn_lib.ResidualBlock):
      return module(inputs, train=False)
    return module(inputs, train=False, rngs=None)

  return nnx.eval_shape(call, module, inputs).shape


@functools.partial(nnx.jit, static_argnames="train")
def _forward(
  model: nnx.Module,
  inputs: jax.Array,
  *,
  train: bool = False,
  dropout_key: jax.Array | None = None,
) -> jax.Array:
  """The model's output; in train mode with dropout masks from ``dropout_key``.

  Batch statistics updated in train mode are written back to ``model``.
  """
  rngs = None if dropout_key is None else nnx.Rngs(dropout=dropout_key)
  return model(inputs, train=train, rngs=rngs)


@nnx.jit
def _eval_loss(model, inputs, labels):
  """Cross-entropy in eval mode: no dropout, batch norm's running averages."""
  logits = model(inputs)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@jax.jit
def _train_mode_loss(graphdef, params, rest, inputs, labels, dropout_key):
  """Cross-entropy in train mode with fixed dropout masks; updates nothing."""
  model = nnx.merge(graphdef, params, rest, copy=True)
  logits = model(inputs, train=True, rngs=nnx.Rngs(dropout=dropout_key))
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _train_with_adam(model, inputs, labels, learning_rate, num_steps):
  """Takes ``num_steps`` optax.adam steps on one batch with a pure jitted step.

  The step receives the parameters and the rest of the state (the batch
  statistics) as pytrees and a dropout key, and rebuilds the model with
  ``nnx.merge`` inside ``jit``, as the training scripts do.

  Returns:
    The trained model and its final non-parameter state.
  """
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  optimizer = optax.adam(learning_rate)
  opt_state = optimizer.init(params)

  @jax.jit
  def train_step(params, rest, opt_state, dropout_key):
    def loss_fn(params):
      # copy=True: fresh Variables at the grad trace level, so that batch
      # norm can update its running averages.
      model = nnx.merge(graphdef, params, rest, copy=True)
      logits = model(inputs, train=True, rngs=nnx.Rngs(dropout=dropout_key))
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return loss.mean(), nnx.state(model, nnx.BatchStat)

    (_, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), rest, opt_state

  dropout_key = _key(1234)
  for step in range(num_steps):
    params, rest, opt_state = train_step(
      params, rest, opt_state, jax.random.fold_in(dropout_key, step)
    )
  return nnx.merge(graphdef, params, rest), rest


# ----------------------------------------------------------------------------
# materialize and the convolution's input


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("first", [0.0, -0.0, 1.5, np.inf, -np.inf, np.nan])
def test_materialize_is_the_identity(dtype, first):
  # The predicate reads the first element; whatever it holds (zero of either
  # sign, infinities, NaN), the value and its gradient pass unchanged.
  x = jax.random.normal(_key(0), (3, 4, 5, 2), dtype).at[0, 0, 0, 0].set(first)
  out = jax.jit(cnn_lib.materialize)(x)
  assert out.dtype == x.dtype
  np.testing.assert_array_equal(
    np.asarray(out).view(np.uint16 if dtype == jnp.bfloat16 else np.uint32),
    np.asarray(x).view(np.uint16 if dtype == jnp.bfloat16 else np.uint32),
  )
  cotangent = jax.random.normal(_key(1), x.shape, dtype)
  grad = jax.jit(
    jax.grad(lambda x: jnp.sum(cnn_lib.materialize(x) * cotangent))
  )
  np.testing.assert_array_equal(grad(x), cotangent)
  np.testing.assert_array_equal(jax.vmap(cnn_lib.materialize)(x), x)


def test_conv_batch_norm_equals_plain_nnx_conv():
  # The layer's materialize() is internal: values, batch statistics and
  # gradients equal nnx.Conv and nnx.BatchNorm applied directly.
  config = cnn_lib.CNN_PRESETS["tiny"]
  layer = cnn_lib.ConvBatchNorm(4, 8, config, rngs=_rngs(0))
  x = jax.random.normal(_key(1), (6, 16, 16, 4))
  cotangent = jax.random.normal(_key(2), (6, 16, 16, 8))
  graphdef, params, stats = nnx.split(layer, nnx.Param, nnx.BatchStat)

  def loss(params, x, plain):
    model = nnx.merge(graphdef, params, stats, copy=True)
    if plain:
      y = model.norm(model.conv(x), use_running_average=False)
    else:
      y = model(x, train=True)
    return jnp.sum(y * cotangent), nnx.state(model, nnx.BatchStat)

  results = [
    jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True), static_argnums=2)(
      params, x, plain
    )
    for plain in (False, True)
  ]
  leaves = [jax.tree.leaves(result) for result in results]
  assert len(leaves[0]) == len(leaves[1]) > 0
  for ours, plain in zip(*leaves, strict=True):
    np.testing.assert_allclose(ours, plain, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------
# 2x2 max pooling


def _flax_max_pool(x: jax.Array) -> jax.Array:
  return nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))


def _pool_grad(pool, x: jax.Array, cotangent: jax.Array) -> np.ndarray:
  return np.asarray(jax.grad(lambda x: jnp.sum(pool(x) * cotangent))(x))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (1, 2, 2, 1), (3, 32, 32, 4)])
def test_max_pool_2x2_equals_flax_max_pool(shape, dtype):
  x = jax.random.normal(_key(0), shape, dtype)
  for inputs in (x, jax.nn.relu(x)):  # the second with ties among zeros
    pooled = cnn_lib.max_pool_2x2(inputs)
    expected = _flax_max_pool(inputs)
    assert pooled.shape == expected.shape
    assert pooled.dtype == expected.dtype == dtype
    np.testing.assert_array_equal(pooled, expected)


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (3, 32, 32, 4)])
def test_max_pool_2x2_gradient_equals_flax_without_ties(shape):
  x = jax.random.normal(_key(1), shape)
  cotangent = jax.random.normal(_key(2), _flax_max_pool(x).shape)
  grad = _pool_grad(cnn_lib.max_pool_2x2, x, cotangent)
  np.testing.assert_array_equal(grad, _pool_grad(_flax_max_pool, x, cotangent))
  # The whole cotangent reaches exactly one input of each window.
  assert np.count_nonzero(grad) == cotangent.size


def test_max_pool_2x2_gradient_equals_flax_after_relu():
  # Pooled inputs come out of a ReLU: windows of zeros tie. Those ties get
  # different gradients (split vs routed to one zero), but the ReLU passes
  # none of them on.
  pre_activation = jax.random.normal(_key(3), (4, 16, 16, 8))
  x = jax.nn.relu(pre_activation)
  cotangent = jax.random.normal(_key(4), _flax_max_pool(x).shape)
  grad = _pool_grad(cnn_lib.max_pool_2x2, x, cotangent)
  flax_grad = _pool_grad(_flax_max_pool, x, cotangent)
  assert not np.array_equal(grad, flax_grad)  # the test sees ties
  relu_derivative = np.asarray(x > 0)
  np.testing.assert_array_equal(
    grad * relu_derivative, flax_grad * relu_derivative
  )
  # The same through the ReLU itself, as the model differentiates it.
  through_relu = [
    _pool_grad(
      lambda z, pool=pool: pool(jax.nn.relu(z)), pre_activation, cotangent
    )
    for pool in (cnn_lib.max_pool_2x2, _flax_max_pool)
  ]
  np.testing.assert_array_equal(*through_relu)


def test_max_pool_2x2_gradient_splits_ties_among_positive_maxima():
  # In bfloat16 (mixed precision), a window's largest ReLU outputs tie at a
  # positive value now and then; max_pool_2x2 then shares the cotangent among
  # them where nnx.max_pool routes it to one. Both are subgradients: each
  # window still passes its whole cotangent on.
  x = jax.nn.relu(jax.random.normal(_key(5), (4, 16, 16, 8), jnp.bfloat16))
  tie = jnp.array([[1.0, 0.0], [0.0, 1.0]], jnp.bfloat16)
  x = x.at[0, :2, :2, 0].set(tie)  # one tie for sure
  cotangent = jax.random.normal(_key(6), _flax_max_pool(x).shape, jnp.float32)
  grads = [
    _pool_grad(pool, x.astype(jnp.float32), cotangent)
    for pool in (cnn_lib.max_pool_2x2, _flax_max_pool)
  ]
  for grad in grads:
    window_sums = grad.reshape(4, 8, 2, 8, 2, 8).sum(axis=(2, 4))
    np.testing.assert_allclose(window_sums, cotangent, rtol=1e-6, atol=1e-6)
  relu_derivative = np.asarray(x > 0)
  assert not np.array_equal(
    grads[0] * relu_derivative, grads[1] * relu_derivative
  )
  half = cotangent[0, 0, 0, 0] / 2
  np.testing.assert_array_equal(
    grads[0][0, :2, :2, 0], np.array([[half, 0.0], [0.0, half]])
  )


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


def test_cnn_holds_only_params_and_batch_stats():
  model = cnn_lib.CNN(cnn_lib.CNN_PRESETS["tiny"], rngs=_rngs(0))
  assert _variable_types(model) == {nnx.Param, nnx.BatchStat}
  assert not jax.tree.leaves(nnx.state(model, nnx.RngState))
  dropouts = [
    module
    for _, module in nnx.iter_modules(model)
    if isinstance(module, nnx.Dropout)
  ]
  assert len(dropouts) == 3 + 1  # one per block, one after the dense layer
  assert all(dropout.rngs is None for dropout in dropouts)


def test_cnn_layer_output_shapes():
  model = cnn_lib.CNN(cnn_lib.CNN_PRESETS["tiny"], rngs=_rngs(0))
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
  for train in (False, True):
    logits = nnx.eval_shape(
      lambda m, x, train=train: m(
        x, train=train, rngs=nnx.Rngs(dropout=_key(1))
      ),
      model,
      images,
    )
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
      np.testing.assert_array_equal(module.mean[...], 0.0)
      np.testing.assert_array_equal(module.var[...], 1.0)
  assert num_layers == 3 * 4 + 2  # four convolutions per block, two dense


def test_cnn_kernels_hold_the_numbers_of_a_direct_draw():
  # Drawn as matrices for XLA:CPU's compile time, not for other numbers.
  direct = jax.nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
  for shape in ((3, 3, 8, 16), (512, 32)):
    key = jax.random.key(7)
    np.testing.assert_array_equal(
      cnn_lib._torch_kernel_init(key, shape), direct(key, shape)
    )


def test_cnn_train_and_eval_modes():
  model = cnn_lib.CNN(cnn_lib.CNN_PRESETS["tiny"], rngs=_rngs(0))
  x = _images(1)

  # Training mode: batch statistics feed PyTorch-style running averages
  # (new = 0.9 * old + 0.1 * batch), and dropout draws its masks from the
  # key passed to the call.
  initial_stats = _batch_stats(model)
  first_conv = model.blocks[0].first_conv
  batch_mean = first_conv.conv(x).mean(axis=(0, 1, 2))
  first = _forward(model, x, train=True, dropout_key=_key(5))
  np.testing.assert_allclose(
    first_conv.norm.mean[...], 0.1 * batch_mean, rtol=1e-5, atol=1e-7
  )
  trained_stats = _batch_stats(model)
  for before, after in zip(initial_stats, trained_stats, strict=True):
    assert np.all(before != after)
  # Train mode normalises with the batch statistics, not the running
  # averages that just changed: the same key gives the same output.
  np.testing.assert_array_equal(
    _forward(model, x, train=True, dropout_key=_key(5)), first
  )
  assert not np.allclose(
    _forward(model, x, train=True, dropout_key=_key(6)), first
  )
  trained_stats = _batch_stats(model)

  # Eval mode (the default): running averages, no dropout, no updates.
  evaluated = _forward(model, x)
  np.testing.assert_array_equal(_forward(model, x), evaluated)
  np.testing.assert_array_equal(
    _forward(model, x, dropout_key=_key(7)), evaluated
  )
  assert not np.allclose(evaluated, first)
  for before, after in zip(trained_stats, _batch_stats(model), strict=True):
    np.testing.assert_array_equal(before, after)


def test_cnn_train_mode_without_dropout_rngs_is_rejected():
  model = cnn_lib.CNN(cnn_lib.CNN_PRESETS["tiny"], rngs=_rngs(0))
  images = jax.ShapeDtypeStruct((2, *cnn_lib.IMAGE_SHAPE), jnp.float32)
  with pytest.raises(ValueError, match="rngs"):
    nnx.eval_shape(lambda m, x: m(x, train=True), model, images)


def test_cnn_notebook_variant_structure():
  config = dataclasses.replace(cnn_lib.CNN_PRESETS["tiny"], variant="notebook")
  model = cnn_lib.CNN(config, rngs=_rngs(0))
  assert all(block.second_conv is None for block in model.blocks)
  assert model.hidden_dropout is None
  assert _forward(model, _images(2)).shape == (4, 10)
  assert _forward(model, _images(2), train=True, dropout_key=_key(1)).shape == (
    4,
    10,
  )


def test_cnn_mixed_precision_keeps_float32_params_and_logits():
  config = dataclasses.replace(cnn_lib.CNN_PRESETS["tiny"], dtype="bfloat16")
  assert config.dtype == "bfloat16"
  assert config.param_dtype == "float32"
  model = nnx.eval_shape(lambda: cnn_lib.CNN(config, rngs=nnx.Rngs(0)))
  inputs = jax.ShapeDtypeStruct((2, *cnn_lib.IMAGE_SHAPE), jnp.float32)
  hidden = nnx.eval_shape(
    lambda m, x: m(x, train=False, rngs=None), model.blocks[0], inputs
  )
  assert hidden.dtype == jnp.bfloat16
  param_dtypes = {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))}
  assert param_dtypes == {jnp.dtype(jnp.float32)}
  stat_dtypes = {
    x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.BatchStat))
  }
  assert stat_dtypes == {jnp.dtype(jnp.float32)}
  assert nnx.eval_shape(lambda m, x: m(x), model, inputs).dtype == jnp.float32
  logits = nnx.eval_shape(
    lambda m, x: m(x, train=True, rngs=nnx.Rngs(dropout=_key(1))),
    model,
    inputs,
  )
  assert logits.dtype == jnp.float32


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
    (dict(dtype="int32"), "floating dtype"),
    (dict(dtype=jnp.int32), "floating dtype"),
    (dict(dtype="bool"), "floating dtype"),
    (dict(param_dtype="not-a-dtype"), "floating dtype"),
    (dict(param_dtype="uint8"), "floating dtype"),
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


@pytest.mark.parametrize(
  "dtype, name",
  [
    ("float32", "float32"),
    ("f4", "float32"),
    (jnp.float32, "float32"),
    (np.dtype(np.float32), "float32"),
    ("bfloat16", "bfloat16"),
    (jnp.bfloat16, "bfloat16"),
    (np.float16, "float16"),
  ],
)
def test_configs_normalise_dtype_names(dtype, name):
  for config_class in (cnn_lib.CNNConfig, gpt_lib.GPTConfig):
    config = config_class(dtype=dtype, param_dtype=dtype)
    assert config.dtype == name
    assert config.param_dtype == name
    assert isinstance(config.dtype, str)
    assert config == config_class(dtype=name, param_dtype=name)
    hash(config)


def test_cnn_jitted_adam_steps_on_split_state_reduce_loss():
  model = cnn_lib.CNN(cnn_lib.CNN_PRESETS["tiny"], rngs=_rngs(0))
  graphdef, initial_params, initial_rest = nnx.split(model, nnx.Param, ...)
  images = _images(4, batch=8)
  labels = jnp.arange(8)
  dropout_key = _key(99)
  initial_loss = float(
    _train_mode_loss(
      graphdef, initial_params, initial_rest, images, labels, dropout_key
    )
  )
  initial_eval_loss = float(_eval_loss(model, images, labels))
  trained, rest = _train_with_adam(
    model, images, labels, learning_rate=3e-3, num_steps=30
  )
  _, params, _ = nnx.split(trained, nnx.Param, ...)
  final_loss = float(
    _train_mode_loss(graphdef, params, rest, images, labels, dropout_key)
  )
  assert final_loss < 0.5 * initial_loss
  # Eval mode improves too, though its running averages (momentum 0.9) lag
  # the batch statistics of the changing parameters.
  assert float(_eval_loss(trained, images, labels)) < initial_eval_loss
  # The rest of the state is the batch statistics, which advance through it.
  assert jax.tree.structure(rest) == jax.tree.structure(
    nnx.state(model, nnx.BatchStat)
  )
  before = jax.tree.leaves(initial_rest)
  after = jax.tree.leaves(rest)
  assert before
  for old, new in zip(before, after, strict=True):
    assert np.any(np.asarray(old) != np.asarray(new))


# ----------------------------------------------------------------------------
# MinGPT


def test_gpt_parameter_count_of_paper_preset():
  config = gpt_lib.GPT_PRESETS["paper"]
  abstract = nnx.eval_shape(
    lambda: gpt_lib.MinGPT(config, 65, rngs=nnx.Rngs(0))
  )
  leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
  assert _num_params(abstract) == 14_335_553


def test_gpt_parameter_count_formula_on_tiny_preset():
  config = gpt_lib.GPT_PRESETS["tiny"]
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
  abstract = nnx.eval_shape(
    lambda: gpt_lib.MinGPT(config, vocab, rngs=nnx.Rngs(0))
  )
  assert _num_params(abstract) == expected


def test_gpt_presets():
  assert gpt_lib.GPT_PRESETS["paper"] == gpt_lib.GPTConfig()
  tiny = gpt_lib.GPT_PRESETS["tiny"]
  assert isinstance(tiny, gpt_lib.GPTConfig)
  sizes = (tiny.n_embd, tiny.n_head, tiny.n_layer, tiny.block_size)
  assert sizes == (64, 4, 2, 64)
  assert (tiny.dtype, tiny.param_dtype) == ("float32", "float32")
  mixed = dataclasses.replace(tiny, dtype="bfloat16")
  assert mixed.dtype == "bfloat16"
  assert not hasattr(tiny, "vocab_size")


def test_gpt_holds_only_params():
  model = gpt_lib.MinGPT(SMALL_GPT, SMALL_VOCAB, rngs=_rngs(0))
  assert _variable_types(model) == {nnx.Param}
  dropouts = [
    module
    for _, module in nnx.iter_modules(model)
    if isinstance(module, nnx.Dropout)
  ]
  assert len(dropouts) == 3 * SMALL_GPT.n_layer
  assert all(dropout.rngs is None for dropout in dropouts)
  assert model.vocab_size == SMALL_VOCAB


def test_gpt_mixed_precision_keeps_float32_params_and_logits():
  config = dataclasses.replace(gpt_lib.GPT_PRESETS["tiny"], dtype="bfloat16")
  model = nnx.eval_shape(lambda: gpt_lib.MinGPT(config, 65, rngs=nnx.Rngs(0)))
  ids = jax.ShapeDtypeStruct((2, 64), jnp.int32)
  hidden = nnx.eval_shape(
    lambda m, x: m.blocks[0](m.token_embedding(x), train=False, rngs=None),
    model,
    ids,
  )
  assert hidden.dtype == jnp.bfloat16
  param_dtypes = {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))}
  assert param_dtypes == {jnp.dtype(jnp.float32)}
  assert nnx.eval_shape(lambda m, x: m(x), model, ids).dtype == jnp.float32
  logits = nnx.eval_shape(
    lambda m, x: m(x, train=True, rngs=nnx.Rngs(dropout=_key(1))), model, ids
  )
  assert logits.dtype == jnp.float32


def test_gpt_init_follows_karpathy():
  config = gpt_lib.GPT_PRESETS["tiny"]
  model = gpt_lib.MinGPT(config, 65, rngs=_rngs(0))
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
  model = gpt_lib.MinGPT(SMALL_GPT, SMALL_VOCAB, rngs=_rngs(0))
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
  assert _output_shape(model.lm_head, 2, 3, 16) == (2, 3, SMALL_VOCAB)
  for train in (False, True):
    logits = nnx.eval_shape(
      lambda m, x, train=train: m(
        x, train=train, rngs=nnx.Rngs(dropout=_key(1))
      ),
      model,
      ids,
    )
    assert logits.shape == (2, 3, SMALL_VOCAB)
    assert logits.dtype == jnp.float32
  full = jax.ShapeDtypeStruct((1, 4), jnp.int32)
  assert nnx.eval_shape(lambda m, x: m(x), model, full).shape == (
    1,
    4,
    SMALL_VOCAB,
  )


def test_gpt_rejects_malformed_token_ids():
  model = gpt_lib.MinGPT(SMALL_GPT, SMALL_VOCAB, rngs=_rngs(0))

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


@pytest.mark.parametrize("train", [False, True])
def test_gpt_is_causal(train):
  model = gpt_lib.MinGPT(SMALL_GPT, SMALL_VOCAB, rngs=_rngs(0))
  ids = jax.random.randint(_key(1), (2, 4), 0, SMALL_VOCAB)
  changed_ids = ids.at[:, 2].set((ids[:, 2] + 1) % SMALL_VOCAB)
  # In train mode, the same dropout key gives both calls the same masks.
  forward = functools.partial(
    _forward, model, train=train, dropout_key=_key(2) if train else None
  )
  logits, changed_logits = forward(ids), forward(changed_ids)
  np.testing.assert_allclose(
    logits[:, :2], changed_logits[:, :2], rtol=0, atol=1e-6
  )
  for position in range(2, 4):
    assert not np.allclose(logits[:, position], changed_logits[:, position])


def test_gpt_train_and_eval_modes():
  model = gpt_lib.MinGPT(SMALL_GPT, SMALL_VOCAB, rngs=_rngs(0))
  ids = jax.random.randint(_key(2), (2, 4), 0, SMALL_VOCAB)
  # Train mode: dropout masks come from the key passed to the call.
  trained = _forward(model, ids, train=True, dropout_key=_key(3))
  np.testing.assert_array_equal(
    _forward(model, ids, train=True, dropout_key=_key(3)), trained
  )
  assert not np.allclose(
    _forward(model, ids, train=True, dropout_key=_key(4)), trained
  )
  # Eval mode (the default): no dropout, whatever rngs are passed.
  evaluated = _forward(model, ids)
  np.testing.assert_array_equal(_forward(model, ids), evaluated)
  np.testing.assert_array_equal(
    _forward(model, ids, dropout_key=_key(5)), evaluated
  )
  assert not np.allclose(evaluated, trained)
  # Without dropout, train mode is eval mode (the rate does not change the
  # initialisation).
  no_dropout = gpt_lib.MinGPT(
    dataclasses.replace(SMALL_GPT, dropout_rate=0.0), SMALL_VOCAB, rngs=_rngs(0)
  )
  np.testing.assert_array_equal(
    _forward(no_dropout, ids, train=True, dropout_key=_key(3)), evaluated
  )


def test_gpt_train_mode_without_dropout_rngs_is_rejected():
  model = gpt_lib.MinGPT(SMALL_GPT, SMALL_VOCAB, rngs=_rngs(0))
  ids = jax.ShapeDtypeStruct((1, 4), jnp.int32)
  with pytest.raises(ValueError, match="rngs"):
    nnx.eval_shape(lambda m, x: m(x, train=True), model, ids)


@pytest.mark.parametrize(
  "overrides, message",
  [
    (dict(n_embd=10, n_head=3), "divisible"),
    (dict(block_size=0), "block_size"),
    (dict(n_layer=True), "n_layer"),
    (dict(n_head=2.0), "n_head"),
    (dict(dropout_rate=-0.1), "dropout_rate"),
    (dict(dtype="int8"), "floating dtype"),
    (dict(dtype=jnp.int8), "floating dtype"),
    (dict(param_dtype="not-a-dtype"), "floating dtype"),
  ],
)
def test_gpt_config_rejects_bad_values(overrides, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(SMALL_GPT, **overrides)


def test_gpt_config_has_no_vocab_size():
  with pytest.raises(TypeError):
    gpt_lib.GPTConfig(vocab_size=65)


@pytest.mark.parametrize("vocab_size", [0, -1, True, 2.0, None])
def test_gpt_rejects_bad_vocab_size(vocab_size):
  with pytest.raises(ValueError, match="vocab_size"):
    gpt_lib.MinGPT(SMALL_GPT, vocab_size, rngs=_rngs(0))


def test_gpt_rejects_wrong_config_type():
  with pytest.raises(TypeError, match="GPTConfig"):
    gpt_lib.MinGPT(cnn_lib.CNN_PRESETS["tiny"], SMALL_VOCAB, rngs=_rngs(0))


def test_gpt_jitted_adam_steps_on_split_state_reduce_loss():
  model = gpt_lib.MinGPT(gpt_lib.GPT_PRESETS["tiny"], 65, rngs=_rngs(0))
  tokens = jax.random.randint(_key(3), (4, 65), 0, 65)
  inputs, targets = tokens[:, :-1], tokens[:, 1:]
  initial_loss = float(_eval_loss(model, inputs, targets))
  assert initial_loss == pytest.approx(math.log(65), rel=0.02)
  trained, rest = _train_with_adam(
    model, inputs, targets, learning_rate=1e-3, num_steps=20
  )
  assert float(_eval_loss(trained, inputs, targets)) < (initial_loss - 0.5)
  # The model has no state but its parameters: no RNG counters to carry.
  assert not jax.tree.leaves(rest)


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
  model = gpt_lib.MinGPT(SMALL_GPT, SMALL_VOCAB, rngs=_rngs(0))
  params = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
  key = _key(7)
  prompt = jnp.array([[1, 2], [4, 5]], jnp.int32)
  # 2 + 6 tokens > block_size 4: the context window gets cropped.
  tokens = gpt_lib.generate(model, key, prompt, 6, temperature=0.8)
  assert tokens.shape == (2, 8)
  assert tokens.dtype == jnp.int32
  np.testing.assert_array_equal(tokens[:, :2], prompt)
  assert int(tokens.min()) >= 0
  assert int(tokens.max()) < SMALL_VOCAB
  np.testing.assert_array_equal(
    gpt_lib.generate(model, key, prompt, 6, temperature=0.8), tokens
  )
  assert not np.array_equal(
    gpt_lib.generate(model, _key(8), prompt, 6, temperature=0.8), tokens
  )
  # The reference samples in eval mode: generate uses no dropout.
  np.testing.assert_array_equal(
    _reference_generate(model, key, prompt, 6, temperature=0.8), tokens
  )
  # generate leaves the model as it was.
  jax.tree.map(
    np.testing.assert_array_equal, nnx.state(model, nnx.Param), params
  )
  assert _variable_types(model) == {nnx.Param}


def test_generate_is_one_loop_whatever_the_length():
  model = gpt_lib.MinGPT(SMALL_GPT, SMALL_VOCAB, rngs=_rngs(0))
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
  model = gpt_lib.MinGPT(SMALL_GPT, SMALL_VOCAB, rngs=_rngs(0))
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
  model = gpt_lib.MinGPT(SMALL_GPT, SMALL_VOCAB, rngs=_rngs(0))
  with pytest.raises(ValueError, match=message):
    gpt_lib.generate(model, _key(0), prompt, max_new_tokens, temperature)
