"""EXAdam against the paper, one step at a time, over the whole float range.

The rule under test, the numeric contract of ``scale_by_exadam``'s docstring:
wherever the terms of the paper's equations fit the dtype of the arithmetic
(``g^2``, ``m^2``, ``v~``, ``m~`` and ``g~`` do not overflow, ``m^2`` is not
subnormal unless negligible against ``eps``, and the fraction
``(m~ + g~) / (sqrt(v~) + eps)`` that the step factor multiplies is 0 or a
normal number) and the true update and new state are representable in the
leaf's dtype, the result is finite and within the usual relative tolerance;
NaN or Inf appear only where one of those terms or a true output overflows,
or an input is not finite. In float32 and in float64, each at its own range.

Hypothesis draws pytrees of one to three leaves (float32, bfloat16, float16,
and float64 under x64) of small shapes; gradients whose magnitudes are
log-uniform over the leaf dtype's range (from a decade below its smallest
normal number up to its largest) or over a narrower window of it, with random
signs and exact zeros; the hyperparameters (``b1`` in [0, 0.999], ``b2`` in
[0, 1 - 1e-7], ``eps`` from float32's smallest normal number to 1e-2) and the
three switches; and one to six consecutive steps, from the initial state or
from a random state at a random count. A random state need not be one these
hyperparameters reach from zero, but ``update`` takes any state (restored
from a checkpoint, say, or cast from a float64 run), and the rule is about
the step from it. Each step is compared with tests/exadam_longdouble.py fed
the state the library returned at the step before, so that errors do not
accumulate and every step is judged on its own.

Tolerance. An output is accurate if ``|ours - true| <= rtol (|true| + scale)``
with ``scale`` the size of the terms it is a sum of, because a sum that
cancels is only as accurate as its largest term: for ``m`` it is
``b1 |m_prev| + (1 - b1) |g|``; ``v`` is a sum of non-negative terms, so its
scale is 0; for the update ``u`` it is the same step taken on those
magnitudes, ``ln(sqrt(2) sqrt(t+1)) (|m~| + |g~|) / (sqrt(v~) + eps)`` with
``|m~|`` made from the scale of ``m``, since both ``m~ + g~`` and ``m`` inside
it can cancel. ``u`` also depends on ``m`` through ``v~``'s factor
``m^2 / (m^2 + eps)``: where ``m`` cancels to about ``sqrt(eps)``, the error
``m`` is allowed moves ``sqrt(v~) + eps`` by up to a factor ``1 + spread``,
and ``spread |u|`` is added. rtol is 1e-5 in float32, the issue's figure, and
1e-12 in float64, the suite's (tests/test_numerics.py). The update takes some
25 roundings (the per-step scalars, the hyperparameters' conversion, about 15
operations per element), so the library's error should stay below about 30
units in the last place, 2e-6 in float32 and 4e-15 in float64, each relative
to the scale; the reference's own error is below 1e-18, except that
``1 - b2**t`` loses a long double's last place (1e-19) to the cancellation,
up to 5e-13 relative for ``b2 = 1 - 1e-7`` at ``t = 2``, and ``sqrt(v~)``
halves that. bfloat16 and float16 leaves are computed in float32 and rounded
to their dtype once, so their allowance adds half a unit in the last place
of their dtype, ``(eps_D / 2) |true|``.

Representable. A true value is representable in dtype D if it is 0 or its
magnitude lies between D's smallest normal number and D's largest number,
each moved inwards by the relative part of the allowance: a value closer to
either end than that may round past it. Only elements whose inputs are finite
and whose three true outputs are representable are judged for accuracy. In
every element, an output of ours that is NaN or infinite needs a true output
that overflows (is above that inner bound) or a non-finite input (a state
that overflowed at an earlier step).

Flush to zero. XLA on CPU reads subnormal inputs as zero and flushes
subnormal results to zero. Where an input (``g``, ``m_prev``, ``v_prev``,
``b1``, ``b2``) or a term of the moments' sums (``b1 m_prev``,
``(1 - b1) g``, ``b2 v_prev``, ``(1 - b2) g^2``) is below the smallest normal
number of the dtype of the arithmetic (float32 for float32 and narrower
leaves, float64 for float64 ones), the hardware takes the step without it.
That can change an output by far more than any tolerance: ``v = 1.5 tiny``
made of two subnormal terms becomes 0, and the update's denominator
``sqrt(v~) + eps`` drops from 1e-19 to ``eps``. So a second reference takes
the step with exactly those numbers replaced by zero, and an element passes
if its three outputs match either reference, where an infinite or NaN output
matches a reference value that overflows, and a zero output matches a
reference value that is itself subnormal (the hardware flushes it). This
excuses what flushing the paper's own inputs, terms and results does; where
nothing is subnormal, the two references agree.

Cost. The steps run eagerly: the hyperparameters are Python numbers built into
the update, so jit would compile once per example, while eager dispatch
compiles each primitive once per shape and dtype, hence the small fixed set of
shapes (tests/test_composition.py checks that jit gives the same results as
eager). Failures are not shrunk: shrinking one here runs into Hypothesis's
five-minute limit, and the assertion message already gives the failing
element's gradient, state, step and hyperparameters, which reproduce it with
one call to ``update``. ``EXADAM_FUZZ_EXAMPLES`` sets the number of examples
per test.
"""

