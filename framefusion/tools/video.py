"""Reading video files with memory in proportion to the frames kept, and the one check of video arrays.

:func:`read_clip` decodes a file once and turns into RGB arrays only the frames it keeps: a 900-frame
720p clip sampled to 16 frames holds 16 RGB frames, never 900. A first pass over the packets (no
decoding, so it costs little) gives the frame count and the duration that the choice of frames
needs before decoding starts.

:func:`as_uint8_video` is the rule every video array passes where it enters framefusion (the
prompt helpers, ``run``, ``web``, ``eval``, ``analyze``): uint8 RGB, or a documented conversion,
or an error naming the value found and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["VideoClip", "as_uint8_video", "even_indices", "read_clip", "read_video", "resize_video", "spread_frames"]

VIDEO_FILES = "a video file FFmpeg can decode (e.g. .mp4, .mkv, .webm, .avi, .mov) with a video stream"
_TEXT_CODECS = ("ansi", "bintext", "xbin", "idf")  # FFmpeg's renderers of text files as pictures
_TIME_SLACK = 1e-6  # seconds: a frame at t + 1e-6 still counts as shown at t (float rounding of k / fps)


@dataclass(frozen=True)
class VideoClip:
    """Frames sampled from a video file, with when they are shown."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB, the sampled frames only
    times: tuple[float, ...]  # seconds from the clip's first frame, one per sampled frame
    indices: tuple[int, ...]  # each sampled frame's place among all the clip's frames (0-based)
    duration: float  # seconds from the first frame to the end of the last
    total_frames: int  # frames in the whole clip

    def summary(self) -> dict[str, Any]:
        """The JSON-ready description of what was sampled (no pixels)."""
        return {
            "duration": round(self.duration, 6),
            "total_frames": self.total_frames,
            "sampled_times": [round(t, 6) for t in self.times],
            "sampled_indices": list(self.indices),
        }


def even_indices(total: int, count: int) -> np.ndarray:
    """``count`` frame indices spread evenly over ``total`` frames, first and last included (rounded
    ``linspace``; the choice the shipped accuracy numbers were measured with)."""
    return np.linspace(0, total - 1, count).round().astype(int)


def spread_frames(video: np.ndarray, frames: int | None) -> np.ndarray:
    """``frames`` of the (T, ...) ``video`` evenly spread, the first always among them (frame
    ``i * T // frames``: for T = 64, 16 frames are every 4th and 32 every 2nd, so fewer frames are a
    subset of more, which :func:`even_indices` does not promise); None: all of them."""
    total = len(video)
    if frames is None or frames == total:
        return video
    if not 1 <= frames <= total:
        raise ValueError(f"cannot show {frames} frames of a {total}-frame clip; allowed: 1 to {total}")
    return video[np.arange(frames) * total // frames]


def read_video(path: str | Path, num_frames: int | None = None) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 RGB frames of a video file; with ``num_frames``, that many evenly spread
    (see :func:`read_clip`, which also gives their times)."""
    return read_clip(path, num_frames).frames


def resize_video(video: np.ndarray, width: int, height: int | None = None) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 frames scaled to ``(T, height, width, 3)`` (bicubic; ``height`` defaults to
    ``width``: square frames); the same array when the frames already have that size."""
    from PIL import Image

    height = width if height is None else height
    if video.shape[1] == height and video.shape[2] == width:
        return video
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC)) for f in video])


