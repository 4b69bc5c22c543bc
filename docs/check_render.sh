#!/usr/bin/env bash
# Checks the built site as a reader sees it, offline: local links, anchors
# and images of every page, no resource loaded from the network, and, in
# headless Chromium, every equation of the API and guide pages typeset by
# MathJax and every image loaded; screenshots for a person to look at.
# Usage: bash docs/check_render.sh [--require-browser] [BUILD_DIR [SCREENSHOT_DIR]]
# (defaults docs/_build/html, docs/_build/screenshots); see check_render.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 docs/check_render.py "$@"
