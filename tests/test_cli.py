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


@pytest.mark.parametrize(
    "argv, words",
    [
        (["demo", "--cost", "0"], ["cost", "(0, 1]"]),
        (["demo", "--similarity-threshold", "nan"], ["similarity_threshold", "NaN"]),
        (["demo", "--size", "100"], ["--size", "28", "100"]),
        (["demo", "--video", "/no/such/video.mp4", "--layers", "1", "--hidden", "64", "--size", "112"], ["not found", "/no/such/video.mp4"]),
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
