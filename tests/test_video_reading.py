"""Video reading that holds only the frames it keeps (by count and by fps), and the one check of video arrays.

The memory test decodes a 2,000-frame 720p clip in a fresh process and bounds the rise of its peak
RSS (VmHWM): holding the whole clip as RGB would take 2000 x 1280 x 720 x 3 bytes = 5.5 GB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import framefusion
from framefusion.tools import video as video_module
from framefusion.cli import main
from framefusion.tiny_models import make_synthetic_video, read_video, write_video
from framefusion.tiny_models.zoo import build, video_inputs
from framefusion.tools.video import VideoClip, as_uint8_video, even_indices, read_clip

ROOT = Path(framefusion.__file__).resolve().parent.parent
MiB = 1 << 20


def _all_frames(path) -> list[np.ndarray]:
    """Every frame decoded to RGB the plain way: the reference the sampled reads must match."""
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def clip16(tmp_path_factory):
    """16 frames at 8 fps: 2 s."""
    return write_video(make_synthetic_video(num_frames=16, size=56, seed=11), tmp_path_factory.mktemp("v") / "c.mp4")


def _write_timed(path: Path, times_ms: list[int], size: int = 56) -> Path:
    """A variable-frame-rate clip: frame k shown from times_ms[k] (milliseconds)."""
    import av

    frames = make_synthetic_video(num_frames=len(times_ms), size=size, seed=5)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=1000)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for t, rgb in zip(times_ms, frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


# ------------------------------------------------------------------------------------- by count
@pytest.mark.parametrize("count", [1, 2, 5, 7, 16])
def test_count_sampling_keeps_the_frame_choice_of_decoding_everything(clip16, count):
    everything = _all_frames(clip16)
    clip = read_clip(clip16, count)
    expected = even_indices(len(everything), count)
    assert clip.indices == tuple(expected.tolist())
    assert np.array_equal(clip.frames, np.stack([everything[i] for i in expected]))
    assert clip.total_frames == 16 and clip.duration == pytest.approx(2.0)
    assert clip.times == pytest.approx([i / 8 for i in expected])
    assert np.array_equal(read_video(clip16, count), clip.frames)


def test_at_most_max_frames(clip16):
    assert read_clip(clip16, max_frames=4).indices == (0, 5, 10, 15)
    assert read_clip(clip16, max_frames=40).indices == tuple(range(16))  # a shorter clip: every frame
    with pytest.raises(ValueError, match="has 16 frames, fewer than the 40 asked for; ask for 1 to 16"):
        read_clip(clip16, 40)


@pytest.mark.parametrize("wrong_by", [-3, 5])
def test_a_packet_count_that_is_not_the_frame_count_is_corrected(clip16, monkeypatch, wrong_by):
    """The frame indices need the count before decoding; where the packets miscount the frames, the
    decoded count is used instead (a second pass), so the choice stays that of decoding everything."""
    survey = video_module._survey
    monkeypatch.setattr(video_module, "_survey", lambda path: (survey(path)[0] + wrong_by, survey(path)[1]))
    clip = read_clip(clip16, 5)
    assert clip.indices == tuple(even_indices(16, 5).tolist()) and clip.total_frames == 16
    everything = _all_frames(clip16)
    assert np.array_equal(clip.frames, np.stack([everything[i] for i in clip.indices]))


# --------------------------------------------------------------------------------------- by fps
def test_fps_sampling_takes_the_frame_shown_at_each_k_over_fps(clip16):
    clip = read_clip(clip16, fps=3)  # t = 0, 1/3, 2/3, 1, 4/3, 5/3 of 2 s at 8 fps
    assert clip.indices == (0, 2, 5, 8, 10, 13)
    assert clip.times == pytest.approx([0, 0.25, 0.625, 1.0, 1.25, 1.625])
    everything = _all_frames(clip16)
    assert np.array_equal(clip.frames, np.stack([everything[i] for i in clip.indices]))
    assert read_clip(clip16, fps=4).indices == tuple(range(0, 16, 2))
    assert read_clip(clip16, fps=0.4).indices == (0,)  # t = 0 only: 2.5 s is past the end
    assert read_clip(clip16, fps=30).indices == tuple(range(16))  # above the clip's rate: each frame once


def test_fps_sampling_follows_timestamps_of_a_variable_rate_clip(tmp_path):
    path = _write_timed(tmp_path / "vfr.mkv", [0, 100, 150, 700, 1200, 1300, 1900])
    clip = read_clip(path, fps=2)  # t = 0, 0.5, 1.0, 1.5 (the last frame lasts about one frame period)
    assert clip.indices == (0, 2, 3, 5)
    assert clip.times == pytest.approx([0, 0.15, 0.7, 1.3])
    assert clip.total_frames == 7 and 1.9 < clip.duration < 2.0


def test_fps_with_max_frames_spreads_that_many_over_a_longer_clip(clip16):
    assert read_clip(clip16, fps=4, max_frames=8).indices == tuple(range(0, 16, 2))  # 8 fit
    assert read_clip(clip16, fps=4, max_frames=3).indices == (0, 8, 15)  # 8 do not: 3 evenly spread


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(fps=0), "fps must be a number > 0, got 0"),
        (dict(fps=float("nan")), "fps must be a number > 0"),
        (dict(fps=-2.0), "fps must be a number > 0, got -2.0"),
        (dict(num_frames=4, fps=2), "not both"),
        (dict(num_frames=4, max_frames=2), "not both"),
        (dict(max_frames=0), "max_frames must be an integer >= 1, got 0"),
        (dict(max_pixels=0), "max_pixels must be an integer >= 1"),
    ],
)
def test_bad_sampling_settings_are_refused(clip16, kwargs, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        read_clip(clip16, **kwargs)


def test_max_pixels_scales_frames_down_as_they_are_decoded(tmp_path):
    path = write_video(make_synthetic_video(num_frames=3, size=224, seed=1), tmp_path / "big.mp4")
    clip = read_clip(path, 2, max_pixels=112 * 112)
    assert clip.frames.shape == (2, 112, 112, 3)
    assert read_clip(path, 2, max_pixels=224 * 224).frames.shape == (2, 224, 224, 3)  # at the limit: as it is


# ------------------------------------------------------------------------ memory of a long clip
def _write_long_clip(path: Path, frames: int, width: int = 1280, height: int = 720) -> Path:
    """A moving bar over a gradient, encoded fast (frames made directly in YUV 4:2:0, x264 ultrafast)."""
    import av

    yuv = np.full((height * 3 // 2, width), 128, np.uint8)
    yuv[:height] = (np.arange(width) * 255 // width).astype(np.uint8)
    with av.open(str(path), mode="w") as container:
        try:
            stream = container.add_stream("libx264", rate=30)
            stream.options = {"preset": "ultrafast", "crf": "30"}
        except (ValueError, av.FFmpegError):
            stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(frames):
            frame = yuv.copy()
            x = (k * 7) % (width - 40)
            frame[:height, x : x + 40] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="yuv420p")))
        container.mux(stream.encode())
    return path


PEAK_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys

    # framefusion/tools/video.py alone (numpy and PyAV), without the package's torch and transformers
    spec = importlib.util.spec_from_file_location("video", sys.argv[3])
    video = sys.modules["video"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(video)
    read_clip = video.read_clip

    def peak_mib():
        # VmHWM: this process's own peak RSS. Not ru_maxrss: after fork + exec that starts at the
        # parent's peak (pytest's, with torch loaded), far above what is measured here.
        with open("/proc/self/status") as status:
            return int(status.read().split("VmHWM:")[1].split()[0]) / 1024

    path, how = sys.argv[1], json.loads(sys.argv[2])
    read_clip(path, 1)  # imports, codecs and the decoder's own buffers, before the measurement
    before = peak_mib()
    clip = read_clip(path, **how)
    print(json.dumps(dict(rise_mib=peak_mib() - before, kept_mib=clip.frames.nbytes / 2**20,
                          shape=list(clip.frames.shape), total=clip.total_frames, duration=clip.duration)))
    """
)


