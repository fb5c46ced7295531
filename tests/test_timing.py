"""Timing spread: the helper on given numbers, and what the commands print with it."""

from framefusion.cli import main
from framefusion.commands.run import format_result
from framefusion.tools.answer import VideoAnswer
from framefusion.tools.compare import write_table
from framefusion.tools.demo import DemoResult, format_demo
from framefusion.tools.timing import LARGE_SPREAD, SINGLE_RUN_NOTE, spread_ratio, spread_text, timing_caveat


def test_spread_ratio_and_text_on_given_numbers():
    assert spread_ratio([0.1, 0.23, 0.2]) == 0.23 / 0.1
    assert spread_ratio([0.5]) is None and spread_ratio([]) is None and spread_ratio([0.0, 1.0]) is None
    assert spread_text([0.1, 0.23, 0.2]) == "0.100-0.230 s, 2.30x"
    assert spread_text([0.1]) == "one run"


def test_caveat_warns_on_a_large_spread_notes_single_runs_and_is_silent_otherwise():
    warning = timing_caveat([[1.0, 1.1], [0.1, 0.23, 0.2]])
    assert warning.startswith("warning: timings vary by 2.3x between repeats") and "--repeats" in warning
    assert timing_caveat([[1.0], [2.0]]) == SINGLE_RUN_NOTE and "indicative only" in SINGLE_RUN_NOTE
    assert timing_caveat([[1.0, 1.2], [0.5, 0.55]]) is None
    assert timing_caveat([[1.0, LARGE_SPREAD]]) is None  # at the limit is not above it
    assert timing_caveat([[1.0, 2.0]], limit=3.0) is None
    assert timing_caveat([]) is None


def _run_result(first_token_runs: dict) -> VideoAnswer:
    seconds = {n: {"first_token": min(t), "generate": 2 * max(t), "new_tokens": 2} for n, t in first_token_runs.items()}
    return VideoAnswer(
        model="m", note="", video="v.mp4", frames=4, question="q?", video_tokens=32, prompt_tokens=50,
        config={"cost": 0.3, "similarity_threshold": 0.6, "ratio_threshold": 0.1}, tokens_per_layer=[32, 10],
        kept_tokens=10, achieved_cost=0.3, reduction_seconds=0.001, answers={n: "a" for n in first_token_runs},
        seconds=seconds, repeats=len(next(iter(first_token_runs.values()))), first_token_runs=first_token_runs,
    )  # fmt: skip


def test_run_text_shows_the_spread_and_warns_when_it_is_large():
    out = format_result(_run_result({"untouched": [1.0, 3.0, 1.1], "framefusion": [0.5, 0.55, 0.52]}))
    spread_row = next(line for line in out.splitlines() if "first token spread" in line)
    assert "3.00x" in spread_row and "1.10x" in spread_row
    assert out.splitlines()[-1].strip().startswith("warning: timings vary by 3.0x between repeats")
    quiet = format_result(_run_result({"untouched": [1.0, 1.1], "framefusion": [0.5, 0.52]}))
    assert "warning" not in quiet and "indicative" not in quiet
    single = format_result(_run_result({"framefusion": [0.5]}))
    assert "first token spread" not in single and single.splitlines()[-1].strip() == SINGLE_RUN_NOTE


def test_run_compare_with_repeats_prints_the_spread_row(capsys):
    argv = ["run", "--compare", "--repeats", "2", "--max-new-tokens", "2", "--frames", "4", "--warmup", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "first token spread" in out and "(max/min over repeats)" in out
    assert main(["run", "--max-new-tokens", "1", "--frames", "4", "--warmup", "0"]) == 0
    assert "single-run times are indicative only" in capsys.readouterr().out


def test_demo_text_shows_the_prefill_spread_and_warns():
    result = DemoResult(
        model="m", video="v.mp4", frames=4, size=112, video_tokens=32, prompt_tokens=50,
        config={"cost": 0.3, "similarity_threshold": 0.6, "ratio_threshold": 0.1}, tokens_per_layer=[32, 10],
        achieved_cost=0.3, flop_speedup=2.0, prefill_seconds={"untouched": [1.0, 2.0], "framefusion": [0.5, 0.5]},
        generate_seconds={"untouched": [2.0, 2.0], "framefusion": [1.0, 1.0]}, reduction_seconds=0.001,
        answers={"untouched": "a", "framefusion": "a"}, question="q?",
    )  # fmt: skip
    out = format_demo(result)
    spread_row = next(line for line in out.splitlines() if "prefill spread" in line)
    assert "2.00x" in spread_row and "1.00x" in spread_row and "over 2 repeats" in spread_row
    assert "warning: timings vary by 2.0x between repeats" in out


def test_comparison_table_has_a_spread_column_and_the_caveat_line(tmp_path):
    row = dict(label="untouched", cost=None, achieved_cost=1.0, agreement=1.0, prefix_agreement=1.0, kl=0.0,
               prefill_seconds=0.01, prefill_spread=2.5, speedup=1.0)  # fmt: skip
    old_row = {k: v for k, v in row.items() if k != "prefill_spread"}  # rows written before the column
    write_table([row, old_row], tmp_path, {"repeats": 3, "timing": "warning: timings vary by 2.5x"})
    md = (tmp_path / "comparison.md").read_text().splitlines()
    assert "prefill spread" in md[0] and "| 2.50x |" in md[2] and "| - |" in md[3]
    assert md[-1] == "warning: timings vary by 2.5x" and "timing" not in md[-3]


def test_bench_says_single_round_times_are_indicative_only(tmp_path, capsys):
    from framefusion.tiny_models.zoo import build

    model, processor = build("qwen2_vl", num_layers=1)
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    argv = ["bench", "--model", str(tmp_path / "ckpt"), "--frames", "2", "--size", "112", "--repeats", "1",
            "--new-tokens", "1", "--dtype", "float32", "--device", "cpu", "--costs", "0.5",
            "--out", str(tmp_path / "out"), "--json"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert SINGLE_RUN_NOTE in captured.err.splitlines() and "indicative" not in captured.out  # stdout: JSON only
