"""One loader, one set of model options for every command: each ``--model`` form loads, and a bad
device, dtype, attention, thread count or model is one line ``framefusion: error: ...`` and exit 2,
run as a user runs it (a subprocess of this checkout's code)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from framefusion.tools.loading import SHIPPED_MODEL, load_model

ROOT = Path(__file__).resolve().parent.parent
MODEL_COMMANDS = ["run", "visualize", "web", "analyze", "eval"]


def framefusion(*argv, env=None, timeout=120):
    """Run ``python -m framefusion`` on this checkout's code; ``env`` values of None unset a variable."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    full_env = {k: v for k, v in full_env.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "framefusion", *argv], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)  # fmt: skip


def assert_one_line_error(result, *words):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("framefusion: error:"), result.stderr
    assert "Traceback" not in result.stderr
    for w in words:
        assert w in lines[0]


def model_argv(command, *options):
    """``command`` with ``options``; analyze needs a --model, given first so later ones win."""
    return [command, *(["--model", "tiny:qwen2_vl"] if command == "analyze" else []), *options]


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_bad_device_dtype_and_attention_are_one_line_errors(command):
    missing = f"cuda:{torch.cuda.device_count() + 7}"  # never on this machine
    assert_one_line_error(framefusion(*model_argv(command, "--device", missing)), missing, "--device")
    assert_one_line_error(framefusion(*model_argv(command, "--dtype", "float8")), "float8", "--dtype")
    assert_one_line_error(framefusion(*model_argv(command, "--attn-implementation", "fast")), "fast")
    assert_one_line_error(framefusion(*model_argv(command, "--threads", "0")), "--threads")


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_bad_model_names_are_one_line_errors(command):
    result = framefusion(command, "--model", "no:such:model")
    assert_one_line_error(result, "no:such:model", "tiny:FAMILY", "Hugging Face")
    assert_one_line_error(framefusion(command, "--model", "tiny:nope"), "unknown tiny family", "nope")
    assert_one_line_error(framefusion(command, "--model", "/no/such/model"), "model not found", "/no/such/model")


def test_unreachable_hub_fails_fast_with_the_offline_hint(tmp_path):
    # an empty cache and an endpoint that refuses connections: what a machine without network sees
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None}  # fmt: skip
    result = framefusion("run", "--model", "Qwen/Qwen2-VL-2B-Instruct", env=env, timeout=60)
    assert_one_line_error(result, "cannot reach", "Qwen/Qwen2-VL-2B-Instruct", "HF_HUB_OFFLINE=1", "local folder")


def test_offline_mode_names_the_missing_cache(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    result = framefusion("analyze", "--model", "Qwen/Qwen2-VL-2B-Instruct", env=env, timeout=60)
    assert_one_line_error(result, "not in the local Hugging Face cache", "HF_HUB_OFFLINE=1")


def test_visualize_takes_a_tiny_model_name(tmp_path):
    # it used to fail in the hub's id check ("Repo id must use alphanumeric chars")
    result = framefusion("visualize", "--model", "tiny:qwen2_vl", "--frames", "4", "--max-new-tokens", "1",
                         "--threads", "1", "--out", str(tmp_path), "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "token_map.html").is_file()


def test_every_form_loads():
    model, processor, what = load_model(None, device="cpu")
    assert "shipped" in what and model.config.model_type == "qwen2_vl" and not model.training
    model, _, what = load_model(str(SHIPPED_MODEL), device="cpu", dtype="bfloat16", attn_implementation="eager")
    assert next(model.parameters()).dtype == torch.bfloat16 and model.config._attn_implementation == "eager"
    model, _, what = load_model("tiny:llava_onevision", device="cpu")
    assert what == "tiny, random weights" and model.config.model_type == "llava_onevision"
    model, processor, what = load_model("qwen2-vl-0.5b-llm", device="meta", vision_depth=1)
    assert what == "random weights" and {p.device.type for p in model.parameters()} == {"meta"}


def test_shipped_models_load_by_name_and_eval_follows_their_data():
    from framefusion.tools.evaluate import synthetic_test_set
    from framefusion.tools.loading import SHIPPED_MODELS, training_info

    for name, folder in SHIPPED_MODELS.items():
        model, _, what = load_model(name, device="cpu")
        assert "shipped" in what and model.config.model_type == "qwen2_vl"
        assert training_info(name) == training_info(folder)
    assert training_info("synthetic-v1").get("data", "v1") == "v1" and training_info("synthetic-v2")["data"] == "v2"
    item = synthetic_test_set(1, model_path="synthetic-v2")[0]
    info = training_info("synthetic-v2")
    assert item.frames().shape == (info["frames"], info["size"], info["size"], 3) and item.motion is not None


def test_device_map_is_for_checkpoints_only():
    with pytest.raises(ValueError, match="device_map applies to checkpoints"):
        load_model("tiny:qwen2_vl", device="cpu", device_map="auto")


def test_bench_bad_dtype_attention_and_device_are_one_line_errors():
    assert_one_line_error(framefusion("bench", "--dtype", "float8"), "float8", "--dtype")
    assert_one_line_error(framefusion("bench", "--attn-implementation", "fast"), "fast", "--attn")
    missing = f"cuda:{torch.cuda.device_count() + 7}"
    assert_one_line_error(framefusion("bench", "--device", missing), missing)
