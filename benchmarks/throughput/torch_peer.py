"""PyTorch peers of the example models' training steps, for throughput tables.

The throughput benchmark times one training step of our JAX models against
the same step written in PyTorch, so that a reader can tell whether a JAX step
is slow or the model is simply expensive. A peer is only a fair yardstick if it
does the same work, so each one here mirrors the JAX step piece by piece:

* the CIFAR-10 CNN (``"paper"`` variant of :mod:`examples.cifar10.model`) with
  PyTorch's default initialisation and batch norm, fed a batch of uint8 images
  that the step itself normalises to [-1, 1], flips and warps as
  :mod:`examples.cifar10.augment` does;
* Karpathy's MinGPT (:mod:`examples.mingpt.model`), fed a batch of token
  windows;
* cross-entropy loss, backward pass and one ``torch.optim.Adam`` update, all in
  float32 with the model in training mode (dropout and batch statistics on).

:func:`parameter_count` lets the benchmark check that the two sides still
have the same number of parameters.

Batches are random (the step cost does not depend on the pixel or token
values) and drawn once per step function; augmentation and dropout draw new
randomness every step, from a random stream private to the step function so
that its losses depend only on ``seed``, not on what else ran in the process.

PyTorch runs eagerly, op by op, where our step is one jitted XLA program:
that is the comparison the benchmark is after, since eager PyTorch is how the
paper's code runs (``torch.compile`` is left out). The work itself differs
only negligibly:

* our MinGPT step gathers its windows from the corpus inside the step; the
  peer reuses one fixed batch of token ids;
* the CNN flattens its last feature map in (channel, row, column) order, ours
  in (row, column, channel) order, and PyTorch's running variance is the
  unbiased one (see :mod:`examples.cifar10.model`).

PyTorch is optional: this module imports without it, and :func:`available`
tells the benchmark whether the peers can run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

try:
  import torch
  from torch import nn
  from torch.nn import functional as F
except ImportError:
  torch = None

# The model classes below need a base class even when PyTorch is missing, so
# that this module still imports; they are only instantiated when it is there.
_Module = object if torch is None else nn.Module

MODELS = ("cnn", "gpt")
"""Names of the models that have a PyTorch peer."""

PRESETS = ("paper", "tiny")
"""Names of the presets of each model."""

LEARNING_RATE = 1e-4
"""Adam's step size; it does not change the step's cost."""


@dataclasses.dataclass(frozen=True)
class CNNPreset:
  """Sizes of a CNN preset (``CNN_PRESETS`` in :mod:`examples.cifar10.model`).

  Attributes:
    widths: filters of each convolutional block.
    dense_features: width of the dense hidden layer.
    batch_size: images per training step, as in our CIFAR-10 training.
  """

  widths: tuple[int, ...]
  dense_features: int
  batch_size: int


@dataclasses.dataclass(frozen=True)
class GPTPreset:
  """Sizes of a MinGPT preset (``GPT_PRESETS`` in :mod:`examples.mingpt.model`).

  Attributes:
    block_size: context length of every training window.
    n_embd: embedding width.
    n_head: attention heads.
    n_layer: transformer blocks.
    batch_size: windows per training step, as in our MinGPT training.
  """

  block_size: int
  n_embd: int
  n_head: int
  n_layer: int
  batch_size: int


# The sizes are copied rather than read from our presets so that the peers do
# not depend on how the JAX configs are built; the tests check the sizes,
# parameter counts and augmentation constants against ours.
CNN_PRESETS = {
  "paper": CNNPreset(widths=(64, 128, 256), dense_features=128, batch_size=128),
  "tiny": CNNPreset(widths=(8, 16, 32), dense_features=32, batch_size=128),
}
"""The CNN presets."""

GPT_PRESETS = {
  "paper": GPTPreset(
    block_size=256, n_embd=384, n_head=8, n_layer=8, batch_size=64
  ),
  "tiny": GPTPreset(
    block_size=64, n_embd=64, n_head=4, n_layer=2, batch_size=32
  ),
}
"""The MinGPT presets."""

IMAGE_SHAPE = (32, 32, 3)
"""``(height, width, channels)`` of a CIFAR-10 image."""

NUM_CLASSES = 10
"""CIFAR-10 classes."""

CNN_DROPOUT_RATE = 0.25
"""Dropout after each CNN block and after the dense hidden layer."""

VOCAB_SIZE = 65
"""Characters in the tiny-Shakespeare corpus: MinGPT's vocabulary size."""

