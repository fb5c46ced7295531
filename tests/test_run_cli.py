"""``framefusion run``: defaults, --compare, --json, loading a saved checkpoint, and errors."""

import json

import pytest

from framefusion.cli import main
from framefusion.tools.loading import SHIPPED_MODEL
from framefusion.tiny_models import write_video, zoo


def test_run_with_no_arguments_uses_the_defaults(capsys):
    assert main(["run", "--max-new-tokens", "2", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("framefusion run") and "demo.mp4" in out and "video tokens kept" in out
    assert "answer, framefusion" in out and "untouched" not in out.split("question")[1]
    if not (SHIPPED_MODEL / "config.json").is_file():
        assert "RANDOM weights" in out  # the fallback says so


def test_run_compare_json(capsys, tmp_path, videos):
    clip = write_video(videos[16], tmp_path / "clip.mp4")  # 112 x 112: 16 tokens per 2 frames
    rc = main(["run", "--compare", "--json", "--max-new-tokens", "3", "--cost", "0.5", "--frames", "8",
               "--video", str(clip), "--question", "which way does it move?"])  # fmt: skip
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["answers"]) == {"untouched", "framefusion"} and set(r["seconds"]) == {"untouched", "framefusion"}
    assert r["frames"] == 8 and r["video_tokens"] == 64 and r["question"] == "which way does it move?"
    assert r["kept_tokens"] <= r["video_tokens"] and r["achieved_cost"] <= 0.5
    assert len(r["tokens_per_layer"]) > 0 and r["config"]["cost"] == 0.5
    for s in r["seconds"].values():
        assert 0 < s["first_token"] <= s["generate"] and 1 <= s["new_tokens"] <= 3


def test_run_compare_text_side_by_side(capsys):
    assert main(["run", "--compare", "--max-new-tokens", "2", "--frames", "4", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "untouched" in line and "framefusion" in line)
    assert header.index("untouched") < header.index("framefusion")
    assert "answer, untouched" in out and "answer, framefusion" in out and "speed-up" in out


def test_run_loads_a_saved_checkpoint(tmp_path, capsys):
    model, processor = zoo.build("qwen2_vl", num_layers=2)
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    rc = main(["run", "--model", str(tmp_path / "ckpt"), "--json", "--max-new-tokens", "2", "--frames", "4"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["model"] == str(tmp_path / "ckpt") and r["note"] == "" and len(r["tokens_per_layer"]) == 2


@pytest.mark.parametrize(
    "argv, words",
    [
        (["run", "--video", "/no/such/clip.mp4"], ["video file not found", "/no/such/clip.mp4"]),
        (["run", "--cost", "0"], ["cost", "(0, 1]"]),
        (["run", "--max-new-tokens", "0"], ["--max-new-tokens", ">= 1"]),
        (["run", "--frames", "0"], ["--frames", ">= 1"]),
        (["run", "--frames", "99"], ["16 frames", "99"]),
        (["run", "--model", "/no/such/model"], ["model folder not found", "/no/such/model"]),
        (["run", "--device", "gpu7"], ["--device", "gpu7"]),
        (["run", "--question", "  ", "--warmup", "0"], ["question is empty"]),
        (["run", "--frames", "8", "--match-frames", "12"], ["--match-frames F needs --frames N with N >= F", "12"]),
        (["run", "--frames", "8", "--chunk-frames", "3", "--warmup", "0"], ["frames=3", "multiple of temporal_patch_size=2"]),
    ],
)
def test_run_errors_exit_2_with_a_clear_message(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("framefusion: error:")
    for w in words:
        assert w in err


def test_run_refuses_a_folder_without_config_and_a_non_video(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["run", "--model", str(tmp_path / "empty")]) == 2
    assert "no config.json" in capsys.readouterr().err
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    assert main(["run", "--video", str(bad)]) == 2
    assert "notes.mp4" in capsys.readouterr().err


def test_short_video_uses_all_its_frames(tmp_path, capsys, videos):
    path = write_video(videos[8][:6], tmp_path / "six.mp4")
    assert main(["run", "--video", str(path), "--json", "--max-new-tokens", "1", "--warmup", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 6


def test_run_matched_and_chunked(capsys):
    """--match-frames plans the cost (16 frames for the compute of 8) and the run spends at most the target;
    --chunk-frames gives the same answer and the same kept tokens as one pass."""
    argv = ["run", "--json", "--max-new-tokens", "3", "--frames", "16", "--match-frames", "8", "--warmup", "0"]
    assert main(argv) == 0
    one_pass = json.loads(capsys.readouterr().out)
    assert one_pass["plan"]["wanted"]["frames"] == 16 and one_pass["plan"]["matched"]["frames"] == 8
    assert 0.99 <= one_pass["spent"] <= 1.0 and one_pass["config"]["cost"] == one_pass["plan"]["cost"]
    assert main(argv + ["--chunk-frames", "4"]) == 0
    chunked = json.loads(capsys.readouterr().out)
    assert (chunked["answers"], chunked["tokens_per_layer"]) == (one_pass["answers"], one_pass["tokens_per_layer"])
