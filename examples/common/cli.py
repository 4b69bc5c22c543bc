"""The command line of both trainers, generated from their config dataclass.

``--preset NAME`` picks the preset the other options start from; every field
of the config is an option (``--lr``, ``--batch-size``, ``--no-augment``, the
model's ``--n-layer``...), with its docstring as help. The help reads as one
paragraph per option whatever the docstring's line breaks, shows each default
once, and lists the run's essentials first, then the groups of
:data:`HELP_GROUPS`. :func:`main` then runs the trainer and turns what can go
wrong into one line on standard error:

* a bad option: ``error: ...``, exit status 2;
* an error at run time (data not found, run folder in use, divergence...):
  ``error: ...``, exit status 1; ``--debug`` (or ``EXADAM_DEBUG=1``) shows
  the traceback instead;
* SIGTERM or Ctrl-C: the run saves a checkpoint at the current step, prints
  where it stopped and how to resume, and exits with 128 + the signal number;
* a lost peer in a multi-process run: which process was lost, and that
  ``--resume`` continues from the last checkpoint; exit status 1.

Before training it applies the CPU settings of :mod:`examples.common.cpu_setup`
and turns on JAX's persistent compilation cache
(:mod:`examples.common.compile_cache`, ``--compilation-cache``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import os
import re
import sys
import textwrap
import traceback
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from examples.common import (
  compile_cache,
  cpu_setup,
  distributed,
  training_run,
)

DEBUG_ENV_VAR = "EXADAM_DEBUG"
RUN_ERRORS = (ValueError, OSError, FloatingPointError, RuntimeError)
"""What a run can raise for reasons of its inputs or environment."""

ESSENTIALS = (
  "preset",
  "optimizer",
  "lr",
  "iters",
  "epochs",
  "batch_size",
  "seed",
  "data_dir",
  "text",
  "out_dir",
  "resume",
)
"""The options ``--help`` lists first, in this order: what most runs set."""

HELP_GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
  (
    "optimization",
    "Learning-rate schedule and weight decay.",
    (
      "schedule",
      "warmup_fraction",
      "final_fraction",
      "plateau_factor",
      "plateau_patience",
      "weight_decay",
    ),
  ),
  (
    "exadam",
    "EXAdam's three components, to turn off one at a time for ablations.",
    ("cross_moment_debiasing", "gradient_acceleration", "dynamic_step_size"),
  ),
  ("model", "", ("model",)),
  (
    "data",
    "Finding, checking and using the data set.",
    ("download", "verify_data", "val_size", "max_train_images", "augment"),
  ),
  (
    "evaluation",
    "When and on how much data the losses are measured; the final sample.",
    ("eval_interval", "eval_iters", "sample_tokens", "temperature", "prompt"),
  ),
  (
    "checkpoint",
    "Checkpoints and resuming.",
    ("checkpoint_every", "keep_checkpoints", "restart_if_damaged"),
  ),
  (
    "multi_device",
    "Devices, fully sharded state and multi-host runs.",
    (
      "num_devices",
      "fsdp",
      "distributed",
      "coordinator_address",
      "num_processes",
      "process_id",
      "heartbeat_timeout",
    ),
  ),
  (
    "compilation",
    "Where compiled programs are kept for the next run.",
    ("compilation_cache",),
  ),
  ("console", "What the run prints.", ("progress", "debug")),
)
"""The groups ``--help`` shows after the essentials, in this order, as
(name, description, fields). The ``model`` field, a dataclass, is a group of
its own; fields that no group names come last, under "other options"."""


def parse(
  presets: Mapping[str, Any],
  argv: Sequence[str],
  *,
  prog: str,
  description: str,
) -> Any:
  """The config the command line asks for.

  Args:
    presets: The trainer's presets by name; the first is the default.
    argv: The arguments, without the program name.
    prog: The program's name in the help.
    description: The first lines of the help.

  Returns:
    ``presets[--preset]`` with the other options applied.

  Raises:
    SystemExit: For ``--help`` and for options that cannot be parsed.
    ValueError: If a value is out of range.
  """
  import tyro  # Only the command line needs it, not the benchmarks.

  preset_parser = argparse.ArgumentParser(prog=prog, add_help=False)
  preset_parser.add_argument("--preset", choices=list(presets))
  known, _ = preset_parser.parse_known_args(argv)
  default = presets[known.preset or next(iter(presets))]
  config_class = type(default)
  deferred = _with_deferred_checks(config_class)
  parsed = tyro.cli(
    deferred,
    args=list(argv),
    default=default,
    prog=prog,
    description=f"{description} Presets: {', '.join(presets)}.",
    config=(tyro.conf.OmitArgPrefixes,),
    registry=_help_registry(deferred, list(presets)),
  )
  if hasattr(parsed, _DEFERRED_ERROR):
    raise getattr(parsed, _DEFERRED_ERROR)
  return config_class(
    **{
      field.name: getattr(parsed, field.name)
      for field in dataclasses.fields(parsed)
    }
  )


_DEFERRED_ERROR = "_deferred_error"


def _with_deferred_checks(config_class: type) -> type:
  """``config_class`` with its ``__post_init__`` checks deferred.

  tyro reports a ``ValueError`` from the constructor in a box of its own;
  deferring it lets :func:`main` print it as one line like every other error.
  """

  class Deferred(config_class):
    def __post_init__(self) -> None:
      try:
        super().__post_init__()
      except ValueError as error:
        object.__setattr__(self, _DEFERRED_ERROR, error)

  Deferred.__name__ = Deferred.__qualname__ = config_class.__name__
  Deferred.__doc__ = config_class.__doc__
  return Deferred


# The help: one paragraph per option, the default once, options in groups.
#
# tyro takes each field's help from its docstring but keeps the docstring's
# line breaks, and the field order from the dataclass. A struct rule of its
# constructor registry (tyro's public API for how a type becomes options)
# describes each config dataclass instead: the same fields, types and
# defaults, with the help reflowed into one paragraph, the default moved to
# the end, and the top-level fields regrouped into the groups of HELP_GROUPS
# (which add no prefix to the options' names).


class _HelpGroup:
  """The fields of one ``--help`` group, as attributes."""

  FIELDS: tuple[str, ...] = ()

  def __init__(self, **values: Any) -> None:
    self.__dict__.update(values)


def _help_registry(config_class: type, preset_names: Sequence[str]) -> Any:
  """The tyro registry that lays out the help of ``config_class``."""
  import tyro

  registry = tyro.constructors.ConstructorRegistry()
  groups = _group_types(config_class)

  @registry.struct_rule
  def rule(info: Any) -> Any:
    if info.type is config_class:
      return _grouped_spec(config_class, info.default, groups, preset_names)
    if isinstance(info.type, type) and issubclass(info.type, _HelpGroup):
      specs = {
        spec.name: spec
        for spec in _field_specs(config_class, vars(info.default))
      }
      return tyro.constructors.StructConstructorSpec(
        instantiate=info.type,
        fields=tuple(specs[name] for name in info.type.FIELDS),
      )
    if dataclasses.is_dataclass(info.type) and _is_ours(info.type):
      values = {
        field.name: getattr(info.default, field.name)
        for field in dataclasses.fields(info.type)
        if hasattr(info.default, field.name)
      }
      return tyro.constructors.StructConstructorSpec(
        instantiate=info.type, fields=_field_specs(info.type, values)
      )
    return None

  return registry


def _is_ours(cls: type) -> bool:
  return cls.__module__.split(".")[0] in ("examples", "benchmarks")


def _group_types(config_class: type) -> list[tuple[str, str, type | None]]:
  """Each non-empty group as a ``_HelpGroup`` subclass, in help order.

  The ``model`` group has ``None`` in its place: the field is a dataclass,
  which tyro shows as a group of its own.
  """
  names = [field.name for field in dataclasses.fields(config_class)]
  placed = set(ESSENTIALS)
  groups = []
  for name, description, fields in HELP_GROUPS:
    present = tuple(field for field in fields if field in names)
    placed.update(present)
    if present:
      groups.append((name, description, present))
  other = tuple(name for name in names if name not in placed)
  if other:
    groups.append(("other", "", other))
  return [
    (
      name,
      description,
      None
      if fields == ("model",)
      else type(name, (_HelpGroup,), {"FIELDS": fields}),
    )
    for name, description, fields in groups
  ]


def _grouped_spec(
  config_class: type,
  default: Any,
  groups: list[tuple[str, str, type | None]],
  preset_names: Sequence[str],
) -> Any:
  """The top-level spec: the essentials, the model, then the groups."""
  import tyro

  values = {
    field.name: getattr(default, field.name)
    for field in dataclasses.fields(config_class)
  }
  types = {"preset": Literal[tuple(preset_names)]} if preset_names else {}
  specs = {f.name: f for f in _field_specs(config_class, values, types)}
  top = [specs[name] for name in ESSENTIALS if name in specs]
  for name, description, group in groups:
    if group is None:
      top.append(specs[name])
      continue
    top.append(
      tyro.constructors.StructFieldSpec(
        name=name,
        type=group,
        default=group(**{field: values[field] for field in group.FIELDS}),
        helptext=description,
      )
    )

  def instantiate(**kwargs: Any) -> Any:
    flat = {}
    for key, value in kwargs.items():
      if isinstance(value, _HelpGroup):
        flat.update(vars(value))
      else:
        flat[key] = value
    return config_class(**flat)

  return tyro.constructors.StructConstructorSpec(
    instantiate=instantiate, fields=tuple(top)
  )


def _field_specs(
  cls: type, values: Mapping[str, Any], types: Mapping[str, Any] | None = None
) -> tuple[Any, ...]:
  """A tyro ``StructFieldSpec`` for each field of ``cls`` in ``values``."""
  import tyro

  hints = typing.get_type_hints(cls, include_extras=True)
  docs = _field_docs(cls)
  specs = []
  for field in dataclasses.fields(cls):
    if field.name not in values or not field.init:
      continue
    value = values[field.name]
    text, default_text = help_text(docs.get(field.name, ""))
    field_type = (types or {}).get(field.name, hints[field.name])
    if default_text is not None and value == _declared_default(field):
      # The docstring says what the unset value means: shown as the default.
      hint = f"(default: {default_text})"
      field_type = Annotated[field_type, tyro.conf.arg(help_behavior_hint=hint)]
    specs.append(
      tyro.constructors.StructFieldSpec(
        name=field.name, type=field_type, default=value, helptext=text
      )
    )
  return tuple(specs)


def _declared_default(field: dataclasses.Field) -> Any:
  if field.default is not dataclasses.MISSING:
    return field.default
  if field.default_factory is not dataclasses.MISSING:
    return field.default_factory()
  return dataclasses.MISSING


def help_text(docstring: str) -> tuple[str, str | None]:
  """A field's docstring as one ``--help`` paragraph, and its default clause.

  Line breaks and indentation become single spaces, reST markup (double
  backquotes, ``:class:`` roles) its plain text, and the first letter a
  capital. A parenthesised "(default: ...)" clause, which says what an unset
  value means, is cut out and returned apart, to be shown where tyro shows
  the default.

  >>> help_text('''number of heads (default:
  ...   ``n_embd // 64``).''')
  ('Number of heads.', 'n_embd // 64')
  """
  text = " ".join(docstring.split())
  text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
  text = re.sub(r"``([^`]+)``", r"\1", text)
  default = None
  start = text.find("(default:")
  if start >= 0:
    depth, end = 0, len(text) - 1
    for index in range(start, len(text)):
      depth += {"(": 1, ")": -1}.get(text[index], 0)
      if depth == 0:
        end = index
        break
    default = text[start + len("(default:") : end].strip()
    text = (text[:start].rstrip() + text[end + 1 :]).strip()
  return text[:1].upper() + text[1:], default


def _field_docs(cls: type) -> dict[str, str]:
  """The docstring of each field of ``cls``, inherited ones included.

  A field's docstring is the string literal after it in the class body, or
  else its entry in the ``Attributes:`` section of the class docstring.
  """
  docs: dict[str, str] = {}
  for klass in reversed(cls.__mro__):
    if klass is object or klass.__module__ == __name__:
      continue
    docs.update(_attributes_section(klass.__doc__ or ""))
    try:
      tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
    except (OSError, TypeError, SyntaxError):
      continue
    body = tree.body[0].body if tree.body else []
    for node, after in itertools.pairwise(body):
      if (
        isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and isinstance(after, ast.Expr)
        and isinstance(after.value, ast.Constant)
        and isinstance(after.value.value, str)
      ):
        docs[node.target.id] = after.value.value
  return docs


def _attributes_section(docstring: str) -> dict[str, str]:
  """The entries of a Google-style ``Attributes:`` section, by name."""
  lines = inspect.cleandoc(docstring).splitlines()
  if "Attributes:" not in lines:
    return {}
  docs: dict[str, str] = {}
  name = indent = None
  for line in lines[lines.index("Attributes:") + 1 :]:
    if not line.startswith(" "):
      break  # a blank line or the next section ends it
    depth = len(line) - len(line.lstrip())
    indent = depth if indent is None else indent
    match = re.fullmatch(r"(\w+)(?: \(.*?\))?: (.*)", line.strip())
    if depth == indent and match:
      name = match.group(1)
      docs[name] = match.group(2)
    elif name is not None:
      docs[name] += " " + line.strip()
  return docs


def main(
  train: Callable[[Any], Any],
  presets: Mapping[str, Any],
  argv: Sequence[str] | None,
  *,
  prog: str,
  description: str,
) -> int:
  """Parses the command line, runs ``train(config)``; returns the exit status.

  Args:
    train: The trainer's ``train`` function.
    presets: Its presets; see :func:`parse`.
    argv: The arguments (without the program name); None reads ``sys.argv``.
    prog: The program's name in the help.
    description: The first lines of the help.

  Returns:
    0 on success, 1 for a run-time error, 2 for a bad option, 128 + the
    signal number if a signal stopped the run.
  """
  argv = sys.argv[1:] if argv is None else list(argv)
  debug = "--debug" in argv or os.environ.get(DEBUG_ENV_VAR, "") not in (
    "",
    "0",
  )
  try:
    config = parse(presets, argv, prog=prog, description=description)
  except ValueError as error:
    if debug:
      raise
    print(f"error: {error}", file=sys.stderr)
    return 2
  cpu_setup.configure()
  compile_cache.enable(config.compilation_cache)
  try:
    if config.distributed:
      distributed.initialize(config)
    train(config)
    distributed.finish()
  except training_run.RunStopped as stop:
    distributed.finish()
    print(stop, file=sys.stderr)
    return stop.exit_status
  except KeyboardInterrupt:
    print(
      "error: interrupted before a checkpoint could be saved; --resume "
      "continues from the last one.",
      file=sys.stderr,
    )
    return 130
  except RUN_ERRORS as error:
    if distributed.is_peer_failure(error):
      distributed.lost(distributed.describe_failure(error))
    if debug or config.debug:
      traceback.print_exc()
    else:
      print(f"error: {error}", file=sys.stderr)
    return 1
  return 0
