"""optax's own contrib and sharding tests, run on EXAdam.

A pull request that adds an optimizer to ``optax.contrib`` adds it to
``_MAIN_OPTIMIZERS_UNDER_TEST`` in ``optax/contrib/_common_test.py`` and to
``OPTIMIZERS`` in ``optax/_src/sharding_test.py``. This module does the same
to the installed optax's copies of those files: it runs each file's source
with EXAdam added to the list and the list then cut to EXAdam alone (the
other optimizers are optax's to test), and pytest collects the test classes.
The anchors it edits are asserted, so a change to those files fails here
instead of testing nothing.
"""

import importlib.util
import types

import optax
import pytest

import exadam_optax

EXADAM = "{'opt_name': 'exadam', 'opt_kwargs': {'learning_rate': 1e-3}}"


def _load_with(module_name: str, edits: list[tuple[str, str, int]]):
  """Runs ``module_name``'s source with each ``(old, new, count)`` edit."""
  spec = importlib.util.find_spec(module_name)
  if spec is None:
    pytest.skip(f"this optax does not ship {module_name}")
  with open(spec.origin, encoding="utf-8") as file:
    source = file.read()
  for old, new, count in edits:
    found = source.count(old)
    assert found == count, f"{old!r} {found} times in {spec.origin}"
    source = source.replace(old, new)
  module = types.ModuleType(f"{module_name}_with_exadam")
  module.__file__ = spec.origin
  module.exadam_optax = exadam_optax  # for the inserted lines
  exec(compile(source, spec.origin, "exec"), module.__dict__)
  return module


_common = _load_with(
  "optax.contrib._common_test",
  [
    (
      "_MAIN_OPTIMIZERS_UNDER_TEST = [\n",
      f"_MAIN_OPTIMIZERS_UNDER_TEST = [\n    {EXADAM},\n",
      1,
    ),
    (
      "# pylint: enable=invalid-name\n",
      "_MAIN_OPTIMIZERS_UNDER_TEST = tuple(\n"
      "    o for o in _MAIN_OPTIMIZERS_UNDER_TEST if o['opt_name'] == 'exadam'\n"
      ")\n"
      "_ALL_OPTIMIZERS_UNDER_TEST = _MAIN_OPTIMIZERS_UNDER_TEST\n",
      1,
    ),
  ],
)
# The file looks optimizers up in optax.contrib, where a merged EXAdam would
# be.
_common.contrib = types.SimpleNamespace(
  **vars(optax.contrib), exadam=exadam_optax.exadam
)
ContribTest = _common.ContribTest

_sharding = _load_with(
  "optax._src.sharding_test",
  [
    (
      "OPTIMIZERS = {\n",
      "OPTIMIZERS = {\n    'exadam': exadam_optax.exadam(1.0),\n",
      1,
    ),
    (
      "    'yogi': optax.yogi(1.0),\n}\n",
      "    'yogi': optax.yogi(1.0),\n}\n"
      "OPTIMIZERS = {'exadam': OPTIMIZERS['exadam']}\n",
      1,
    ),
    # optax compares version strings, and '0.10.2' < '0.7.2' as strings:
    # without this, the two sharding-type tests of each optimizer skip
    # themselves on jax 0.10 and later.
    ("if jax.__version__ < '0.7.2'", "if False", 2),
  ],
)
ShardingTest = _sharding.ShardingTest
