#!/usr/bin/env bash
# check_lmms_eval.sh: run the real lmms-eval CLI end to end, offline, through the framefusion launcher
# (python -m framefusion.integrations.lmms_eval) on a small local video QA task, untouched and with
# FrameFusion, and print both accuracies.
#
#   bash scripts/check_lmms_eval.sh [DIR]        # DIR defaults to /tmp/lmms-check
#
# What it does, all inside DIR (nothing is installed into this repository's .venv):
#   1. DIR/venv: a venv on the same Python as .venv that sees .venv's packages (torch, torchvision,
#      transformers, framefusion editable: a .pth runs site.addsitedir on .venv's site-packages, after
#      the venv's own), then `pip install lmms-eval==$LMMS_VERSION decord "filelock<4"` with torch, torchvision and
#      transformers pinned to .venv's versions. A `pip install --dry-run` runs first and the script stops
#      if torch, triton or any nvidia-* package would be downloaded. lmms-eval pins av<16, so the venv
#      gets its own PyAV 15 (shadowing .venv's PyAV 18 in that venv only). Skipped when already there.
#   2. DIR/model: a copy of $MODEL (default: the shipped framefusion/assets/model, a tiny trained
#      Qwen2-VL) and DIR/data: $COUNT clips of the synthetic QA test split (16 frames, 112x112) written
#      at $FPS fps (2 by default, so that qwen_vl_utils' 2 fps sampling keeps every frame), plus
#      qa.json / qa.jsonl ({video, question, answer, kind}).
#   3. DIR/tasks/ffqa: a local lmms-eval task `ffqa` (datasets' json loader on qa.jsonl; the visual is
#      the video path; the prompt is the question; metric: exact match of the answer's first word),
#      then, with HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 and on CPU:
#        python -m framefusion.integrations.lmms_eval --model qwen2_vl \
#          --model_args pretrained=DIR/model,device=cpu,device_map=cpu,max_num_frames=16[,framefusion_cost=$COST] \
#          --tasks ffqa --include_path DIR/tasks --batch_size 1 --limit $COUNT --log_samples --output_path DIR/out/...
#      once without and once with framefusion_cost=$COST; FRAMEFUSION_LOG=1 makes the launcher print
#      the achieved cost of every prefill, so the log (DIR/out/*.log) shows FrameFusion really ran.
#      lmms-eval logs errors and still exits 0, so a run that writes no *_results.json fails the script.
#   4. For comparison, framefusion's own `framefusion eval` on the same qa.json (no system prompt, PyAV
#      decoding), untouched and FrameFusion at $COST.
#   5. Without the launcher, and data-parallel: framefusion is installed into DIR/venv (pip install -e,
#      --no-deps) so that lmms-eval finds its entry point (group lmms_eval.models), then plain
#      `python -m lmms_eval` runs `--model framefusion --model_args base_model=qwen2_vl,...` (FrameFusion
#      at $COST) and `--model qwen2_vl --model_args ...,framefusion_method=none` (untouched), each in one
#      process and under `ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes $PROCS`
#      (CPU, gloo); the script fails unless the per-question answers of 1 and $PROCS processes are equal.
#      DP=0 skips this step.
#
# Environment: MODEL, COUNT (8), COST (0.5), FPS (2), LMMS_VERSION (0.7.3), MAIN_PY (.venv/bin/python),
# THREADS (1: torch CPU threads, to stay light on shared machines), DP (1), PROCS (2), PORT (29541).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=$(mkdir -p "${1:-/tmp/lmms-check}" && cd "${1:-/tmp/lmms-check}" && pwd)
MAIN_PY=${MAIN_PY:-$ROOT/.venv/bin/python}
MODEL=${MODEL:-$ROOT/framefusion/assets/model}
COUNT=${COUNT:-8}
COST=${COST:-0.5}
FPS=${FPS:-2}
LMMS_VERSION=${LMMS_VERSION:-0.7.3}
THREADS=${THREADS:-1}
DP=${DP:-1}
PROCS=${PROCS:-2}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS TOKENIZERS_PARALLELISM=false
VPY=$DIR/venv/bin/python
log() { printf '\n== %s\n' "$*" >&2; }