def read_clip(
    path: str | Path,
    num_frames: int | None = None,
    *,
    fps: float | None = None,
    max_frames: int | None = None,
    max_pixels: int | None = None,
) -> VideoClip:
    """Sample a video file, holding only the frames kept (plus the decoder's own few).

    - ``num_frames``: that many frames evenly spread (:func:`even_indices`); more than the clip has is an error.
    - ``fps``: the frame shown at each time ``t = 0, 1/fps, 2/fps, ...`` before the clip's end, as the
      model families' processors sample; a frame shown at several of those times is taken once.
      With ``max_frames``, a clip that would give more frames gives ``max_frames`` evenly spread instead.
    - ``max_frames`` alone: that many evenly spread, or every frame of a shorter clip.
    - none of them: every frame (memory in proportion to the whole clip).
    - ``max_pixels``: frames with more pixels are scaled down, aspect kept, as they are decoded.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (naming the path and what is
    expected) for a directory, an empty, truncated, corrupt or frameless file, a file without a video
    stream, or settings out of range.
    """
    path = Path(path)
    _check_file(path)
    _check_settings(num_frames, fps, max_frames, max_pixels)
    frames, duration = _survey(path)
    if fps is not None:
        wanted = math.ceil(duration * fps - _TIME_SLACK)  # the t = k / fps before the end
        if max_frames is None or wanted <= max_frames:
            return _decode(path, _ByTime(fps), max_pixels, expected=min(wanted, frames))
        return _read_evenly(path, max_frames, frames, max_pixels, exact=False)
    if num_frames is not None:
        return _read_evenly(path, num_frames, frames, max_pixels, exact=True)
    if max_frames is not None:
        return _read_evenly(path, max_frames, frames, max_pixels, exact=False)
    return _decode(path, _ByIndex(None), max_pixels, expected=frames)


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise ValueError(f"expected {VIDEO_FILES}, got a directory: {path}")
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"video file is empty (0 bytes): {path}; expected {VIDEO_FILES}")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_settings(num_frames: Any, fps: Any, max_frames: Any, max_pixels: Any) -> None:
    if num_frames is not None and not _is_count(num_frames):
        raise ValueError(f"num_frames must be an integer >= 1, got {num_frames!r}")
    if max_frames is not None and not _is_count(max_frames):
        raise ValueError(f"max_frames must be an integer >= 1, got {max_frames!r}")
    if max_pixels is not None and not _is_count(max_pixels):
        raise ValueError(f"max_pixels must be an integer >= 1, got {max_pixels!r}")
    if fps is not None:
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a number > 0, got {fps!r}")
        if num_frames is not None:
            raise ValueError("give num_frames (evenly spread) or fps (frames per second), not both")
    if num_frames is not None and max_frames is not None:
        raise ValueError("give num_frames (exactly that many) or max_frames (at most that many), not both")


# --------------------------------------------------------------------------------------- decoding
def _open(path: Path):
    """The open container and its first video stream (``ValueError`` when there is none)."""
    import av

    container = av.open(str(path))
    try:
        if not container.streams.video:
            found = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
            raise ValueError(f"no video stream in {path} (found: {found}); expected {VIDEO_FILES}")
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        if codec in _TEXT_CODECS:  # FFmpeg renders any text file as an ANSI-art "video"
            raise ValueError(f"no video stream in {path} (text, read as {codec!r} text art); expected {VIDEO_FILES}")
    except BaseException:
        container.close()
        raise
    return container, stream


def _decode_errors(path: Path, run):
    """``run()``, with FFmpeg's errors turned into a ``ValueError`` naming the file."""
    import av

    try:
        return run()
    except av.FFmpegError as err:
        reason = f"could not decode video {path} (truncated or corrupt?): {err}"
        raise ValueError(f"{reason}; expected {VIDEO_FILES}") from err


def _survey(path: Path) -> tuple[int, float]:
    """``(frames, duration in seconds)`` from the packets alone: one packet is one frame in nearly
    every file (when not, :func:`_read_evenly` samples again by the decoded count)."""

    def count() -> tuple[int, float]:
        container, stream = _open(path)
        with container:
            packets, first, end = 0, None, None
            for packet in container.demux(stream):
                if packet.size == 0:  # the flush packet at the end
                    continue
                packets += 1
                if packet.pts is not None:
                    first = packet.pts if first is None else min(first, packet.pts)
                    stop = packet.pts + (packet.duration or 0)
                    end = stop if end is None else max(end, stop)
            rate = stream.average_rate or stream.guessed_rate
            if first is not None and end is not None and end > first and stream.time_base:
                return packets, float((end - first) * stream.time_base)
            return packets, packets / float(rate) if rate else 0.0

    return _decode_errors(path, count)


