#!/usr/bin/env bash
# fetch_gpu_wheels.sh: download, here, the wheels the GPU machine lacks into .whl/ (git-ignored).
# Its python is 3.12 and its transformers (5.17) is below framefusion's range, and it has no network:
# scripts/gpu_bench.sh installs these there (carry .whl along with the working tree).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
rm -f .whl/*.whl  # one version of each, or pip refuses to install the folder
"${PYTHON:-python3}" -m pip download --only-binary=:all: --python-version 3.12 --no-deps \
    transformers==5.24.0 'regex>=2025.10.22' -d .whl
ls -l .whl