import functools
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import exadam_optax
from tests.optimizer import exadam_longdouble

LD = exadam_longdouble.LD
SHAPES = ((), (1,), (4,), (2, 3))
MAX_STEPS = 6
MAX_INITIAL_COUNT = 10**6
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
TINY_F32 = float(jnp.finfo(jnp.float32).smallest_normal)
FUZZ_SETTINGS = settings(
  max_examples=int(os.environ.get("EXADAM_FUZZ_EXAMPLES", "100")),
  deadline=None,
  derandomize=True,
  database=None,
  phases=(Phase.explicit, Phase.generate),
)


class Problem(NamedTuple):
  """One example: a pytree, the optimizer's arguments and the inputs."""

  kind: str  # The pytree around the leaves: "dict", "list", "tuple", "bare".
  config: dict  # b1, b2, eps and the switches, for both implementations.
  initial: tuple | None  # (count, mu leaves, nu leaves); None: from init.
  grads: tuple  # For each step, one array per leaf.


def _exponent(low: int, high: int):
  """Numbers about uniform in ``[low, high]``: a decade, then a fraction.

  Hypothesis's floats crowd at simple values such as 0; its integers over a
  short range do not, so this is closer to uniform than ``st.floats``.
  """
  return st.tuples(st.integers(low, high - 1), st.floats(0.0, 1.0)).map(sum)


def _decades(dtype) -> tuple[int, int]:
  """The decades of gradient magnitudes for ``dtype``.

  All of its normal range and the decade below it: subnormal numbers, and
  numbers that round to zero.
  """
  finfo = jnp.finfo(dtype)
  return (
    math.floor(math.log10(float(finfo.smallest_normal))) - 1,
    math.floor(math.log10(float(finfo.max))) + 1,
  )


@st.composite
def _arrays(draw, dtype, shape, decades, signed):
  """Magnitudes log-uniform over ``decades``, 1 in 8 zero, clipped to fit."""
  size = math.prod(shape)
  entries = draw(
    st.lists(
      st.tuples(st.integers(0, 7), st.booleans(), _exponent(*decades)),
      min_size=size,
      max_size=size,
    )
  )
  values = np.array(
    [
      0 if kind == 0 else (-1 if signed and negative else 1) * LD(10) ** e
      for kind, negative, e in entries
    ],
    LD,
  )
  largest = float(jnp.finfo(dtype).max)
  values = np.clip(values, -largest, largest).astype(np.float64)
  return values.astype(dtype).reshape(shape)


def _decay_rates(digits: int):
  """Rates in ``[0, 1 - 10**-digits]``: uniform, or ``1 - rate`` log-uniform."""
  return st.one_of(
    st.floats(0.0, 1.0 - 10.0**-digits),
    _exponent(0, digits).map(lambda e: 1.0 - 10.0**-e),
  )


@st.composite
def _problems(draw, dtypes):
  """Problems whose leaves have dtypes drawn from ``dtypes``."""
  kind = draw(st.sampled_from(["dict", "list", "tuple", "bare"]))
  num_leaves = 1 if kind == "bare" else draw(st.integers(1, 3))
  leaves = []
  for _ in range(num_leaves):
    dtype = draw(st.sampled_from(dtypes))
    full = _decades(dtype)
    # The whole range, or a narrower one, in which more elements keep a
    # finite second moment for several steps.
    window = st.tuples(st.integers(*full), st.integers(*full)).map(sorted)
    decades = draw(
      st.one_of(st.just(full), window.filter(lambda w: w[0] < w[1]))
    )
    leaves.append((dtype, draw(st.sampled_from(SHAPES)), decades))
  config = dict(
    b1=draw(_decay_rates(3)),
    b2=draw(_decay_rates(7)),
    eps=draw(_exponent(2, 38).map(lambda e: max(10.0**-e, TINY_F32))),
    cross_moment_debiasing=draw(st.booleans()),
    gradient_acceleration=draw(st.booleans()),
    dynamic_step_size=draw(st.booleans()),
  )

  def arrays(signed):
    return tuple(draw(_arrays(*leaf, signed)) for leaf in leaves)

  initial = None
  if draw(st.booleans()):
    count = draw(st.integers(0, MAX_INITIAL_COUNT))
    initial = (count, arrays(signed=True), arrays(signed=False))
  num_steps = draw(st.integers(1, MAX_STEPS))
  grads = tuple(arrays(signed=True) for _ in range(num_steps))
  return Problem(kind, config, initial, grads)


