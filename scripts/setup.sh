#!/usr/bin/env bash
# One-time set-up of a virtual environment in .venv with framefusion and its test tools.
# Re-running is cheap: it only installs what is missing.
#
# torch: transformers' video processors need torchvision. On this project's machines the pinned
# builds below install from a local wheel cache (no multi-GB download). Elsewhere, override with
#   TORCH_SPEC="torch torchvision" bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "[setup] installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  "${PIP[@]}" install $TORCH_SPEC 2>&1 | grep -v "^WARNING: Location" || true
fi
# Headless Chromium for the browser tests (Debian's packages; only as root and only if missing).
if [ "$(id -u)" = 0 ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing chromium + chromium-driver (browser tests)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1 \
    || echo "[setup] could not install chromium; the browser tests will be skipped"
fi
echo "[setup] installing framefusion (editable) with test and plot extras"
"${PIP[@]}" install -e ".[test,plots]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, torchvision, transformers, pytest, hypothesis, framefusion; print('[setup] ok: torch', torch.__version__, '| transformers', transformers.__version__, '| framefusion', framefusion.__version__)"
