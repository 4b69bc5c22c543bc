"""Sphinx configuration of the exadam-optax documentation.

Build the site with ``python -m sphinx -W --keep-going -b html docs
docs/_build/html`` and run the examples of its pages with ``-b doctest``
(``pip install -e ".[docs]"`` installs the tools). The site needs no
network: MathJax is copied into it by ``sphinx-mathjax-offline``.
"""

import os
import pathlib
import sys

# The pages' doctests (``-b doctest``) run on the CPU, where the sharding
# example of the guide gets 4 simulated devices; set before JAX starts.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get(
  "XLA_FLAGS", ""
):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=4"
  ).strip()

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the package and the examples, uninstalled

import exadam_optax  # noqa: E402

project = "exadam-optax"
author = "the exadam-optax authors"
copyright = "2026, the exadam-optax authors"
release = version = exadam_optax.__version__

extensions = [
  "myst_parser",
  "sphinx.ext.autodoc",
  "sphinx.ext.napoleon",
  "sphinx.ext.doctest",
  "sphinx.ext.mathjax",
  "sphinx-mathjax-offline",  # serves MathJax from _static/, not a CDN
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_snippets"]
root_doc = "index"

# MyST: $...$ and $$...$$ math, ::: fences, and anchors for ## headings so
# that pages can link to each other's sections.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Autodoc as in optax's documentation: Google-style docstrings through
# napoleon, members in source order, and signatures without the type hints
# (jax.typing.ArrayLike would print as a union of a dozen types).
autodoc_member_order = "bysource"
autodoc_typehints = "none"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = False  # chex.Array would print as a union

html_theme = "sphinx_book_theme"
html_title = f"exadam-optax {version}"
html_theme_options = {
  "repository_url": "https://github.com/exadam-optax/exadam-optax",
  "use_repository_button": True,
  "show_toc_level": 2,
  "navigation_with_keys": False,
}
html_static_path: list[str] = []
html_last_updated_fmt = None