def _tree(kind, leaves):
  leaves = [jnp.asarray(leaf) for leaf in leaves]
  if kind == "bare":
    return leaves[0]
  if kind == "dict":
    return dict(zip("abc", leaves, strict=False))
  return list(leaves) if kind == "list" else tuple(leaves)


def _compute_dtype(dtype) -> np.dtype:
  """The dtype of the library's arithmetic for a leaf: at least float32."""
  return np.dtype(np.float64 if dtype == np.float64 else np.float32)


def _rounding(dtype) -> float:
  """Unit roundoff of a leaf dtype narrower than its arithmetic, else 0."""
  if _compute_dtype(dtype) == dtype:
    return 0.0
  return float(jnp.finfo(dtype).eps) / 2


def _expected(config, t, g, mu, nu, dtype, flush_below):
  """The true (u, m, v) of step ``t`` and the error each may carry."""
  step = functools.partial(
    exadam_longdouble.exadam_step, t=t, flush_below=flush_below, **config
  )
  true = step(g, mu, nu)
  # The same step on the magnitudes of m's terms: the sizes of m, m~ and g~.
  size = step(np.abs(g), np.abs(mu), nu)
  rtol = RTOL[_compute_dtype(dtype)]
  eps = LD(config["eps"])
  with np.errstate(all="ignore"):  # Infinite inputs give inf / inf.
    denominator = np.sqrt(true.v_tilde) + eps
    u_scale = true.step_factor * (size.m_tilde + size.g_tilde) / denominator
    # v~ grows with |m| through m^2 / (m^2 + eps); an m that is off by the
    # rtol * size.m allowed to it moves sqrt(v~) + eps by up to 1 + spread.
    m_error = rtol * size.m

    def denominator_at(m):
      v_tilde = exadam_longdouble.debiased_second_moment(
        m,
        true.v,
        t,
        config["b1"],
        config["b2"],
        config["eps"],
        config["cross_moment_debiasing"],
      )
      return np.sqrt(v_tilde) + eps

    spread = (
      denominator_at(np.abs(true.m) + m_error)
      / denominator_at(np.maximum(np.abs(true.m) - m_error, 0))
      - 1
    )
    tolerances = (
      rtol * (np.abs(true.u) + u_scale) + np.abs(true.u) * spread,
      rtol * (np.abs(true.m) + size.m),
      rtol * true.v,
    )
    rounding = _rounding(dtype)
    values = (true.u, true.m, true.v)
    return values, tuple(
      rounding * np.abs(x) + (1 + rounding) * tol
      for x, tol in zip(values, tolerances, strict=True)
    )


def _margin(dtype) -> float:
  """The relative part of an output's allowance in ``dtype``."""
  rounding = _rounding(dtype)
  return rounding + (1 + rounding) * RTOL[_compute_dtype(dtype)]


def _representable(x, dtype):
  finfo = jnp.finfo(dtype)
  margin = 1 + _margin(dtype)
  magnitude = np.abs(x)
  return (x == 0) | (
    (magnitude >= LD(float(finfo.smallest_normal)) * margin)
    & (magnitude <= LD(float(finfo.max)) / margin)
  )


def _overflows(x, dtype):
  return ~(np.abs(x) <= LD(float(jnp.finfo(dtype).max)) / (1 + _margin(dtype)))


def _in_range(config, t, g, mu, nu, dtype):
  """Where the true terms of the step fit ``dtype``, the contract's range."""
  true = exadam_longdouble.exadam_step(g, mu, nu, t=t, **config)
  with np.errstate(all="ignore"):
    fits = _representable(true.u / true.step_factor, dtype)
    for term in (g**2, true.m**2, true.v_tilde, true.m_tilde, true.g_tilde):
      fits = fits & ~_overflows(term, dtype)
    # A subnormal m^2 is flushed to zero, which changes m^2 / (m^2 + eps)
    # by more than the tolerance only where eps is below about 1e-33.
    m_squared = true.m**2
    negligible = m_squared < RTOL[dtype] * LD(config["eps"])
    return fits & (_representable(m_squared, dtype) | negligible)


