"""The README's Python snippets run as written."""

import pathlib
import re

import jax.numpy as jnp

README = pathlib.Path(__file__).parent.parent / "README.md"


def test_readme_snippets_run():
  optax_block, nnx_block = re.findall(
    r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL
  )
  x, y = jnp.ones((4, 3)), jnp.ones((4, 2))
  namespace = {}
  exec(compile(optax_block, str(README), "exec"), namespace)
  params, _ = namespace["step"](
    namespace["params"], namespace["opt_state"], x, y
  )
  assert params["w"].shape == (3, 2)
  assert float(jnp.max(jnp.abs(params["w"]))) > 0
  exec(compile(nnx_block, str(README), "exec"), namespace)
  losses = [
    float(
      namespace["train_step"](namespace["model"], namespace["optimizer"], x, y)
    )
    for _ in range(20)
  ]
  assert losses[-1] < losses[0]