# ------------------------------------------------------------------ 1. the lmms-eval venv
if [ ! -x "$VPY" ]; then
    BASE_PY=$("$MAIN_PY" -c 'import os, sys; print(os.path.join(sys.base_prefix, "bin", "python%d.%d" % sys.version_info[:2]))')
    "$BASE_PY" -m venv "$DIR/venv"
fi
MAIN_SITE=$("$MAIN_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
VENV_SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import site; site.addsitedir('$MAIN_SITE')" > "$VENV_SITE/zz_framefusion_main_venv.pth"
# filelock<4: lmms-eval 0.7.3's evaluator imports filelock._api, which filelock 4 (in .venv) no longer has
# ("ModuleNotFoundError: No module named 'filelock._api'"); the venv gets its own filelock 3.
REQS=("lmms-eval==$LMMS_VERSION" decord "filelock<4")
if ! "$VPY" -c "import importlib.metadata as m, sys, decord, filelock._api; sys.exit(m.version('lmms_eval') != '$LMMS_VERSION')" 2>/dev/null; then
    log "1. installing lmms-eval $LMMS_VERSION into $DIR/venv (on top of $MAIN_PY's packages)"
    "$MAIN_PY" - > "$DIR/constraints.txt" <<'EOF'
import importlib.metadata as m
for name in ("torch", "torchvision", "transformers"):
    print(f"{name}=={m.version(name)}")
EOF
    cat "$DIR/constraints.txt" >&2
    "$VPY" -m pip install --dry-run -c "$DIR/constraints.txt" "${REQS[@]}" > "$DIR/dryrun.txt" 2>&1
    would=$(grep '^Would install' "$DIR/dryrun.txt" || true)
    echo "$would" >&2
    if echo "$would" | tr ' ' '\n' | grep -Eiq '^(torch|torchvision|triton|nvidia[-_])'; then
        echo "check_lmms_eval: refusing: the install would download torch/triton/nvidia packages (see $DIR/dryrun.txt)" >&2
        exit 1
    fi
    "$VPY" -m pip install -q -c "$DIR/constraints.txt" "${REQS[@]}" > "$DIR/install.log" 2>&1 \
        || { tail -20 "$DIR/install.log" >&2; exit 1; }
fi
"$VPY" -c "import torch, transformers, av, decord, lmms_eval, framefusion, importlib.metadata as m; print('venv: torch', torch.__version__, '| transformers', transformers.__version__, '| av', av.__version__, '| decord', decord.__version__, '| lmms-eval', m.version('lmms_eval'), '| framefusion from', framefusion.__file__)" >&2

# ------------------------------------------------------------------ 2. model and data
log "2. model copy $MODEL -> $DIR/model"
rm -rf "$DIR/model" && mkdir -p "$DIR/model" && cp -r "$MODEL"/. "$DIR/model/"
log "2. $COUNT synthetic QA clips -> $DIR/data"
"$MAIN_PY" - "$DIR/data" "$COUNT" "$FPS" <<'EOF'
import json, sys
from pathlib import Path
from framefusion.data.synthetic_qa import make_sample
from framefusion.tiny_models import write_video

out, count, fps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
records = []
for i in range(count):
    s = make_sample("test", i, num_frames=16)
    path = write_video(s.video, out / f"test_{i:03d}.mp4", fps=fps)
    records.append({"id": i, "video": str(path.resolve()), "question": s.question, "answer": s.answer, "kind": s.kind})
(out / "qa.json").write_text(json.dumps(records, indent=1))
(out / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
print(f"{count} clips, answers: {[r['answer'] for r in records]}", file=sys.stderr)
EOF

# ------------------------------------------------------------------ 3. the local task and the two runs
mkdir -p "$DIR/tasks/ffqa"
cat > "$DIR/tasks/ffqa/ffqa.yaml" <<EOF
task: ffqa
dataset_path: json
dataset_kwargs:
  data_files:
    test: $DIR/data/qa.jsonl
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
process_results: !function utils.process_results
generation_kwargs:
  max_new_tokens: 4
  temperature: 0
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 0.1
EOF
cat > "$DIR/tasks/ffqa/utils.py" <<'EOF'
"""framefusion's synthetic video QA as an lmms-eval task (written by scripts/check_lmms_eval.sh)."""

import re


def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def first_word(text):
    words = re.findall(r"[\w'-]+", text.lower())
    return words[0] if words else ""


def process_results(doc, results):
    return {"exact_match": float(first_word(results[0]) == doc["answer"])}
EOF

run_lmms() {  # name, extra model_args
    local name=$1 extra=$2
    log "3. lmms-eval run: $name"
    rm -rf "$DIR/out/$name"
    mkdir -p "$DIR/out/$name"
    (cd "$ROOT" && HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME="$DIR/hf_home" \
        FRAMEFUSION_LOG=1 CUDA_VISIBLE_DEVICES="" \
        "$VPY" -m framefusion.integrations.lmms_eval --model qwen2_vl \
        --model_args "pretrained=$DIR/model,device=cpu,device_map=cpu,max_num_frames=16$extra" \
        --tasks ffqa --include_path "$DIR/tasks" --batch_size 1 --limit "$COUNT" --log_samples \
        --output_path "$DIR/out/$name") > "$DIR/out/$name.log" 2>&1 \
        || { tail -40 "$DIR/out/$name.log" >&2; echo "check_lmms_eval: run $name failed (log: $DIR/out/$name.log)" >&2; exit 1; }
    # lmms-eval logs an error during evaluation and still exits 0: no results file means it failed
    if [ -z "$(find "$DIR/out/$name" -name '*_results.json' -print -quit)" ]; then
        grep -E 'Error|Traceback' -A3 "$DIR/out/$name.log" | tail -20 >&2
        echo "check_lmms_eval: run $name wrote no results (log: $DIR/out/$name.log)" >&2
        exit 1
    fi
    grep -oE 'framefusion: .*' "$DIR/out/$name.log" | head -4 >&2 || true
}
run_lmms untouched ""
run_lmms framefusion ",framefusion_cost=$COST"

# ------------------------------------------------------------------ 4. the same questions through framefusion eval
log "4. framefusion eval on the same qa.json (own prompt and decoding)"
"$MAIN_PY" -m framefusion.cli eval --model "$DIR/model" --qa "$DIR/data" --frames 16 --costs "$COST" \
    --methods framefusion --threads "$THREADS" --out "$DIR/out/framefusion_eval" > "$DIR/out/framefusion_eval.log" 2>&1 \
    || { tail -20 "$DIR/out/framefusion_eval.log" >&2; exit 1; }

log "results"
"$VPY" - "$DIR" <<'EOF'
import json, re, sys
from pathlib import Path

d = Path(sys.argv[1])
for name in ("untouched", "framefusion"):
    res = sorted((d / "out" / name).rglob("*_results.json"), key=lambda p: p.stat().st_mtime)[-1]
    acc = json.loads(res.read_text())["results"]["ffqa"]["exact_match,none"]
    log = (d / "out" / f"{name}.log").read_text()
    costs = [float(c) for c in re.findall(r"framefusion: prefill \d+ sample \d+: .*?achieved cost ([0-9.]+)", log)]
    how = f"{len(costs)} prefills reduced, mean achieved cost {sum(costs) / len(costs):.3f}" if costs else "no reduction"
    samples = sorted(res.parent.glob("*_samples_ffqa.jsonl"))[-1]
    answers = [json.loads(line)["filtered_resps"] for line in samples.read_text().splitlines()]
    answers = [a if isinstance(a, str) else a[0] for a in answers]
    print(f"lmms-eval qwen2_vl  {name:11s}: exact_match {acc:.3f} ({how}); answers {answers}")
    print(f"    {res}")
rows = json.loads((d / "out" / "framefusion_eval" / "eval.json").read_text())
for r in rows if isinstance(rows, list) else rows["rows"]:
    print(f"framefusion eval    {r['label']:11s}: accuracy {r['accuracy']:.3f} (achieved cost {r['achieved_cost']:.3f}); answers {r['answers']}")
EOF

# ------------------------------------------------------------------ 5. no launcher; 1 vs $PROCS processes
[ "$DP" = "1" ] || exit 0
if ! "$VPY" -c "import importlib.metadata as m, sys; sys.exit(not any(e.value.startswith('framefusion.') for e in m.entry_points(group='lmms_eval.models')))" 2>/dev/null \
    || [ "$(cd "$DIR" && "$VPY" -c 'import framefusion, os; print(os.path.dirname(os.path.dirname(framefusion.__file__)))')" != "$ROOT" ]; then
    log "5. installing framefusion from $ROOT into $DIR/venv (editable, --no-deps: for its lmms_eval.models entry point)"
    "$VPY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT" > "$DIR/install_ff.log" 2>&1 \
        || { tail -20 "$DIR/install_ff.log" >&2; exit 1; }
fi
run_plain() {  # name, processes, model, model_args
    local name=$1 procs=$2 model=$3 margs=$4
    log "5. plain lmms-eval ($procs process(es)): $name"
    rm -rf "$DIR/out/$name"
    mkdir -p "$DIR/out/$name"
    local launch=("$VPY")
    if [ "$procs" -gt 1 ]; then
        launch=("$VPY" -m accelerate.commands.launch --multi_gpu --num_processes "$procs" --num_machines 1
                --mixed_precision no --dynamo_backend no --main_process_port "${PORT:-29541}")
    fi
    (cd "$DIR" && HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME="$DIR/hf_home" \
        FRAMEFUSION_LOG=1 CUDA_VISIBLE_DEVICES="" ACCELERATE_USE_CPU=true \
        "${launch[@]}" -m lmms_eval --model "$model" \
        --model_args "pretrained=$DIR/model,device=cpu,device_map=cpu,max_num_frames=16,$margs" \
        --tasks ffqa --include_path "$DIR/tasks" --batch_size 1 --limit "$COUNT" --log_samples \
        --output_path "$DIR/out/$name") > "$DIR/out/$name.log" 2>&1 \
        || { tail -40 "$DIR/out/$name.log" >&2; echo "check_lmms_eval: run $name failed (log: $DIR/out/$name.log)" >&2; exit 1; }
    if [ -z "$(find "$DIR/out/$name" -name '*_results.json' -print -quit)" ]; then
        grep -E 'Error|Traceback' -A3 "$DIR/out/$name.log" | tail -20 >&2
        echo "check_lmms_eval: run $name wrote no results (log: $DIR/out/$name.log)" >&2
        exit 1
    fi
}
run_plain ff_1 1 framefusion "base_model=qwen2_vl,framefusion_cost=$COST"
run_plain "ff_$PROCS" "$PROCS" framefusion "base_model=qwen2_vl,framefusion_cost=$COST"
run_plain untouched_1 1 qwen2_vl "framefusion_method=none"
run_plain "untouched_$PROCS" "$PROCS" qwen2_vl "framefusion_method=none"

log "results: 1 vs $PROCS processes"
"$VPY" - "$DIR" "$PROCS" <<'EOF'
import json, re, sys
from pathlib import Path

d, procs = Path(sys.argv[1]), sys.argv[2]
failed = False
for kind in ("ff", "untouched"):
    answers = {}
    for n in ("1", procs):
        name = f"{kind}_{n}"
        samples = sorted((d / "out" / name).rglob("*_samples_ffqa.jsonl"))[-1]
        rows = [json.loads(line) for line in samples.read_text().splitlines()]
        answers[n] = {r["doc_id"]: r["filtered_resps"] if isinstance(r["filtered_resps"], str) else r["filtered_resps"][0]
                      for r in rows}
        log = (d / "out" / f"{name}.log").read_text()
        costs = [float(c) for c in re.findall(r"framefusion: prefill \d+ sample \d+: .*?achieved cost ([0-9.]+)", log)]
        res = sorted((d / "out" / name).rglob("*_results.json"))[-1]
        acc = json.loads(res.read_text())["results"]["ffqa"]["exact_match,none"]
        how = f" (mean achieved cost {sum(costs) / len(costs):.3f})" if costs else ""
        print(f"lmms-eval {name:14s}: exact_match {acc:.3f}, {len(rows)} answers, {len(costs)} prefills reduced{how}")
    same = answers["1"] == answers[procs]
    failed |= not same
    print(f"{kind}: per-question answers of 1 and {procs} processes {'identical' if same else 'DIFFER'}: "
          f"{[answers['1'][k] for k in sorted(answers['1'])]}")
sys.exit(1 if failed else 0)
EOF