def _check_leaf(config, t, g, mu, nu, u, m, v):
  """Asserts the issue's rule for one leaf at step ``t``, element by element.

  ``g``, ``mu`` and ``nu`` are the step's inputs, ``u``, ``m`` and ``v`` the
  library's update and new moments, all numpy arrays of the leaf's dtype.
  """
  dtype = g.dtype
  assert u.dtype == m.dtype == v.dtype == mu.dtype == nu.dtype == dtype
  g, mu, nu, u, m, v = (
    np.ravel(x).astype(np.float64).astype(LD) for x in (g, mu, nu, u, m, v)
  )
  ours = (u, m, v)
  tiny = float(jnp.finfo(_compute_dtype(dtype)).smallest_normal)
  references = {
    "exact": _expected(config, t, g, mu, nu, dtype, flush_below=0.0),
    "flushed": _expected(config, t, g, mu, nu, dtype, flush_below=tiny),
  }
  finite_inputs = np.isfinite(g) & np.isfinite(mu) & np.isfinite(nu)
  in_range = finite_inputs & _in_range(
    config, t, g, mu, nu, _compute_dtype(dtype)
  )
  exact, _ = references["exact"]
  judged = in_range
  for want in exact:
    judged = judged & _representable(want, dtype)
  accurate = np.zeros_like(judged)
  excused = ~in_range
  for wants, tols in references.values():
    overflows = [_overflows(want, dtype) for want in wants]
    with np.errstate(invalid="ignore"):  # inf - inf
      close = [
        (np.abs(x - want) <= tol)
        | (~np.isfinite(x) & overflow)
        | ((x == 0) & (np.abs(want) < tiny))  # a subnormal result flushed
        for x, want, tol, overflow in zip(
          ours, wants, tols, overflows, strict=True
        )
      ]
    accurate = accurate | (close[0] & close[1] & close[2])
    excused = excused | overflows[0] | overflows[1] | overflows[2]
  nonfinite = ~(np.isfinite(u) & np.isfinite(m) & np.isfinite(v))

  def describe(what, mask):
    i = np.flatnonzero(mask)[0]
    lines = [
      f"{what} in a {dtype.name} leaf at step t={t} with {config}:",
      f"  g={g[i]!r} m_prev={mu[i]!r} v_prev={nu[i]!r}",
      f"  ours (u, m, v) = {[x[i] for x in ours]}",
    ]
    for name, (wants, tols) in references.items():
      lines.append(f"  {name} = {[w[i] for w in wants]}")
      lines.append(f"    allowed error = {[e[i] for e in tols]}")
    return "\n".join(lines)

  wrong = judged & ~accurate
  assert not wrong.any(), describe("Inaccurate result", wrong)
  spurious = nonfinite & ~excused
  assert not spurious.any(), describe("NaN or Inf", spurious)


def _check_problem(problem: Problem) -> None:
  """Runs the problem's steps, checking each against the reference."""
  opt = exadam_optax.scale_by_exadam(**problem.config)
  state = opt.init(_tree(problem.kind, problem.grads[0]))
  if problem.initial is not None:
    count, mu, nu = problem.initial
    state = exadam_optax.ScaleByExAdamState(
      count=jnp.asarray(count, jnp.int32),
      mu=_tree(problem.kind, mu),
      nu=_tree(problem.kind, nu),
    )
  for grads in problem.grads:
    grads_tree = _tree(problem.kind, grads)
    updates, new_state = opt.update(grads_tree, state)
    assert jax.tree.structure(updates) == jax.tree.structure(grads_tree)
    t = int(state.count) + 1
    assert int(new_state.count) == t
    leaves = [
      jax.tree.leaves(tree)
      for tree in (state.mu, state.nu, updates, new_state.mu, new_state.nu)
    ]
    for g, *outputs in zip(grads, *leaves, strict=True):
      _check_leaf(problem.config, t, g, *(np.asarray(x) for x in outputs))
    state = new_state


@FUZZ_SETTINGS
@given(_problems([np.float32, jnp.bfloat16, np.float16]))
def test_float32_and_narrower_follow_the_paper(problem):
  _check_problem(problem)


@pytest.mark.skipif(
  np.finfo(np.longdouble).nmant < 63,
  reason="the reference needs an extended-precision long double",
)
@FUZZ_SETTINGS
# float64 twice: half the leaves are float64. In a tree that mixes dtypes,
# the per-step scalars are float64, cast for the narrower leaves.
@given(_problems([np.float64, np.float64, np.float32, jnp.bfloat16]))
def test_float64_follows_the_paper(problem):
  with jax.enable_x64(True):
    _check_problem(problem)
