"""The benchmark harness on tiny models: rows, ratios, files, live lines, interruptions (no timing is asserted)."""

import json

import pytest

from framefusion import FrameFusionConfig
from framefusion.tools.bench import (
    BenchRow,
    BenchRun,
    Measurement,
    build_random_model,
    load_config,
    random_model,
    run_bench,
    shipped_configs,
    speedup_figure,
    write_outputs,
)
from framefusion.cli import main
from framefusion.tiny_models.zoo import build


def test_bench_rows_ratios_and_outputs(videos, tmp_path):
    model, processor = build("qwen2_vl", num_layers=4)
    settings = [("untouched", None), ("ff 0.3", FrameFusionConfig(cost=0.3)), ("ff 0.6", FrameFusionConfig(cost=0.6))]
    rows = run_bench(model, processor, {8: videos[8]}, settings, repeats=1, new_tokens=3, progress=False)
    assert [r.setting for r in rows] == ["untouched", "ff 0.3", "ff 0.6"]
    assert [r.method for r in rows] == ["untouched", "FrameFusion", "FrameFusion"]
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


# ---------------------------------------------------------------------------------------------
# Live lines and what an interrupted run keeps
# ---------------------------------------------------------------------------------------------


class Stop(Exception):
    pass


def stop_after(count, error=Stop):
    """An ``on_measure`` that records each measurement and raises ``error`` on the count-th."""
    seen = []

    def on_measure(measurement):
        seen.append(measurement)
        if len(seen) == count:
            raise error("stopped by the test")

    return on_measure, seen


SETTINGS = [("untouched", None), ("ff 0.3", FrameFusionConfig(cost=0.3)), ("ff 0.6", FrameFusionConfig(cost=0.6))]


def test_each_generate_is_reported_in_order_and_an_interrupted_run_keeps_its_rows(videos, tmp_path):
    model, processor = build("qwen2_vl", num_layers=2)
    on_measure, seen = stop_after(8)  # warm-up (3), round 1 (3), round 2: untouched and ff 0.3
    bench = BenchRun(model, processor, {8: videos[8]}, SETTINGS, repeats=3, new_tokens=2, on_measure=on_measure)
    with pytest.raises(Stop):
        bench.run(progress=False)
    assert [(m.round, m.setting) for m in seen] == [(r, name) for r in range(3) for name, _ in SETTINGS][:8]
    assert "8 frames, round 2/3, ff 0.3: prefill" in seen[-1].line() and "warm-up, untouched" in seen[0].line()
    assert not bench.complete
    rows = bench.rows()
    assert [(r.setting, len(r.prefill_s)) for r in rows] == [("untouched", 2), ("ff 0.3", 2), ("ff 0.6", 1)]
    assert rows[0].prefill_speedup == 1.0 and rows[1].achieved_cost <= 0.3
    meta = {"model": "tiny", "complete": False, "stopped_by": "Stop: stopped by the test"}
    paths = write_outputs(rows, tmp_path, meta)
    data = json.loads(paths["json"].read_text())
    assert data["meta"]["complete"] is False and [len(r["prefill_s"]) for r in data["rows"]] == [2, 2, 1]
    text = paths["markdown"].read_text()
    assert text.startswith("# framefusion bench (INCOMPLETE: stopped by Stop: stopped by the test")
    assert "| 8 | ff 0.6 |" in text
    # the model is left unpatched: a full run afterwards measures every setting
    again = run_bench(model, processor, {2: videos[2]}, SETTINGS, repeats=1, new_tokens=1, progress=False)
    assert [r.setting for r in again] == [name for name, _ in SETTINGS]


