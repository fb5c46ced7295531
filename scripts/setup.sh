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
# --no-upgrade: installs the two named packages (and what they need), upgrades nothing already there.
if [ "$(id -u)" = 0 ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing Debian's chromium and chromium-driver with apt-get (browser tests)"
  apt_log=$(mktemp)
  # A failing source in apt-get update need not stop the install, so each step is judged on its own,
  # and the message follows what is installed afterwards, not one combined exit status.
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$apt_log" 2>&1 \
    || echo "[setup] apt-get update reported errors (trying the install anyway)"
  apt_status=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-upgrade chromium chromium-driver >>"$apt_log" 2>&1 \
    || apt_status=$?
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "[setup] installed: $(chromium --version 2>/dev/null || echo chromium), $(chromedriver --version 2>/dev/null | head -n 1)"
    [ "$apt_status" = 0 ] || echo "[setup] (apt-get install exited with status $apt_status, though both are installed)"
  else
    echo "[setup] could not install chromium (apt-get install exited with status $apt_status); the browser tests will be skipped:"
    tail -n 5 "$apt_log" | sed 's/^/[setup]   /'
  fi
  rm -f "$apt_log"
fi
echo "[setup] installing framefusion (editable) with test and plot extras"
"${PIP[@]}" install -e ".[test,plots]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, torchvision, transformers, pytest, hypothesis, framefusion; print('[setup] ok: torch', torch.__version__, '| transformers', transformers.__version__, '| framefusion', framefusion.__version__)"
