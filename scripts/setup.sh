#!/usr/bin/env bash
# Everything the tests need, from a checkout, in one command: the package (editable) with every
# extra, the in-browser page's pinned npm libraries, and Debian's Chromium for the browser tests.
#
#   scripts/setup.sh              # torch pinned by constraints.txt (our reference machine's CPU wheel)
#   scripts/setup.sh --any-torch  # other machines: pip picks the torch that fits (pyproject: torch>=2.2)
#
# Without npm the in-browser page's tests skip; without root and apt-get, install chromium and
# chromium-driver (or chromedriver) yourself, or the browser tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."

constraints=(-c constraints.txt)
if [ "${1:-}" = "--any-torch" ]; then
    constraints=()
elif [ $# -gt 0 ]; then
    echo "usage: scripts/setup.sh [--any-torch]" >&2
    exit 2
fi

python3 -m pip install -q ${constraints[@]+"${constraints[@]}"} -e ".[dev]"

if command -v npm >/dev/null; then
    npm ci --prefix web --no-audit --no-fund --loglevel=error   # pinned in web/package-lock.json
else
    echo "setup: npm not found; the in-browser page's tests will skip (install Node.js, then npm ci --prefix web)"
fi

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } \
            || echo "setup: chromium could not be installed; the browser tests will skip"
    else
        echo "setup: chromium and chromedriver are missing; the browser tests will skip (Debian: apt-get install chromium chromium-driver)"
    fi
fi
echo "setup: done; run the tests with: python3 -m pytest -q"