def _peak_rise(path: Path, **how) -> dict:
    source = ROOT / "framefusion" / "tools" / "video.py"
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(path), json.dumps(how), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_long_720p_clip_is_read_in_memory_of_the_frames_kept(tmp_path):
    """2,000 frames of 1280 x 720: all of them as RGB would be 5.5 GB. Sampling 16 of them (42 MiB)
    or 1 per second (67 frames, 177 MiB) raises the peak RSS by at most what is kept + 64 MiB (measured
    here: +41 and +176 MiB, about the frames kept)."""
    path = _write_long_clip(tmp_path / "long.mp4", 2000)
    whole_clip_mib = 2000 * 1280 * 720 * 3 / MiB
    for how, frames in ((dict(num_frames=16), 16), (dict(fps=1.0), 67)):
        r = _peak_rise(path, **how)
        assert r["shape"] == [frames, 720, 1280, 3] and r["total"] == 2000
        assert r["duration"] == pytest.approx(2000 / 30)
        print(f"read_clip({how}), 2000 frames at 720p: peak RSS +{r['rise_mib']:.0f} MiB, {r['kept_mib']:.0f} MiB kept")
        assert r["rise_mib"] <= r["kept_mib"] + 64, (how, r)
        assert r["rise_mib"] < whole_clip_mib / 20


