#!/usr/bin/env bash
# The README's test command: install everything the tests need, then run them.
#
#   scripts/test.sh [pytest arguments...]
#
# 1. Debian's Chromium, when /usr/bin/chromium is missing (the browser tests drive it; Playwright
#    cannot download browsers here). apt-get runs as root, or through `sudo -n` for a user.
#    CAM_EXPLORER_SKIP_BROWSER=1 skips this step (and the browser tests); CAM_EXPLORER_CHROMIUM
#    names another browser binary (the tests use it too).
# 2. The dev requirements (runtime + test tools), with the same Python that runs pytest.
# 3. `python -m pytest "$@"`; its exit status is this script's.
#
# Non-interactive throughout (CI runs it with no stdin). PYTHON picks the interpreter (default:
# `python`, else `python3`).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$(command -v python || command -v python3 || echo python)}"
CHROMIUM="${CAM_EXPLORER_CHROMIUM:-/usr/bin/chromium}"

if [[ ! -x "$CHROMIUM" && "${CAM_EXPLORER_SKIP_BROWSER:-}" != "1" ]]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: $CHROMIUM is missing and apt-get is not available: install Chromium at" \
            "$CHROMIUM, or set CAM_EXPLORER_SKIP_BROWSER=1 to skip the browser tests." >&2
        exit 2
    fi
    if [[ "$(id -u)" == "0" ]]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo -n)
    else
        echo "error: $CHROMIUM is missing; installing it needs root: run" \
            "'apt-get install -y chromium' as root, or set CAM_EXPLORER_SKIP_BROWSER=1." >&2
        exit 2
    fi
    echo "Installing Debian's Chromium ($CHROMIUM is missing)..."
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq chromium </dev/null >/dev/null
fi

"$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    -r requirements-dev.txt </dev/null
exec "$PYTHON" -m pytest "$@"