GPT_DROPOUT_RATE = 0.2
"""Dropout on the attention weights and after each residual branch."""

# examples.cifar10.augment's RandomAffine-like augmentation.
MAX_ROTATION_DEGREES = 5.0
MAX_TRANSLATION_FRACTION = 0.1
SCALE_RANGE = (0.9, 1.1)
FLIP_PROBABILITY = 0.5
BLACK = -1.0  # The fill value: a black pixel after normalising to [-1, 1].

# As in examples.mingpt.model.
_FEED_FORWARD_EXPANSION = 4
_LAYER_NORM_EPSILON = 1e-5
_GPT_INIT_STDDEV = 0.02


def available() -> bool:
  """Whether PyTorch imports, i.e. whether the peers can be built."""
  return torch is not None


def _check(model: str, preset: str) -> None:
  if model not in MODELS:
    raise ValueError(f"model must be one of {MODELS}, got {model!r}.")
  if preset not in PRESETS:
    raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}.")


def examples_per_step(model: str, preset: str) -> int:
  """Examples one training step consumes: images (CNN) or tokens (GPT).

  Args:
    model: ``"cnn"`` or ``"gpt"``.
    preset: ``"paper"`` or ``"tiny"``.

  Returns:
    The batch size, times the context length for the GPT (every position of
    every window is a next-token prediction).

  Raises:
    ValueError: if ``model`` or ``preset`` is unknown.
  """
  _check(model, preset)
  if model == "cnn":
    return CNN_PRESETS[preset].batch_size
  gpt = GPT_PRESETS[preset]
  return gpt.batch_size * gpt.block_size


# ---------------------------------------------------------------------------
# CIFAR-10 CNN.


class _ConvBatchNorm(_Module):
  """A 3x3 'same' convolution followed by batch norm (no activation)."""

  def __init__(self, in_channels: int, out_channels: int):
    super().__init__()
    self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    self.norm = nn.BatchNorm2d(out_channels)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.norm(self.conv(x))


class _ConvBlock(_Module):
  """Two conv-bn-relu, a residual block, 2x2 max pooling and dropout."""

  def __init__(self, in_channels: int, out_channels: int):
    super().__init__()
    self.first_conv = _ConvBatchNorm(in_channels, out_channels)
    self.second_conv = _ConvBatchNorm(out_channels, out_channels)
    self.residual_first = _ConvBatchNorm(out_channels, out_channels)
    self.residual_second = _ConvBatchNorm(out_channels, out_channels)
    self.dropout = nn.Dropout(CNN_DROPOUT_RATE)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(self.first_conv(x))
    x = F.relu(self.second_conv(x))
    x = F.relu(x + self.residual_second(F.relu(self.residual_first(x))))
    return self.dropout(F.max_pool2d(x, 2))


class _CNN(_Module):
  """The paper's CIFAR-10 classifier, on images of shape ``(N, C, H, W)``.

  It flattens the last feature map in PyTorch's (channel, row, column) order
  where ours flattens (row, column, channel): a permutation of the dense
  layer's inputs that changes neither the parameter count nor the cost.
  """

  def __init__(self, preset: CNNPreset):
    super().__init__()
    in_widths = (IMAGE_SHAPE[2], *preset.widths[:-1])
    self.blocks = nn.Sequential(
      *(
        _ConvBlock(in_width, width)
        for in_width, width in zip(in_widths, preset.widths, strict=True)
      )
    )
    pooled_side = IMAGE_SHAPE[0] // 2 ** len(preset.widths)
    flat_features = preset.widths[-1] * pooled_side**2
    self.hidden = nn.Linear(flat_features, preset.dense_features)
    self.hidden_dropout = nn.Dropout(CNN_DROPOUT_RATE)
    self.classifier = nn.Linear(preset.dense_features, NUM_CLASSES)

  def forward(self, images: torch.Tensor) -> torch.Tensor:
    x = self.blocks(images).flatten(1)
    return self.classifier(self.hidden_dropout(F.relu(self.hidden(x))))


