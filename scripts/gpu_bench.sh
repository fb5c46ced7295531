#!/usr/bin/env bash
# gpu_bench.sh: the GPU measurement of issue 19, as one script for a short-lived GPU machine.
#
# Qwen2-VL with the Qwen2-VL-7B text shape (shipped config qwen2-vl-7b, random weights, the vision
# tower cut to 2 blocks), bfloat16, sdpa: 64 frames of 448x448 = 8192 video tokens (+ ~40 text),
# the untouched model vs FrameFusion and FastV at cost 0.3 / 0.5 / 0.7, 5 interleaved rounds after
# a warm-up, 16 new tokens; then 128 frames (16384 video tokens) for the trend.
#
#   bash scripts/fetch_gpu_wheels.sh   # here, once: transformers 5.24 + regex into .whl/
#   bash scripts/gpu_bench.sh          # there, from the repository root, .whl/ carried along
#                                      # (the run tool: carry=[".whl"], timeout_s=600)
#   SMOKE=1 PYTHON=.venv/bin/python bash scripts/gpu_bench.sh
#                                      # the same commands at a tiny size on this CPU: checks the flags
#   MATCHED=1 bash scripts/gpu_bench.sh
#                                      # instead: equal compute (issue 17), 32 frames for the price of 16
#
# Everything lands under $OUT (default outputs/gpu_bench) as it goes: gpu_bench.log (all that is
# printed) and frames_N/ (bench.json, bench.md, plots). Each bench has its own timeout, so one slow
# part cannot eat the rest; the bench takes timeout's SIGTERM as an interruption and writes the
# rows measured so far, marked incomplete.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-outputs/gpu_bench}"
mkdir -p "$OUT"
LOG="$OUT/gpu_bench.log"
exec > >(tee "$LOG") 2>&1
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"

# Worst case, the timeouts below add up to 600 s (wheels 60, check 60, benches 200+250, 15 s grace
# each); expected: about 5 + 15 + 100 + 170 s.
if [[ "${SMOKE:-0}" == 1 ]]; then
    SHAPE=(--model qwen2-vl-0.5b-llm --size 112 --dtype float32 --device cpu --repeats 1 --new-tokens 2)
    FRAMES=(2 4)
    read -ra LIMITS <<<"${LIMITS:-600 600}"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    SHAPE=(--model qwen2-vl-7b --size 448 --dtype bfloat16 --device cuda --repeats 5 --new-tokens 16)
    FRAMES=(64 128)
    read -ra LIMITS <<<"${LIMITS:-200 250}"  # seconds for each frame count; LIMITS="150 200" to shorten
    # The machine's transformers is too old and it has no network: install the carried wheels into
    # a temporary folder, first on the path (nothing of the machine's own python is changed).
    if ! ls .whl/transformers-5.24.0-*.whl .whl/regex-*.whl >/dev/null; then
        echo "wheels missing in .whl/: run scripts/fetch_gpu_wheels.sh here and carry .whl along"
        exit 2
    fi
    SITE="$(mktemp -d)"
    timeout 60 "$PY" -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl || exit 2
    export PYTHONPATH="$SITE:$PWD"
fi
COMMON=(--vision-depth 2 --attn sdpa --costs 0.3 0.5 0.7 --baselines fastv)

echo "== $(date -u +%FT%TZ) on $(hostname)"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
timeout 60 "$PY" -c 'import sys, torch, transformers, framefusion
print("python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__,
      "cuda", torch.cuda.is_available(), "framefusion from", framefusion.__file__)' || exit 2

status=0
if [[ "${MATCHED:-0}" == 1 ]]; then
    # Issue 17 on a GPU, instead of the two benches above: 32 frames for the compute of 16 untouched
    # (FLOP-priced plan, the vision tower counted), the full 32-block tower of the 7B config, one pass
    # and with the tower over 8 frames at a time. MATCHED=1 bash scripts/gpu_bench.sh
    if [[ "${SMOKE:-0}" == 1 ]]; then MATCH=(--frames 4 --match-frames 2 --vision-depth 1); else MATCH=(--frames 32 --match-frames 16); fi
    for chunk in "" 8; do
        echo "== $(date -u +%T) equal compute ${MATCH[*]} chunk=${chunk:-none} (timeout ${LIMITS[0]} s)"
        timeout --kill-after=15 "${LIMITS[0]}" "$PY" -m framefusion.cli bench "${SHAPE[@]}" --attn sdpa \
            "${MATCH[@]}" --baselines vidcom2 ${chunk:+--chunk-frames "$chunk"} --out "$OUT/matched_${chunk:-one_pass}"
        rc=$?
        echo "== $(date -u +%T) exit $rc"
        ((rc == 0)) || status=1
    done
    for table in "$OUT"/matched_*/bench.md; do [[ -f "$table" ]] && { echo "== $table"; cat "$table"; }; done
    exit "$status"
fi
for i in "${!FRAMES[@]}"; do
    frames=${FRAMES[$i]}
    echo "== $(date -u +%T) bench, $frames frames (timeout ${LIMITS[$i]} s)"
    timeout --kill-after=15 "${LIMITS[$i]}" "$PY" -m framefusion.cli bench "${SHAPE[@]}" "${COMMON[@]}" \
        --frames "$frames" --out "$OUT/frames_$frames"
    rc=$?
    echo "== $(date -u +%T) $frames frames: exit $rc"
    ((rc == 0)) || status=1
done
for table in "$OUT"/frames_*/bench.md; do
    [[ -f "$table" ]] && { echo "== $table"; cat "$table"; }
done
exit "$status"