def test_a_run_stopped_in_its_warm_up_writes_no_rows(videos, tmp_path):
    model, processor = build("qwen2_vl", num_layers=2)
    on_measure, _ = stop_after(2, KeyboardInterrupt)
    bench = BenchRun(model, processor, {2: videos[2]}, SETTINGS, repeats=1, new_tokens=1, on_measure=on_measure)
    with pytest.raises(KeyboardInterrupt):
        bench.run(progress=False)
    assert bench.rows() == []
    paths = write_outputs([], tmp_path, {"complete": False, "stopped_by": "KeyboardInterrupt"})
    assert json.loads(paths["json"].read_text())["rows"] == [] and "INCOMPLETE" in paths["markdown"].read_text()
    assert set(paths) == {"json", "markdown"}


# ---------------------------------------------------------------------------------------------
# Labels and plot
# ---------------------------------------------------------------------------------------------


def fake_row(setting, method, cost, speedup, frames=16):
    return BenchRow(
        setting=setting, frames=frames, video_tokens=2048, prompt_tokens=2084, prefill_s=[1.0 / speedup],
        e2e_s=[2.0], decode_tokens_per_s=10.0, reduction_s=0.001, kv_cache_bytes=100, peak_gpu_bytes=None,
        achieved_cost=cost, tokens_per_layer=[2048], flop_speedup=1.0 / cost, method=method, prefill_speedup=speedup,
    )  # fmt: skip


def test_speedup_plot_draws_one_line_per_method():
    rows = [fake_row("untouched", "untouched", 1.0, 1.0)]
    for cost in (0.3, 0.5, 0.7):  # in the bench's order: each budget, FrameFusion then FastV
        rows.append(fake_row(f"framefusion cost={cost}", "FrameFusion", cost, 1.0 / cost))
        rows.append(fake_row(f"fastv cost={cost}", "FastV", cost - 0.02, 0.9 / cost))
    fig = speedup_figure(rows)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert sorted(lines) == ["FastV: FLOP bound", "FastV: measured", "FrameFusion: FLOP bound", "FrameFusion: measured"]
    assert list(lines["FrameFusion: measured"].get_xdata()) == [0.3, 0.5, 0.7]
    assert list(lines["FrameFusion: measured"].get_ydata()) == pytest.approx([1 / 0.3, 2.0, 1 / 0.7])
    assert list(lines["FastV: measured"].get_xdata()) == pytest.approx([0.28, 0.48, 0.68])
    assert lines["FastV: measured"].get_color() == lines["FastV: FLOP bound"].get_color()
    # two frame counts: a line per method and frame count
    more = rows + [fake_row(r.setting, r.method, r.achieved_cost, r.prefill_speedup, frames=32) for r in rows]
    labels = [line.get_label() for line in speedup_figure(more).axes[0].get_lines() if "measured" in line.get_label()]
    assert labels == ["FrameFusion, 16 frames: measured", "FastV, 16 frames: measured",
                      "FrameFusion, 32 frames: measured", "FastV, 32 frames: measured"]  # fmt: skip