# ------------------------------------------------------------------------------ video arrays
def test_uint8_passes_unchanged_and_integers_in_range_are_cast():
    video = make_synthetic_video(num_frames=2, size=56)
    assert as_uint8_video(video) is video
    wide = as_uint8_video(video.astype(np.int64))
    assert wide.dtype == np.uint8 and np.array_equal(wide, video)


def test_floats_in_0_1_become_x_times_255_rounded():
    video = np.array([0.0, 0.5, 1.0, 0.2, 1 / 255, 0.499 / 255], np.float32).reshape(1, 1, 2, 3)
    assert as_uint8_video(video).ravel().tolist() == [0, 128, 255, 51, 1, 0]
    assert as_uint8_video(np.float64(0.7) * np.ones((1, 2, 2, 3))).ravel().tolist() == [178] * 12


@pytest.mark.parametrize(
    "video, words",
    [
        (np.full((2, 4, 4, 3), 3.0, np.float32), ["float32 value 3.0", "frame 0, pixel (0, 0, 0)", "[0.0, 1.0]"]),
        (np.full((1, 2, 2, 3), 200.0), ["float64 value 200.0", "outside [0.0, 1.0]", "astype(np.uint8)"]),
        (np.array([[[[0.2, -0.1, 0.3]]]]), ["value -0.1", "pixel (0, 0, 1)"]),
        (np.array([[[[0.2, np.nan, 0.3]]]]), ["value nan", "not a finite number"]),
        (np.full((1, 1, 1, 3), 300, np.int32), ["int32 value 300", "outside [0, 255]"]),
        (np.full((1, 1, 1, 3), -1, np.int16), ["int16 value -1"]),
        (np.ones((1, 1, 1, 3), bool), ["dtype bool", "allowed: uint8 in 0..255"]),
    ],
)
def test_values_outside_the_allowed_ranges_are_refused_by_name(video, words):
    with pytest.raises(ValueError) as exc:
        as_uint8_video(video, "video 0")
    message = str(exc.value)
    assert message.startswith("video 0 has ")
    for word in words:
        assert word in message, message
    assert "floating point in [0, 1] (converted as round(x * 255))" in message


