"""Checks the built sdist and wheel as a package index would get them.

Usage: ``python .ci/check_release.py DIST_DIR`` after ``python -m build
--outdir DIST_DIR .`` (and ``twine check``). Checks that the version is
defined once (``exadam_optax.__version__``, read by setuptools) and has a
changelog entry, that the metadata has the project's URLs and classifiers,
that the sdist holds the tests and LICENSE, and that the wheel holds
``py.typed`` and no examples, benchmarks, tests or data.
"""

from __future__ import annotations

import ast
import email.parser
import pathlib
import sys
import tarfile
import zipfile

import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
HOME = "https://github.com/exadam-optax/exadam-optax"


def _version() -> str:
  """``__version__`` from the package's source, without importing it."""
  tree = ast.parse((ROOT / "exadam_optax" / "__init__.py").read_text())
  for node in tree.body:
    if (
      isinstance(node, ast.Assign)
      and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
      and isinstance(node.value, ast.Constant)
    ):
      return node.value.value
  raise SystemExit("exadam_optax/__init__.py sets no __version__")


def main(dist: pathlib.Path) -> list[str]:
  problems = []
  version = _version()
  project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
  if "version" in project or "version" not in project.get("dynamic", []):
    problems.append("pyproject.toml sets a version of its own")
  if f"## {version} " not in (ROOT / "CHANGELOG.md").read_text():
    problems.append(f"CHANGELOG.md has no entry for {version}")

  sdists = sorted(dist.glob("*.tar.gz"))
  wheels = sorted(dist.glob("*.whl"))
  if len(sdists) != 1 or len(wheels) != 1:
    return [*problems, f"expected one sdist and one wheel in {dist}"]
  sdist_name = f"exadam_optax-{version}"
  if sdists[0].name != f"{sdist_name}.tar.gz":
    problems.append(f"sdist {sdists[0].name} is not version {version}")
  if not wheels[0].name.startswith(f"{sdist_name}-py3-none-any"):
    problems.append(f"wheel {wheels[0].name} is not a pure {version} wheel")

  with tarfile.open(sdists[0]) as sdist:
    names = {name.partition("/")[2] for name in sdist.getnames()}
  for needed in (
    "LICENSE",
    "README.md",
    "CHANGELOG.md",
    "pyproject.toml",
    "conftest.py",
    "exadam_optax/py.typed",
    "tests/optimizer/test_numerics.py",
    "tests/optimizer/exadam_reference.py",
  ):
    if needed not in names:
      problems.append(f"the sdist lacks {needed}")

  with zipfile.ZipFile(wheels[0]) as wheel:
    names = set(wheel.namelist())
    metadata_name = f"{sdist_name}.dist-info/METADATA"
    metadata = email.parser.Parser().parsestr(
      wheel.read(metadata_name).decode()
    )
  if "exadam_optax/py.typed" not in names:
    problems.append("the wheel lacks exadam_optax/py.typed")
  if f"{sdist_name}.dist-info/licenses/LICENSE" not in names:
    problems.append("the wheel lacks LICENSE")
  stray = sorted(
    name
    for name in names
    if not name.startswith(f"{sdist_name}.dist-info/")
    and not (
      name.startswith("exadam_optax/") and name.endswith((".py", "/py.typed"))
    )
  )
  if stray:
    problems.append(f"the wheel holds more than the package: {stray}")

  if metadata["Version"] != version:
    problems.append(f"the wheel's version {metadata['Version']} != {version}")
  urls = metadata.get_all("Project-URL") or []
  if not any(HOME in url for url in urls):
    problems.append(f"the metadata lacks the project's URL {HOME}")
  classifiers = metadata.get_all("Classifier") or []
  for needed in ("Typing :: Typed", "Programming Language :: Python :: 3"):
    if needed not in classifiers:
      problems.append(f"the metadata lacks the classifier {needed!r}")
  if metadata.get("License-Expression") != "Apache-2.0":
    problems.append("the metadata lacks License-Expression: Apache-2.0")
  print(
    f"release {version}: {sdists[0].name} and {wheels[0].name} checked, "
    f"{len(problems)} problems"
  )
  return problems


if __name__ == "__main__":
  found = main(pathlib.Path(sys.argv[1]))
  for problem in found:
    print(f"check_release: {problem}", file=sys.stderr)
  sys.exit(1 if found else 0)
