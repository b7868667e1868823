#!/usr/bin/env bash
# Everything the tests need, from a checkout, in one command: the package (editable) with every
# extra, the in-browser page's pinned npm libraries, and Debian's Chromium for the browser tests.
#
#   scripts/setup.sh              # torch pinned by constraints.txt (our reference machine's CPU wheel)
#   scripts/setup.sh --any-torch  # other machines: pip picks the torch that fits (pyproject: torch>=2.2)
#
# Without npm the in-browser page's tests skip; without root and apt-get, install chromium and
# chromium-driver (or chromedriver) yourself, or the browser tests skip. Under CI (CI=true, as CI
# services and .ci/run set it) those tests fail instead, so set-up fails first, in one line
# saying what it could not install.
set -euo pipefail
cd "$(dirname "$0")/.."

under_ci=false
case "$(printf %s "${CI:-}" | tr '[:upper:]' '[:lower:]')" in true | 1 | yes) under_ci=true ;; esac
ci_missing=()
missing() {  # $1: what is missing and how to get it; $2: what happens to the tests without it
    if $under_ci; then
        ci_missing+=("$1")
    else
        echo "setup: $1; $2"
    fi
}

constraints=(-c constraints.txt)
if [ "${1:-}" = "--any-torch" ]; then
    constraints=()
elif [ $# -gt 0 ]; then
    echo "usage: scripts/setup.sh [--any-torch]" >&2
    exit 2
fi

python3 -m pip install -q ${constraints[@]+"${constraints[@]}"} -e ".[dev]"

if ! command -v npm >/dev/null; then
    missing "npm not found (install Node.js, then npm ci --prefix web)" "the in-browser page's tests will skip"
elif ! npm ci --prefix web --no-audit --no-fund --loglevel=error; then   # pinned in web/package-lock.json
    missing "npm ci --prefix web failed (see above), so the page's libraries are not installed" \
        "the in-browser page's tests will skip"
fi

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } \
            || missing "chromium could not be installed (apt-get install chromium chromium-driver failed)" \
                "the browser tests will skip"
    else
        missing "chromium and chromedriver are missing (Debian, as root: apt-get install chromium chromium-driver)" \
            "the browser tests will skip"
    fi
fi
if [ ${#ci_missing[@]} -gt 0 ]; then
    (IFS=";"; echo "setup: CI: cannot install what the tests need:${ci_missing[*]/#/ }" >&2)
    exit 1
fi
echo "setup: done; run the tests with: python3 -m pytest -q -rs"