def test_reduction_time_is_labelled_gpu_time_on_cuda_wall_on_cpu(tmp_path):
    rows = [fake_row("untouched", "untouched", 1.0, 1.0), fake_row("ff", "FrameFusion", 0.3, 3.0)]
    paths = write_outputs(rows, tmp_path, {"complete": True})
    assert "reduction time (GPU time on CUDA, wall on CPU) / prefill" in paths["markdown"].read_text()
    keys = json.loads(paths["json"].read_text())["keys"]
    assert "GPU time" in keys["reduction_s"] and "wall time on CPU" in keys["reduction_s"]
    assert set(keys) >= set(json.loads(paths["json"].read_text())["rows"][0])  # every key is explained


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny Qwen2-VL saved as a checkpoint: the command loads it like a real one, in a second."""
    path = tmp_path_factory.mktemp("bench") / "ckpt"
    model, processor = build("qwen2_vl", num_layers=2)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


def bench_argv(checkpoint, out, *extra):
    tiny = "--frames 2 --size 112 --repeats 1 --new-tokens 2 --dtype float32 --device cpu --costs 0.5 --baselines fastv"
    return ["bench", "--model", checkpoint, *tiny.split(), "--out", str(out), *extra]


def test_help_shows_defaults_and_shipped_configs(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name in shipped_configs():
        assert name in text
    defaults = ["qwen2-vl-0.5b-llm", "448", "[16]", "[0.3, 0.5, 0.7]", "bfloat16", "sdpa", "3", "16", "outputs/bench"]
    for default in defaults:
        assert f"(default: {default})" in text


def test_command_json_meta_and_live_lines(checkpoint, tmp_path, capsys):
    assert main(bench_argv(checkpoint, tmp_path, "--json")) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # stdout holds the JSON alone
    meta = result["meta"]
    import torch
    import transformers

    assert meta["model"] == checkpoint and meta["weights"] == "checkpoint" and meta["complete"] is True
    assert (meta["dtype"], meta["device"], meta["attn_implementation"]) == ("float32", "cpu", "sdpa")
    assert meta["frames"] == [2] and meta["size"] == "112x112"
    assert (meta["torch"], meta["transformers"]) == (torch.__version__, transformers.__version__)
    assert meta["command"].startswith("framefusion bench --model ") and meta["command"].endswith("--json")
    assert [(r["setting"], r["method"]) for r in result["rows"]] == [
        ("untouched", "untouched"), ("framefusion cost=0.5", "FrameFusion"), ("fastv cost=0.5", "FastV")]  # fmt: skip
    # the log, on stderr: the untouched model first, then each setting, warm-up then the round
    lines = [line for line in captured.err.splitlines() if line.startswith("2 frames, ")]
    order = [line.split(", ")[2].split(":")[0] for line in lines]
    assert order == ["untouched", "framefusion cost=0.5", "fastv cost=0.5"] * 2
    assert "warm-up" in lines[0] and "round 1/1" in lines[3]
    text = (tmp_path / "bench.md").read_text()
    facts = ["model: " + checkpoint, "dtype: float32", "device: cpu", "attn_implementation: sdpa", "frames: [2]",
             "size: 112x112", f"torch: {torch.__version__}", f"transformers: {transformers.__version__}",
             "command: `framefusion bench --model", "complete: True"]  # fmt: skip
    for fact in facts:
        assert fact in text
    assert json.loads((tmp_path / "bench.json").read_text())["meta"] == meta


def raise_on_line(monkeypatch, count, action):
    """Make the command's count-th live line call ``action`` (the measurement itself is kept)."""
    calls = []
    line = Measurement.line

    def patched(self):
        calls.append(self)
        if len(calls) == count:
            action()
        return line(self)

    monkeypatch.setattr(Measurement, "line", patched)


def written_rows(out):
    data = json.loads((out / "bench.json").read_text())
    return data["meta"], [(r["setting"], len(r["prefill_s"])) for r in data["rows"]]


def test_command_interrupted_writes_rows_so_far_and_exits_130(checkpoint, tmp_path, monkeypatch, capsys):
    def interrupt():
        raise KeyboardInterrupt

    raise_on_line(monkeypatch, 5, interrupt)  # round 1, after FrameFusion was measured
    assert main(bench_argv(checkpoint, tmp_path)) == 130
    meta, rows = written_rows(tmp_path)
    assert meta["complete"] is False and meta["stopped_by"] == "KeyboardInterrupt"
    assert rows == [("untouched", 1), ("framefusion cost=0.5", 1)]
    assert "INCOMPLETE" in (tmp_path / "bench.md").read_text()
    assert "wrote the 2 rows measured so far, marked incomplete" in capsys.readouterr().out


def test_command_sigterm_is_an_interruption(checkpoint, tmp_path, monkeypatch):
    import os
    import signal

    before = signal.getsignal(signal.SIGTERM)
    raise_on_line(monkeypatch, 4, lambda: os.kill(os.getpid(), signal.SIGTERM))  # as `timeout` sends it
    assert main(bench_argv(checkpoint, tmp_path)) == 130
    meta, rows = written_rows(tmp_path)
    assert meta["stopped_by"] == "Terminated: SIGTERM" and rows and rows[0] == ("untouched", 1)
    assert signal.getsignal(signal.SIGTERM) is before


