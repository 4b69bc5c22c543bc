"""Checks the built documentation as a reader sees it, with no network.

1. Every page's local links, anchors, images, scripts and stylesheets exist
   in the build, and no page loads a script, stylesheet or image from the
   network (external links for the reader to follow are fine).
2. Headless Chromium opens the API and guide pages (and a few others) from
   ``file://`` URLs; MathJax must have typeset every equation of a page
   without a TeX error, and every image must have loaded.
3. It takes a screenshot of each of those pages, for a person to look at.

Run it as ``bash docs/check_render.sh [--require-browser] [BUILD_DIR
[SCREENSHOT_DIR]]`` after ``python -m sphinx -W --keep-going -b html docs
docs/_build/html``. Without a Chromium (Debian's package: ``apt-get install
chromium``) steps 2 and 3 are skipped with a message, or, with
``--require-browser`` (as CI runs it), that is a failure. Exits with status 1
on any failure.
"""

from __future__ import annotations

import html.parser
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse

PAGES = (
  "api.html",
  "guide.html",
  "index.html",
  "trainers.html",
  "results/index.html",
  "results/tuned-gpt.html",
)
"""The pages opened in the browser: the API and guide pages first."""

BROWSER_FLAGS = (
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-default-apps",
  "--hide-scrollbars",
  "--virtual-time-budget=20000",
)

# Run by each page after it loaded: marks on <body> whether MathJax finished
# and which images did not decode, so that the dumped DOM tells.
PROBE = """<script>
window.addEventListener("load", function () {
  function mark(mathjax) {
    var body = document.body;
    var broken = [].filter.call(document.images, function (image) {
      return !(image.complete && image.naturalWidth > 0);
    });
    body.setAttribute("data-images-broken", broken.map(function (image) {
      return image.getAttribute("src");
    }).join(" "));
    body.setAttribute("data-mathjax", mathjax);
    body.setAttribute("data-probed", "1");
  }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(function () { mark("done"); },
                                 function () { mark("failed"); });
  } else {
    mark("absent");
  }
});
</script>"""


class _Page(html.parser.HTMLParser):
  """The ids and the references of one HTML page."""

  def __init__(self) -> None:
    super().__init__()
    self.ids: set[str] = set()
    self.refs: list[tuple[str, str]] = []  # (link or resource, URL)

  def handle_starttag(self, tag, attrs) -> None:
    attrs = dict(attrs)
    for key in ("id", "name"):
      if attrs.get(key):
        self.ids.add(attrs[key])
    if tag == "a" and attrs.get("href"):
      self.refs.append(("link", attrs["href"]))
    elif tag in ("img", "script", "iframe") and attrs.get("src"):
      self.refs.append(("resource", attrs["src"]))
    elif tag == "link" and attrs.get("href"):
      rel = attrs.get("rel") or ""
      loaded = any(word in rel for word in ("stylesheet", "icon", "preload"))
      self.refs.append(("resource" if loaded else "link", attrs["href"]))


def check_links(build: pathlib.Path) -> list[str]:
  """Problems with the local links and resources of every built page."""
  pages: dict[pathlib.Path, _Page] = {}

  def parse(path: pathlib.Path) -> _Page:
    if path not in pages:
      pages[path] = _Page()
      pages[path].feed(path.read_text(encoding="utf-8"))
    return pages[path]

  problems = []
  files = sorted(
    path
    for path in build.rglob("*.html")
    if path.relative_to(build).parts[0] not in ("_static", "_sources")
  )
  for path in files:
    for kind, ref in parse(path).refs:
      url = urllib.parse.urlsplit(ref)
      where = f"{path.relative_to(build)}: {ref}"
      if url.scheme in ("http", "https") or ref.startswith("//"):
        if kind == "resource":
          problems.append(f"{where}: loaded from the network")
        continue
      if url.scheme:  # mailto:, data:, javascript:
        continue
      target = (path.parent / urllib.parse.unquote(url.path)).resolve()
      if not url.path:
        target = path
      elif target.is_dir():
        target = target / "index.html"
      if not target.exists():
        problems.append(f"{where}: no such file in the build")
      elif url.fragment and target.suffix == ".html":
        if urllib.parse.unquote(url.fragment) not in parse(target).ids:
          problems.append(f"{where}: no anchor #{url.fragment}")
  print(f"links and resources of {len(files)} pages checked")
  return problems