class _ByIndex:
    """Keeps the frames at the given indices (``None``: every frame)."""

    def __init__(self, wanted: set[int] | None):
        self.wanted = wanted

    def keeps(self, index: int, start: float, end: float) -> bool:
        return self.wanted is None or index in self.wanted


class _ByTime:
    """Keeps the frame shown at each ``t = k / fps``: a frame shown from ``start`` until ``end``
    is kept when some such ``t`` falls in between."""

    def __init__(self, fps: float):
        self.fps = fps

    def keeps(self, index: int, start: float, end: float) -> bool:
        first_t = math.ceil((start - _TIME_SLACK) * self.fps) / self.fps  # the first t at or after start
        return first_t < end - _TIME_SLACK


class _Frames:
    """The kept frames with their indices and times, each written straight into one array sized for
    the ``expected`` count. Collecting arrays in a list and stacking them at the end would hold every
    kept frame twice at the peak (freed frame buffers stay resident under glibc's allocator)."""

    def __init__(self, path: Path, expected: int):
        self.path, self.expected = path, max(1, expected)
        self.array: np.ndarray | None = None
        self.indices: list[int] = []
        self.times: list[float] = []

    def add(self, index: int, time: float, rgb: np.ndarray) -> None:
        if self.array is None:
            self.array = np.empty((self.expected, *rgb.shape), np.uint8)
        if rgb.shape != self.array.shape[1:]:
            shapes = sorted({rgb.shape[:2], self.array.shape[1:3]})
            raise ValueError(f"frames of different sizes in video {self.path}: {shapes}")
        if len(self.indices) == len(self.array):  # more than expected (the packets undercounted): grow
            self.array = np.concatenate([self.array, np.empty_like(self.array)])
        self.array[len(self.indices)] = rgb
        self.indices.append(index)
        self.times.append(time)

    def clip(self, duration: float, total: int) -> VideoClip:
        # a view of the first frames: the rest of the array was never written, so it never took memory
        frames = np.zeros((0, 0, 0, 3), np.uint8) if self.array is None else self.array[: len(self.indices)]
        return VideoClip(frames, tuple(self.times), tuple(self.indices), duration, total)


def _decode(path: Path, chooser: _ByIndex | _ByTime, max_pixels: int | None, expected: int) -> VideoClip:
    """One decoding pass that keeps what ``chooser`` keeps (about ``expected`` frames). Whether a frame
    is kept can depend on when the next one starts, so each frame waits (still in the decoder's
    format) until its successor is decoded; only kept frames become RGB arrays."""
    import av

    kept = _Frames(path, expected)

    def offer(index: int, start: float, end: float, frame) -> None:
        if chooser.keeps(index, start, end):
            kept.add(index, start, _rgb(frame, max_pixels))

    def run() -> tuple[int, float]:
        container, stream = _open(path)
        with container:
            rate = float(stream.average_rate or stream.guessed_rate or 0)
            waiting, origin, count = None, None, 0  # waiting: (index, start, frame) of the previous frame
            try:
                for frame in container.decode(stream):
                    time = frame.time if frame.time is not None else count / rate if rate else float(count)
                    origin = time if origin is None else origin
                    if waiting is not None:
                        index, start, previous = waiting
                        offer(index, start, time - origin, previous)  # it is shown until this one starts
                    waiting, count = (count, time - origin, frame), count + 1
            except av.EOFError:
                pass  # the stream ended (e.g. a container with no frames): what was decoded is checked below
            if waiting is None:
                return 0, 0.0
            index, start, frame = waiting
            end = start + _frame_seconds(frame, rate)
            offer(index, start, end, frame)
            return count, end

    total, duration = _decode_errors(path, run)
    if total == 0:
        raise ValueError(f"no decodable frames in video {path} (0 frames); expected {VIDEO_FILES} and at least 1 frame")
    return kept.clip(duration, total)