def test_command_error_writes_rows_so_far_and_raises(checkpoint, tmp_path, monkeypatch):
    def fail():
        raise RuntimeError("CUDA out of memory (pretend)")

    raise_on_line(monkeypatch, 6, fail)  # after the last setting of round 1: every row, one round each
    with pytest.raises(RuntimeError, match="pretend"):
        main(bench_argv(checkpoint, tmp_path))
    meta, rows = written_rows(tmp_path)
    assert meta["complete"] is False and meta["stopped_by"] == "RuntimeError: CUDA out of memory (pretend)"
    assert rows == [("untouched", 1), ("framefusion cost=0.5", 1), ("fastv cost=0.5", 1)]


def test_command_matched_frames(tmp_path, capsys):
    """--frames 8 --match-frames 4 on a real 0.5B-LLM shape with a 1-block tower: untouched alone at 4,
    untouched and the planned methods at 8; the equal-compute rows spend 99-100% of the target and give
    time, KV cache and (CPU) live-tensor peak ratios against untouched at 4."""
    argv = ["bench", "--model", "qwen2-vl-0.5b-llm", "--vision-depth", "1", "--frames", "8", "--match-frames", "4",
            "--size", "112", "--repeats", "1", "--new-tokens", "1", "--dtype", "float32", "--device", "cpu",
            "--baselines", "vidcom2", "--out", str(tmp_path), "--json"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert [(r["frames"], r["method"]) for r in result["rows"]] == [
        (4, "untouched"), (8, "untouched"), (8, "FrameFusion"), (8, "VidCom2")]  # fmt: skip
    matched = result["meta"]["matched"]
    assert [m["setting"].split()[0] for m in matched] == ["framefusion", "vidcom2"]
    for m in matched:
        assert (m["frames"], m["match_frames"], m["scope"]) == (8, 4, "total")
        assert 0.99 <= m["spent_vs_target"] <= 1.0
        assert m["e2e_vs_matched"] > 0 and m["kv_cache_vs_matched"] < 1 and m["peak_memory_vs_matched"] > 0
    assert "## Equal compute" in (tmp_path / "bench.md").read_text()
    assert main(["bench", "--frames", "8", "--match-frames", "16", "--out", str(tmp_path)]) == 2
    assert "--match-frames must be >= 1 and at most every --frames count; got 16" in capsys.readouterr().err


def test_command_chunk_frames_keeps_the_schedule_and_lowers_the_prefill_peak(tmp_path, capsys):
    """--chunk-frames: the same kept-token schedule as one pass; with FrameFusion (the LLM's tokens cut
    at the first layers), the vision tower's activations are the prefill's peak, and chunks lower it."""
    runs = {}
    for chunk in ([], ["--chunk-frames", "2"]):
        argv = ["bench", "--model", "qwen2-vl-0.5b-llm", "--vision-depth", "1", "--frames", "8", "--size", "112",
                "--repeats", "1", "--new-tokens", "1", "--dtype", "float32", "--device", "cpu", "--costs", "0.3",
                "--out", str(tmp_path), "--json", *chunk]  # fmt: skip
        assert main(argv) == 0
        runs[len(chunk)] = json.loads(capsys.readouterr().out)
    assert runs[2]["meta"]["chunk_frames"] == 2 and runs[0]["meta"]["chunk_frames"] is None
    for one, chunked in zip(runs[0]["rows"], runs[2]["rows"]):
        assert one["tokens_per_layer"] == chunked["tokens_per_layer"]
    assert runs[2]["rows"][1]["peak_tensor_bytes"] < 0.8 * runs[0]["rows"][1]["peak_tensor_bytes"]
