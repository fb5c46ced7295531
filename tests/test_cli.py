"""The command line: exit codes, messages, and the demo on a tiny setting."""

import json

import pytest

from framefusion.cli import main


def test_demo_json_on_a_tiny_setting(capsys):
    rc = main(["demo", "--layers", "2", "--hidden", "64", "--size", "112", "--frames", "4",
               "--repeats", "1", "--new-tokens", "2", "--json", "--cost", "0.5"])  # fmt: skip
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["video_tokens"] == 32 and len(result["tokens_per_layer"]) == 2
    assert result["achieved_cost"] <= 0.5
    assert len(result["prefill_seconds"]["untouched"]) == 1


def test_demo_takes_device_dtype_and_threads(capsys):
    import torch

    threads = torch.get_num_threads()
    try:
        rc = main(["demo", "--layers", "2", "--hidden", "64", "--size", "112", "--frames", "4", "--repeats", "2",
                   "--new-tokens", "2", "--device", "cpu", "--dtype", "bfloat16", "--threads", "1"])  # fmt: skip
        assert rc == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)  # the tests after this one keep their threads
    out = capsys.readouterr().out
    assert "bfloat16 on cpu" in out
    assert "LLM prefill spread, max/min" in out and "(over 2 repeats)" in out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["demo", "--cost", "0"], ["cost", "(0, 1]"]),
        (["demo", "--similarity-threshold", "nan"], ["similarity_threshold", "NaN"]),
        (["demo", "--size", "100"], ["--size", "28", "100"]),
        (["demo", "--video", "/no/such/video.mp4", "--layers", "1", "--hidden", "64", "--size", "112"], ["not found", "/no/such/video.mp4"]),
        (["demo", "--threads", "0"], ["--threads", ">= 1", "0"]),
        (["demo", "--device", "cuda:7"], ["device", "cuda:7", "not available"]),
        (["demo", "--device", "nowhere"], ["device", "nowhere", "not valid"]),
        (["demo", "--dtype", "float8"], ["dtype", "float8", "float32, bfloat16, float16"]),
        (["demo", "--repeats", "0"], ["--repeats", ">= 1"]),
        (["bench", "--costs", "0.3", "1.5"], ["cost", "1.5"]),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("framefusion: error:")
    for w in words:
        assert w in err


def test_no_command_runs_the_demo_parser():
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