def _chromium() -> str | None:
  for name in ("chromium", "chromium-browser", "google-chrome"):
    if path := shutil.which(name):
      return path
  return None


def check_in_browser(
  browser: str, build: pathlib.Path, shots: pathlib.Path
) -> list[str]:
  """Problems of the pages in the browser; writes their screenshots."""
  shots.mkdir(parents=True, exist_ok=True)
  problems = []
  with tempfile.TemporaryDirectory() as profile:
    flags = [browser, *BROWSER_FLAGS, f"--user-data-dir={profile}"]
    for page in PAGES:
      path = build / page
      if not path.is_file():
        problems.append(f"{page}: not built")
        continue
      source = path.read_text(encoding="utf-8")
      # The probe goes into a copy beside the page: relative URLs still work.
      probed = path.with_name(path.stem + ".probe.html")
      probed.write_text(source.replace("</body>", PROBE + "</body>"))
      try:
        dom = subprocess.run(
          [*flags, "--dump-dom", probed.as_uri()],
          capture_output=True,
          text=True,
          timeout=180,
          check=False,
        ).stdout
      finally:
        probed.unlink()
      shot = shots / (page.replace("/", "-").removesuffix(".html") + ".png")
      subprocess.run(
        [
          *flags,
          "--window-size=1280,2400",
          f"--screenshot={shot}",
          path.as_uri(),
        ],
        capture_output=True,
        timeout=180,
        check=False,
      )
      found = _page_problems(source, dom)
      equations = len(
        re.findall(r'class="math notranslate nohighlight"', source)
      )
      rendered = len(re.findall(r"<mjx-container", dom))
      print(
        f"{page}: {equations} equations, {rendered} typeset, screenshot "
        f"{shot}: {'; '.join(found) or 'ok'}"
      )
      problems += [f"{page}: {problem}" for problem in found]
  return problems


def _page_problems(source: str, dom: str) -> list[str]:
  """What went wrong with one page, from its source and its dumped DOM."""
  if 'data-probed="1"' not in dom:
    return ["the page did not finish loading in the browser"]
  problems = []
  equations = len(re.findall(r'class="math notranslate nohighlight"', source))
  rendered = len(re.findall(r"<mjx-container", dom))
  if equations and 'data-mathjax="done"' not in dom:
    problems.append("MathJax did not run")
  if rendered < equations:
    problems.append(f"only {rendered} of {equations} equations typeset")
  if errors := len(re.findall(r"<mjx-merror|data-mjx-error", dom)):
    problems.append(f"{errors} equations with TeX errors")
  broken = re.search(r'data-images-broken="([^"]*)"', dom)
  if broken and broken.group(1).strip():
    problems.append(f"images that did not load: {broken.group(1)}")
  return problems


def main(argv: list[str]) -> int:
  require_browser = "--require-browser" in argv
  argv = [arg for arg in argv if arg != "--require-browser"]
  build = pathlib.Path(argv[0] if argv else "docs/_build/html").resolve()
  shots = pathlib.Path(argv[1] if len(argv) > 1 else "docs/_build/screenshots")
  if not (build / "index.html").is_file():
    print(f"check_render: no built site in {build}", file=sys.stderr)
    return 1
  problems = check_links(build)
  browser = _chromium()
  if browser is None and require_browser:
    print(
      "check_render: no Chromium installed, and --require-browser asks for "
      "the browser checks (apt-get install chromium)",
      file=sys.stderr,
    )
    return 1
  if browser is None:
    print(
      "check_render: SKIPPED the browser checks: no Chromium installed "
      "(apt-get install chromium)",
      file=sys.stderr,
    )
  else:
    problems += check_in_browser(browser, build, shots.resolve())
  for problem in problems:
    print(f"check_render: {problem}")
  print(f"check_render: {len(problems)} problems")
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