def test_a_float_video_enters_the_prompt_as_its_uint8_form():
    _, processor = build("qwen2_vl", num_layers=1)
    video = make_synthetic_video(num_frames=2, size=56, seed=3)
    as_float = video.astype(np.float32) / 255
    a = video_inputs(processor, ["q"], [video])
    b = video_inputs(processor, ["q"], [as_float])
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    with pytest.raises(ValueError, match=r"video 0 has float32 value \d+\.0 at frame 0, pixel \(0, 0, 0\)"):
        video_inputs(processor, ["q"], [video.astype(np.float32)])


def test_analyze_and_eval_apply_the_same_check(tmp_path):
    from framefusion.tools.analyze import _prepare_inputs
    from framefusion.tools.evaluate import QAItem, evaluate

    model, processor = build("qwen2_vl", num_layers=1)
    bad = np.full((2, 56, 56, 3), 2.0, np.float32)
    with pytest.raises(ValueError, match="video has float32 value 2.0"):
        _prepare_inputs(processor, bad, "q", None)
    with pytest.raises(ValueError, match="question 0's video has float32 value 2.0"):
        evaluate(model, processor, [QAItem(bad, "q", "a")], [], progress=False)
    with pytest.raises(ValueError, match="frames has float32 value 2.0"):
        write_video(bad, tmp_path / "x.mp4")


# ----------------------------------------------------------------------------------- run --fps
def test_run_json_gives_the_duration_and_the_sampled_times(tmp_path, capsys):
    path = write_video(make_synthetic_video(num_frames=16, size=56, seed=2), tmp_path / "clip.mp4")
    base = ["run", "--video", str(path), "--json", "--max-new-tokens", "1", "--warmup", "0"]
    assert main([*base, "--fps", "4"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["frames"] == 8 and r["total_frames"] == 16 and r["duration"] == pytest.approx(2.0)
    assert r["sampled_times"] == pytest.approx([k / 4 for k in range(8)])
    assert main([*base, "--fps", "4", "--frames", "3"]) == 0  # 8 would not fit: 3 spread over the clip
    r = json.loads(capsys.readouterr().out)
    assert r["frames"] == 3 and r["sampled_times"] == pytest.approx([0, 1.0, 1.875])
    assert main([*base, "--frames", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["sampled_times"] == pytest.approx([0, 0.625, 1.25, 1.875])
    assert main([b for b in base if b != "--json"] + ["--fps", "4"]) == 0  # the text output says what was sampled
    assert "sampled : 8 of 16 frames (2.00 s), at 0.00, 0.25, 0.50, 0.75, 1.00, 1.25, 1.50, 1.75 s" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize("fps", ["0", "-1", "nan", "inf"])
def test_run_refuses_a_bad_fps(fps, capsys):
    assert main(["run", "--fps", fps]) == 2
    assert f"--fps must be a number > 0, got {float(fps)}" in capsys.readouterr().err


def test_video_clip_summary_is_json_ready(clip16):
    summary = read_clip(clip16, 2).summary()
    assert summary == {"duration": 2.0, "total_frames": 16, "sampled_times": [0.0, 1.875], "sampled_indices": [0, 15]}
    assert isinstance(read_clip(clip16, 2), VideoClip) and json.dumps(summary)


def test_eval_on_a_folder_reads_at_most_the_trained_frame_count(tmp_path):
    from framefusion.tools.evaluate import load_qa

    write_video(make_synthetic_video(num_frames=16, size=56, seed=4), tmp_path / "a.mp4")
    (tmp_path / "qa.json").write_text(json.dumps([{"video": "a.mp4", "question": "q", "answer": "red"}]))
    assert load_qa(tmp_path, max_frames=4)[0].video.shape == (4, 56, 56, 3)
    assert load_qa(tmp_path, max_frames=40)[0].video.shape == (16, 56, 56, 3)  # a shorter one: all its frames
    assert load_qa(tmp_path, frames=5, max_frames=4)[0].video.shape == (5, 56, 56, 3)  # --frames wins