def _normalize(images: torch.Tensor) -> torch.Tensor:
  """:func:`examples.cifar10.augment.normalize`: uint8 to float32 in [-1, 1]."""
  return (images.float() / 255.0 - 0.5) / 0.5


def _warp(
  images: torch.Tensor,
  flip: torch.Tensor,
  angle: torch.Tensor,
  shift: torch.Tensor,
  scale: torch.Tensor,
) -> torch.Tensor:
  """:func:`examples.cifar10.augment.apply_affine` on NCHW images.

  Output pixel ``p`` reads the input bilinearly at
  ``c + R(-angle) (p - c - shift) / scale``, about the image centre ``c``,
  mirrored left to right where ``flip`` is set; pixels outside the image read
  :data:`~examples.cifar10.augment.BLACK`. ``affine_grid`` wants that map in
  coordinates where the outermost pixel centres lie at -1 and 1
  (``align_corners=True``), so the pixel map is rescaled by the half sizes
  ``(size - 1) / 2``.

  ``grid_sample`` can only pad with zeros (or border values), so it samples
  ``images - BLACK``, which is zero wherever the input is black, and adds
  ``BLACK`` back: interpolating towards a zero outside and then shifting is
  exactly interpolating towards ``BLACK``.

  Args:
    images: float ``(N, C, H, W)`` normalised images.
    flip: bool ``(N,)``.
    angle: ``(N,)`` rotation in radians, counter-clockwise as displayed.
    shift: ``(N, 2)`` translation in pixels, ``(right, down)``.
    scale: ``(N,)`` zoom factor.

  Returns:
    The warped images, same shape.
  """
  height, width = images.shape[-2:]
  half_height, half_width = (height - 1) / 2, (width - 1) / 2
  cos, sin = angle.cos(), angle.sin()
  right, down = shift.unbind(-1)
  mirror = 1.0 - 2.0 * flip.float()
  source_x = mirror[:, None] * torch.stack(
    [
      cos,
      -sin * half_height / half_width,
      (sin * down - cos * right) / half_width,
    ],
    dim=-1,
  )
  source_y = torch.stack(
    [
      sin * half_width / half_height,
      cos,
      -(sin * right + cos * down) / half_height,
    ],
    dim=-1,
  )
  theta = torch.stack([source_x, source_y], dim=1) / scale[:, None, None]
  grid = F.affine_grid(theta, list(images.shape), align_corners=True)
  return (
    F.grid_sample(
      images - BLACK,
      grid,
      mode="bilinear",
      padding_mode="zeros",
      align_corners=True,
    )
    + BLACK
  )


def _augment(images: torch.Tensor) -> torch.Tensor:
  """:func:`examples.cifar10.augment.augment` on NCHW images.

  Draws the flips, angles, whole-pixel shifts and scales from the same
  distributions as :func:`~examples.cifar10.augment.sample_affine_params`.
  """
  batch_size, _, height, width = images.shape
  max_angle = math.radians(MAX_ROTATION_DEGREES)
  max_shift = MAX_TRANSLATION_FRACTION * torch.tensor(
    [width, height], dtype=torch.float32
  )
  flip = torch.rand(batch_size) < FLIP_PROBABILITY
  angle = torch.empty(batch_size).uniform_(-max_angle, max_angle)
  shift = torch.round(
    torch.empty(batch_size, 2).uniform_(-1.0, 1.0) * max_shift
  )
  scale = torch.empty(batch_size).uniform_(*SCALE_RANGE)
  return _warp(images, flip, angle, shift, scale)


# ---------------------------------------------------------------------------
# MinGPT.