def _frame_seconds(frame, rate: float) -> float:
    """How long ``frame`` is shown: its own duration when the file records one, else one frame period."""
    duration = getattr(frame, "duration", None)
    if duration and frame.time_base:
        return float(duration * frame.time_base)
    return 1.0 / rate if rate else 0.0


def _rgb(frame, max_pixels: int | None) -> np.ndarray:
    """The frame as ``(H, W, 3)`` uint8 RGB, scaled down (aspect kept) when it has more than ``max_pixels``."""
    width, height = frame.width, frame.height
    if max_pixels is None or width * height <= max_pixels:
        return frame.to_ndarray(format="rgb24")
    scale = math.sqrt(max_pixels / (width * height))
    size = dict(width=max(1, int(width * scale)), height=max(1, int(height * scale)))
    return frame.to_ndarray(format="rgb24", interpolation="AREA", **size)


def _read_evenly(path: Path, count: int, estimate: int, max_pixels: int | None, exact: bool) -> VideoClip:
    """``count`` frames evenly spread. The indices need the frame count before decoding: the packet
    count, checked against the decoded count; where they differ (rare), a second pass samples by
    the decoded count. ``exact=False``: a shorter clip gives all its frames."""
    total = estimate
    for _ in range(2):
        want = count if exact else min(count, total)
        wanted = set(even_indices(total, want).tolist()) if 1 <= want <= total else set()
        clip = _decode(path, _ByIndex(wanted), max_pixels, expected=len(wanted))
        if clip.total_frames == total:
            break
        total = clip.total_frames  # exact now
    if count > total and exact:
        s = "s" if total != 1 else ""
        raise ValueError(
            f"video {path} has {total} frame{s}, fewer than the {count} asked for; ask for 1 to {total} frames"
        )
    return clip


# ------------------------------------------------------------------------------------ video arrays
_ALLOWED = (
    "allowed: uint8 in 0..255, other integer types in 0..255, or floating point in [0, 1] "
    "(converted as round(x * 255)); for floats in 0..255 pass video.astype(np.uint8)"
)


def as_uint8_video(video: Any, what: str = "video") -> np.ndarray:
    """``video`` as a uint8 array, by one rule for every entry point:

    - uint8: as it is (no copy);
    - other integer types: values in 0..255, cast to uint8;
    - floating point: values in [0, 1], converted to ``round(x * 255)`` (halves to even);
    - anything else (bool, complex, text, objects), NaN or infinity, or a value outside the range
      allowed for its type: ``ValueError`` naming ``what``, the value and where it is, and what is allowed.

    A float video in 0..255 is refused rather than guessed at: a dark [0, 1] video and a 0..255
    one cannot be told apart by their values alone.
    """
    if hasattr(video, "detach"):  # a torch tensor, on any device
        video = video.detach().cpu().numpy()
    video = np.asarray(video)
    kind = video.dtype.kind
    if video.dtype == np.uint8:
        return video
    if kind in "iu":
        _check_range(video, 0, 255, what)
        return video.astype(np.uint8)
    if kind == "f":
        bad = ~np.isfinite(video)
        if bad.any():
            raise ValueError(_out_of_range(video, bad, what, "is not a finite number"))
        _check_range(video, 0.0, 1.0, what)
        return np.rint(video * 255.0).astype(np.uint8)
    raise ValueError(f"{what} has dtype {video.dtype}; {_ALLOWED}")


def _check_range(video: np.ndarray, low: float, high: float, what: str) -> None:
    if video.size and (video.min() < low or video.max() > high):
        raise ValueError(_out_of_range(video, (video < low) | (video > high), what, f"is outside [{low}, {high}]"))


def _out_of_range(video: np.ndarray, bad: np.ndarray, what: str, problem: str) -> str:
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    value = video[where].item()
    place = f"frame {where[0]}, pixel {where[1:]}" if video.ndim == 4 else f"index {where}"
    return f"{what} has {video.dtype} value {value!r} at {place}, which {problem}; {_ALLOWED}"
