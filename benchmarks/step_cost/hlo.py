"""What the compiler makes of one optimizer step: counts from optimised HLO.

For a flat parameter vector of ``n`` elements the compiled step is reduced to
a few figures that explain its cost:

* ``fusions``: fused kernels launched by the step (including scalar ones);
* ``array_passes``: kernels (or copies) that loop over ``n``-element arrays,
  i.e. passes over the data;
* ``array_streams``: ``n``-element arrays read or written by those passes,
  summed; each is ``n * itemsize`` bytes of memory traffic unless cached
  (the least possible is 7: read parameters, gradients and both moments,
  write parameters and both moments);
* ``divides``, ``roots`` and ``transcendentals``: per-element divisions,
  square (or other) roots and other transcendental functions, the expensive
  arithmetic of an otherwise memory-bound update.
"""

from __future__ import annotations

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
import optax

from benchmarks.step_cost.timing import make_step

_INSTRUCTION = re.compile(
  r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*"
  r"(?P<shape>\((?:[^()]|\([^()]*\))*\)|\S+)\s+"
  r"(?P<opcode>[\w\-]+)\((?P<operands>[^)]*)\)"
)
_ARRAY_SHAPE = re.compile(r"\b[a-z][a-z0-9]*\[(?P<dims>[\d,]*)\]")
_OPERAND = re.compile(r"%?(?P<name>[\w.\-]+)\s*$")
_NOT_A_PASS = frozenset(
  {"parameter", "tuple", "get-tuple-element", "bitcast", "constant"}
)
_DIVIDES = frozenset({"divide"})
_ROOTS = frozenset({"sqrt", "rsqrt", "cbrt"})
_TRANSCENDENTALS = frozenset(
  {
    "exponential",
    "exponential-minus-one",
    "log",
    "log-plus-one",
    "power",
    "tanh",
    "logistic",
    "sine",
    "cosine",
    "tan",
    "atan2",
    "erf",
  }
)


@dataclasses.dataclass(frozen=True)
class HloSummary:
  """Counts from the optimised HLO of one step; see the module docstring."""

  num_elements: int
  fusions: int
  array_passes: int
  array_streams: int
  divides: int
  roots: int
  transcendentals: int


@dataclasses.dataclass(frozen=True)
class _Instruction:
  name: str
  opcode: str
  array_outputs: int
  operands: tuple[str, ...]


def compiled_step_text(
  optimizer: optax.GradientTransformation,
  num_elements: int,
  dtype: jax.typing.DTypeLike,
) -> str:
  """Optimised HLO of one donated training step on a flat vector.

  Args:
    optimizer: the transformation, compiled as in the timing benchmark.
    num_elements: length of the parameter vector.
    dtype: parameter dtype.

  Returns:
    The text of the compiled module.
  """
  params = jax.ShapeDtypeStruct((num_elements,), jnp.dtype(dtype))
  opt_state = jax.eval_shape(optimizer.init, params)
  lowered = make_step(optimizer).lower(params, opt_state, params)
  return lowered.compile().as_text()


def summarize_hlo(text: str, num_elements: int) -> HloSummary:
  """Counts the passes and the costly arithmetic over ``n``-element arrays.

  Args:
    text: optimised HLO module text, as from ``compiled.as_text()``.
    num_elements: ``n``, the length of the parameter vector.

  Returns:
    The counts; see the module docstring.

  Raises:
    ValueError: if ``text`` has no ENTRY computation.
  """
  entry: list[_Instruction] = []
  elementwise: list[_Instruction] = []
  in_entry = False
  found_entry = False
  for line in text.splitlines():
    if line.startswith("ENTRY"):
      in_entry = found_entry = True
      continue
    if line.startswith("}"):
      in_entry = False
      continue
    instruction = _parse(line, num_elements)
    if instruction is None:
      continue
    if in_entry:
      entry.append(instruction)
    if instruction.array_outputs:
      elementwise.append(instruction)
  if not found_entry:
    raise ValueError(
      "No ENTRY computation in the HLO text; pass the text of a whole "
      "module, e.g. jax.jit(f).lower(...).compile().as_text()."
    )
  arrays = {i.name for i in entry if i.array_outputs}
  passes = [i for i in entry if i.array_outputs and i.opcode not in _NOT_A_PASS]
  streams = sum(
    i.array_outputs + sum(operand in arrays for operand in i.operands)
    for i in passes
  )
  return HloSummary(
    num_elements=num_elements,
    fusions=sum(i.opcode == "fusion" for i in entry),
    array_passes=len(passes),
    array_streams=streams,
    divides=_count(elementwise, _DIVIDES),
    roots=_count(elementwise, _ROOTS),
    transcendentals=_count(elementwise, _TRANSCENDENTALS),
  )


def _parse(line: str, num_elements: int) -> _Instruction | None:
  match = _INSTRUCTION.match(line)
  if match is None:
    return None
  array_outputs = sum(
    _num_elements(dims.group("dims")) == num_elements
    for dims in _ARRAY_SHAPE.finditer(match.group("shape"))
  )
  operands = tuple(
    operand.group("name")
    for part in match.group("operands").split(",")
    if (operand := _OPERAND.search(part.strip())) is not None
  )
  return _Instruction(
    name=match.group("name"),
    opcode=match.group("opcode"),
    array_outputs=array_outputs,
    operands=operands,
  )


def _num_elements(dims: str) -> int:
  return math.prod(int(d) for d in dims.split(",") if d)


def _count(instructions: list[_Instruction], opcodes: frozenset[str]) -> int:
  return sum(i.opcode in opcodes for i in instructions)