class _CausalSelfAttention(_Module):
  """Batched-head causal attention with Karpathy's scaling and dropouts."""

  def __init__(self, preset: GPTPreset):
    super().__init__()
    width = preset.n_embd
    self.num_heads = preset.n_head
    self.score_scale = width**-0.5
    self.query = nn.Linear(width, width, bias=False)
    self.key = nn.Linear(width, width, bias=False)
    self.value = nn.Linear(width, width, bias=False)
    self.attention_dropout = nn.Dropout(GPT_DROPOUT_RATE)
    self.projection = nn.Linear(width, width)
    self.output_dropout = nn.Dropout(GPT_DROPOUT_RATE)
    causal = torch.ones(preset.block_size, preset.block_size, dtype=torch.bool)
    self.register_buffer("causal", causal.tril(), persistent=False)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    batch, time, width = x.shape
    head_shape = (batch, time, self.num_heads, width // self.num_heads)
    query, key, value = (
      layer(x).view(head_shape).transpose(1, 2)
      for layer in (self.query, self.key, self.value)
    )
    # Written out rather than F.scaled_dot_product_attention: with dropout on,
    # that falls back to this same computation on the CPU, and was no faster
    # (22.5 s against 21.4 s per paper step here).
    scores = (query @ key.transpose(-2, -1)) * self.score_scale
    scores = scores.masked_fill(~self.causal[:time, :time], float("-inf"))
    weights = self.attention_dropout(scores.softmax(dim=-1))
    heads = weights @ value
    heads = heads.transpose(1, 2).reshape(batch, time, width)
    return self.output_dropout(self.projection(heads))


class _TransformerBlock(_Module):
  """Pre-LayerNorm block: ``x + attn(ln1(x))``, then ``x + ffn(ln2(x))``."""

  def __init__(self, preset: GPTPreset):
    super().__init__()
    width = preset.n_embd
    hidden = _FEED_FORWARD_EXPANSION * width
    self.attention_norm = nn.LayerNorm(width, eps=_LAYER_NORM_EPSILON)
    self.attention = _CausalSelfAttention(preset)
    self.feed_forward_norm = nn.LayerNorm(width, eps=_LAYER_NORM_EPSILON)
    self.feed_forward = nn.Sequential(
      nn.Linear(width, hidden),
      nn.ReLU(),
      nn.Linear(hidden, width),
      nn.Dropout(GPT_DROPOUT_RATE),
    )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = x + self.attention(self.attention_norm(x))
    return x + self.feed_forward(self.feed_forward_norm(x))


class _MinGPT(_Module):
  """Karpathy's character-level GPT with his N(0, 0.02^2) initialisation."""

  def __init__(self, preset: GPTPreset):
    super().__init__()
    self.token_embedding = nn.Embedding(VOCAB_SIZE, preset.n_embd)
    self.position_embedding = nn.Embedding(preset.block_size, preset.n_embd)
    self.blocks = nn.Sequential(
      *(_TransformerBlock(preset) for _ in range(preset.n_layer))
    )
    self.final_norm = nn.LayerNorm(preset.n_embd, eps=_LAYER_NORM_EPSILON)
    self.lm_head = nn.Linear(preset.n_embd, VOCAB_SIZE)
    self.apply(_init_gpt_weights)

  def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(token_ids.shape[1])
    x = self.token_embedding(token_ids) + self.position_embedding(positions)
    return self.lm_head(self.final_norm(self.blocks(x)))


def _init_gpt_weights(module: nn.Module) -> None:
  """Karpathy's ``_init_weights``; LayerNorm keeps PyTorch's ones and zeros."""
  if isinstance(module, nn.Linear | nn.Embedding):
    nn.init.normal_(module.weight, std=_GPT_INIT_STDDEV)
  if isinstance(module, nn.Linear) and module.bias is not None:
    nn.init.zeros_(module.bias)


# ---------------------------------------------------------------------------
# Steps.


def _require_torch() -> None:
  if torch is None:
    raise ImportError(
      "The PyTorch peers need torch; install it (CPU build) to run them, or "
      "check available() first."
    )


def _build_model(model: str, preset: str) -> nn.Module:
  if model == "cnn":
    return _CNN(CNN_PRESETS[preset])
  return _MinGPT(GPT_PRESETS[preset])


def _make_loss(
  model: str, preset: str, network: nn.Module
) -> Callable[[], torch.Tensor]:
  """Draws a fixed batch; returns the training loss on it as a function."""
  if model == "cnn":
    batch_size = CNN_PRESETS[preset].batch_size
    height, width, channels = IMAGE_SHAPE
    # NHWC ("channels_last") layout, because it is the faster one here: with
    # 2 threads on a 2-core CPU a paper step took 1.12 s against 1.40 s in
    # NCHW, a tiny step 71 ms against 83 ms (medians of 7 and 15 steps
    # interleaved with the other layout's).
    network.to(memory_format=torch.channels_last)
    images = torch.randint(
      0, 256, (batch_size, channels, height, width), dtype=torch.uint8
    )
    labels = torch.randint(0, NUM_CLASSES, (batch_size,))

    def cnn_loss() -> torch.Tensor:
      inputs = _augment(_normalize(images))
      inputs = inputs.contiguous(memory_format=torch.channels_last)
      return F.cross_entropy(network(inputs), labels)

    return cnn_loss

  gpt = GPT_PRESETS[preset]
  shape = (gpt.batch_size, gpt.block_size)
  inputs = torch.randint(0, VOCAB_SIZE, shape)
  targets = torch.randint(0, VOCAB_SIZE, shape)

  def gpt_loss() -> torch.Tensor:
    logits = network(inputs)
    return F.cross_entropy(logits.view(-1, VOCAB_SIZE), targets.view(-1))

  return gpt_loss


def make_step(
  model: str, preset: str, *, threads: int, seed: int = 0
) -> Callable[[], float]:
  """Builds the PyTorch peer of one training step of an example model.

  The model is initialised and a random batch is drawn from ``seed``. Every
  call of the returned function then runs a full step on that batch, as our
  training loops do: (for the CNN) normalise and augment the uint8 images,
  forward in training mode, cross-entropy loss, backward, and one Adam update.

  Args:
    model: ``"cnn"`` or ``"gpt"``.
    preset: ``"paper"`` or ``"tiny"``.
    threads: intra-op threads for PyTorch. The setting is process-wide, so
      each step re-applies it in case another peer changed it.
    seed: seeds the parameters, the batch and the augmentation and dropout
      streams; the step function's sequence of losses depends on it alone.

  Returns:
    A function running one step and returning its loss as a Python float,
    read after the step (the optimizer update included) has finished.

  Raises:
    ImportError: if PyTorch is not installed.
    ValueError: if ``model``, ``preset`` or ``threads`` is invalid.
  """
  _require_torch()
  _check(model, preset)
  if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
    raise ValueError(f"threads must be a positive int, got {threads!r}.")
  # Other code in the process may use PyTorch's global generator too; the
  # step keeps its own generator state and swaps it in for each step.
  with torch.random.fork_rng(devices=[]):
    torch.manual_seed(seed)
    network = _build_model(model, preset)
    loss_fn = _make_loss(model, preset, network)
    rng_state = torch.get_rng_state()
  network.train()
  optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)

  def step() -> float:
    nonlocal rng_state
    if torch.get_num_threads() != threads:
      torch.set_num_threads(threads)
    with torch.random.fork_rng(devices=[]):
      torch.set_rng_state(rng_state)
      loss = loss_fn()
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
      rng_state = torch.get_rng_state()
    return loss.item()

  return step


def parameter_count(model: str, preset: str) -> int:
  """Trainable parameters of the PyTorch peer, to check it against ours.

  The model is built on PyTorch's meta device, so counting allocates and
  initialises nothing, even for the paper presets.

  Raises:
    ImportError: if PyTorch is not installed.
    ValueError: if ``model`` or ``preset`` is unknown.
  """
  _require_torch()
  _check(model, preset)
  with torch.device("meta"):
    network = _build_model(model, preset)
  return sum(p.numel() for p in network.parameters() if p.requires_grad)
