"""The benchmark harness on a tiny model: rows, ratios and files (no timing is asserted)."""

import json

import pytest

from framefusion import FrameFusionConfig
from framefusion.bench import build_random_model, load_config, random_model, run_bench, shipped_configs, write_outputs
from framefusion.models.zoo import build


def test_bench_rows_ratios_and_outputs(videos, tmp_path):
    model, processor = build("qwen2_vl", num_layers=4)
    settings = [("untouched", None), ("ff 0.3", FrameFusionConfig(cost=0.3)), ("ff 0.6", FrameFusionConfig(cost=0.6))]
    rows = run_bench(model, processor, {8: videos[8]}, settings, repeats=1, new_tokens=3, progress=False)
    assert [r.setting for r in rows] == ["untouched", "ff 0.3", "ff 0.6"]
    base, low, high = rows
    assert base.prefill_speedup == 1.0 and base.flop_speedup == pytest.approx(1.0)
    assert low.achieved_cost <= 0.3 and high.achieved_cost <= 0.6
    assert low.flop_speedup > high.flop_speedup > 1.0  # fewer tokens, less compute
    # the KV cache shrinks with the kept tokens: bytes per token are the same in every layer
    assert low.kv_cache_bytes < high.kv_cache_bytes < base.kv_cache_bytes
    tokens_kept = sum(low.tokens_per_layer) + (low.prompt_tokens - low.video_tokens) * len(low.tokens_per_layer)
    tokens_full = base.prompt_tokens * len(base.tokens_per_layer)
    assert low.kv_cache_ratio == pytest.approx(tokens_kept / tokens_full, rel=1e-6)
    for r in rows:
        assert len(r.prefill_s) == 1 and r.prefill_s[0] > 0 and r.e2e_s[0] > r.prefill_s[0]
        assert r.decode_tokens_per_s > 0
    paths = write_outputs(rows, tmp_path, {"model": "tiny"})
    data = json.loads(paths["json"].read_text())
    assert len(data["rows"]) == 3 and data["meta"]["model"] == "tiny"
    assert "| 8 | ff 0.3 |" in paths["markdown"].read_text()
    if "speedup" in paths:
        assert paths["speedup"].stat().st_size > 1000 and paths["tokens"].stat().st_size > 1000


@pytest.mark.parametrize("name", shipped_configs())
def test_shipped_configs_are_consistent(name):
    config = load_config(name)
    text = config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    assert config.vision_config.hidden_size == text.hidden_size  # the merger feeds the LLM


def test_random_model_from_shipped_config_runs(videos):
    import torch

    model, processor = build_random_model("qwen2-vl-0.5b-llm", dtype=torch.float32, vision_depth=1, size=112)
    assert model.config.get_text_config().num_hidden_layers == 24
    assert {(p.dtype, p.device.type) for p in model.parameters()} == {(torch.float32, "cpu")}
    assert model.config.video_token_id == processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    rows = run_bench(model, processor, {2: videos[2]}, [("untouched", None)], repeats=1, new_tokens=1, progress=False)
    assert rows[0].video_tokens == 16


# ---------------------------------------------------------------------------------------------
# Building random weights where they run
# ---------------------------------------------------------------------------------------------


def small_shipped_config():
    """The 0.5B config cut to 2 layers, a 1000-word vocabulary and 1 vision block: built in a second."""
    config = load_config("qwen2-vl-0.5b-llm", vision_depth=1)
    config.text_config.num_hidden_layers = 2
    config.text_config.vocab_size = 1000
    return config


def test_random_model_is_created_on_the_device_in_the_dtype():
    import torch

    model = random_model(small_shipped_config(), torch.bfloat16, "cpu")
    assert {(p.dtype, p.device.type) for p in model.parameters()} == {(torch.bfloat16, "cpu")}
    assert model.config._attn_implementation == "sdpa" and not model.training
    # every parameter is created under the device given: on "meta" not one byte lands on the CPU
    meta = random_model(small_shipped_config(), torch.bfloat16, "meta")
    assert {p.device.type for p in meta.parameters()} == {"meta"}


def test_random_model_weights_are_those_of_a_seeded_cpu_build():
    """On the CPU, building under the device gives the weights a plain seeded build gave before."""
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    reference = Qwen2VLForConditionalGeneration._from_config(
        small_shipped_config(), dtype=torch.float32, attn_implementation="sdpa"
    ).state_dict()
    built = random_model(small_shipped_config(), torch.float32, "cpu", seed=0).state_dict()
    assert built.keys() == reference.keys()
    assert all(torch.equal(built[k], reference[k]) for k in reference)
    other = random_model(small_shipped_config(), torch.float32, "cpu", seed=1).state_dict()
    assert not torch.equal(other["lm_head.weight"], reference["lm_head.weight"])
