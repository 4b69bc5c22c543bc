"""The README's Python snippets run as written, each on its own."""

import pathlib
import re

import jax.numpy as jnp

README = pathlib.Path(__file__).parent.parent / "README.md"


def _snippets() -> list[str]:
  return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def _run(code: str) -> dict:
  namespace: dict = {}
  exec(compile(code, str(README), "exec"), namespace)
  return namespace


def test_the_optax_snippet_trains():
  namespace = _run(_snippets()[0])
  x, y = jnp.ones((4, 3)), jnp.ones((4, 2))
  params, opt_state = namespace["params"], namespace["opt_state"]
  losses = []
  for _ in range(20):
    losses.append(float(namespace["loss_fn"](params, x, y)))
    params, opt_state = namespace["step"](params, opt_state, x, y)
  assert losses[-1] < losses[0]


def test_the_flax_nnx_snippet_trains_on_its_own():
  namespace = _run(_snippets()[1])
  x, y = jnp.ones((4, 3)), jnp.ones((4, 2))
  losses = [
    float(
      namespace["train_step"](namespace["model"], namespace["optimizer"], x, y)
    )
    for _ in range(20)
  ]
  assert losses[-1] < losses[0]


def test_every_snippet_is_covered():
  assert len(_snippets()) == 2
