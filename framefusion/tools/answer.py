"""Load a model, answer a question about a video: the one library entry point of ``run``, ``visualize``,
``web``, ``demo`` and ``eval``.

- :func:`ask`: everything at once (read the file, load the model, answer); what ``framefusion run`` does.
- :func:`load_video_model` -> :class:`LoadedModel` and :func:`answer_video` -> :class:`VideoAnswer`: the
  same in two steps, for callers that answer many questions with one model (the web demo).
- :func:`read_input_clip` / :func:`sample_clip`: a video file's frames, sampled as every command samples them.

Answers are greedy; FrameFusion is applied with :func:`framefusion.apply` around each reduced generate and
removed after it, so one loaded model serves untouched and reduced answers in turn.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from .loading import CONFIG, SHIPPED_MODEL, TINY, ModelOptions, training_info

__all__ = [
    "DEFAULT_FRAMES",
    "DEFAULT_QUESTION",
    "MAX_FPS_FRAMES",
    "LoadedModel",
    "VideoAnswer",
    "answer_video",
    "ask",
    "decode",
    "generate_tokens",
    "load_video_model",
    "read_input_clip",
    "reduced",
    "sample_clip",
    "shipped_qa",
    "stage",
]

DEFAULT_QUESTION = "What moves in this video, and in which direction?"
SHIPPED_QA = SHIPPED_MODEL.parent / "demo_qa.json"  # the shipped video's question and its known answer
DEFAULT_FRAMES = 16
# Most frames an fps sampling takes without a frame count (the cap of Qwen2-VL's own video sampling); a
# longer clip gives this many, evenly spread.
MAX_FPS_FRAMES = 768
RANDOM_WEIGHTS_NOTE = "random weights: its answers are meaningless; it shows tokens kept and time, not accuracy"
RANDOM_NOTE = (
    "framefusion/assets/model/ is not there yet, so this is a tiny Qwen2-VL with RANDOM weights "
    "(framefusion.tiny_models.zoo): its answers are meaningless; it shows tokens kept and time, not accuracy"
)
SHIPPED_NOTE = "a small model trained on synthetic videos (moving shapes), shipped with framefusion"
UNTOUCHED, FRAMEFUSION = "untouched", "framefusion"


def shipped_qa() -> dict[str, str]:
    """The shipped demo video's ``{"question", "answer"}`` (a fallback question while the file is missing)."""
    if SHIPPED_QA.is_file():
        return json.loads(SHIPPED_QA.read_text())
    return {"question": "what colour is the still shape?", "answer": ""}


@contextmanager
def stage(what: str, progress: bool) -> Iterator[None]:
    """One line on stderr around a step that takes a while (loading, decoding): ``what ... done (1.2 s)``."""
    start = time.perf_counter()
    if progress:
        print(f"framefusion: {what} ...", file=sys.stderr, end="", flush=True)
    try:
        yield
    except BaseException:
        if progress:
            print(" failed", file=sys.stderr, flush=True)
        raise
    if progress:
        print(f" done ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ model
@dataclass
class LoadedModel:
    model: Any
    processor: Any
    name: str  # what to call it in output (the spec, or a description of the default)
    note: str = ""  # what the user should know about it (e.g. random weights)
    question: str = DEFAULT_QUESTION  # the default question for this model
    weights: str = ""  # what the weights are (framefusion.tools.loading's TINY, CONFIG, SHIPPED, CHECKPOINT)


def load_video_model(
    spec: str | Path | None = None, options: ModelOptions = ModelOptions(), *, progress: bool = False
) -> LoadedModel:
    """A model and its processor, in any form :func:`framefusion.tools.loading.load_model` takes
    (``tiny:FAMILY``, a shipped config, a folder, a Hugging Face id), with its name, a note on its weights
    and the question to ask by default. Without ``spec``: the shipped model in ``framefusion/assets/model/``,
    or, while that folder does not exist, the tiny random Qwen2-VL. ``progress``: a line on stderr."""
    from . import loading

    fallback = spec is None and not (SHIPPED_MODEL / "config.json").is_file()
    if fallback:
        spec = "tiny:qwen2_vl"
    with stage(f"loading {spec or 'the shipped model'}", progress):
        model, processor, weights = loading.load_model(spec, **options.kwargs())
    if fallback:
        return LoadedModel(model, processor, "tiny random Qwen2-VL", RANDOM_NOTE, weights=weights)
    if spec is None:
        shipped = "framefusion/assets/model (shipped)"
        return LoadedModel(model, processor, shipped, SHIPPED_NOTE, shipped_qa()["question"], weights)
    note = RANDOM_WEIGHTS_NOTE if weights in (TINY, CONFIG) else ""
    return LoadedModel(model, processor, str(spec), note, weights=weights)


# ------------------------------------------------------------------------------------------ video
def sample_clip(
    path: str | Path,
    frames: int | None = None,
    *,
    fps: float | None = None,
    exact: bool = True,
    max_pixels: int | None = None,
):
    """A :class:`~framefusion.tools.video.VideoClip` of the video at ``path``: ``frames`` frames evenly spread
    (default: :data:`DEFAULT_FRAMES`, or every frame of a shorter video); with ``exact=False`` a video
    shorter than ``frames`` gives all its frames instead of an error. With ``fps``: the frames shown at
    ``t = 0, 1/fps, ...``, at most ``frames`` (default :data:`MAX_FPS_FRAMES`). Decoding holds only the
    frames kept; ``max_pixels`` scales larger frames down as they are decoded."""
    from .video import read_clip

    if frames is not None and frames < 1:
        raise ValueError(f"--frames must be >= 1, got {frames}")
    if fps is not None:
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"--fps must be a number > 0, got {fps}")
        return read_clip(path, fps=fps, max_frames=frames or MAX_FPS_FRAMES, max_pixels=max_pixels)
    if frames is not None and exact:
        return read_clip(path, frames, max_pixels=max_pixels)
    return read_clip(path, max_frames=frames or DEFAULT_FRAMES, max_pixels=max_pixels)


def read_input_clip(
    path: str | Path | None,
    frames: int | None = None,
    progress: bool = False,
    exact: bool = True,
    fps: float | None = None,
):
    """``(name, clip)`` of the video file at ``path`` (default: the shipped demo video), sampled as
    :func:`sample_clip` does; ``exact=False``: a shorter video gives all its frames."""
    from ..tiny_models import demo_video_path

    if frames is not None and frames < 1:
        raise ValueError(f"--frames must be >= 1, got {frames}")
    path = Path(path) if path else demo_video_path()
    if path.is_dir():
        raise ValueError(f"--video must be a video file, got a directory: {path}")
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    with stage(f"decoding {path.name}", progress):
        clip = sample_clip(path, frames, fps=fps, exact=exact)
    return str(path), clip


# ----------------------------------------------------------------------------------------- answer
@dataclass
class VideoAnswer:
    """One question about one video, answered with FrameFusion (and untouched, when compared)."""

    model: str
    note: str
    video: str
    frames: int
    question: str
    video_tokens: int
    prompt_tokens: int
    config: dict
    tokens_per_layer: list[int]  # FrameFusion: video tokens present at each layer
    kept_tokens: int  # after the last layer
    achieved_cost: float
    reduction_seconds: float
    answers: dict[str, str]  # "untouched" (with compare) and "framefusion"
    seconds: dict[str, dict[str, float]]  # per run: first_token, generate (medians), new_tokens
    repeats: int = 1
    first_token_runs: dict[str, list[float]] = field(default_factory=dict)  # every timed run, for the spread
    duration: float | None = None  # seconds of the whole video file (None: frames given as an array)
    total_frames: int | None = None  # frames in the whole video file
    sampled_times: list[float] | None = None  # seconds from the first frame, one per sampled frame
    plan: dict | None = None  # with match_frames: the equal-compute plan (FramePlan.as_dict)
    spent: float | None = None  # with match_frames: the run's compute / the plan's target
    report: Any = field(default=None, repr=False)
    inputs: Any = field(default=None, repr=False)
    video_frames: Any = field(default=None, repr=False)

    def as_dict(self) -> dict:
        """The JSON-ready part (no report, inputs or frames)."""
        skip = ("report", "inputs", "video_frames")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


@contextmanager
def reduced(model, config: Any | None, processor: Any = None, budget: str = "token-layers") -> Iterator[Any]:
    """``framefusion.apply(model, config, budget=budget)`` for the body, removed after it; ``config=None``:
    the untouched model (yields None instead of a handle)."""
    from ..engine import apply

    if config is None:
        yield None
        return
    with apply(model, config, processor=processor, budget=budget) as handle:
        yield handle


def generate_tokens(model, inputs, new_tokens: int, *, exact_length: bool = False, streamer=None):
    """Greedy generation from ``inputs`` (a processed batch): the first row's new tokens, ``(n,)`` with
    ``n <= new_tokens``. ``exact_length``: exactly ``new_tokens`` (no early stop on EOS)."""
    import torch

    least = {"min_new_tokens": new_tokens} if exact_length else {}
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, streamer=streamer, **least)
    return out[0, inputs["input_ids"].shape[1] :]  # (b, prompt + n) -> (n,): the prompt is cut off


def decode(processor, tokens) -> str:
    """The text of ``(n,)`` generated tokens, without special tokens."""
    return processor.batch_decode(tokens[None], skip_special_tokens=True)[0]


class _FirstToken:
    """A generate() streamer: a progress bar per new token, and the time of the first one."""

    def __init__(self, bar):
        self.bar, self.calls, self.first = bar, 0, None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 1:  # generate() first hands over the prompt
            return
        if self.first is None:
            self.first = time.perf_counter()
        self.bar.update(1)

    def end(self) -> None:
        pass


def _timed_answer(loaded: LoadedModel, inputs, max_new_tokens: int, desc: str, progress: bool) -> tuple[str, dict]:
    """One greedy answer and its times: ``first_token`` (prompt in, first new token out), ``generate``."""
    from tqdm.auto import tqdm

    with tqdm(total=max_new_tokens, desc=desc, unit="tok", disable=not progress, leave=False) as bar:
        streamer = _FirstToken(bar)
        start = time.perf_counter()
        tokens = generate_tokens(loaded.model, inputs, max_new_tokens, streamer=streamer)
        end = time.perf_counter()
    first = (streamer.first or end) - start
    return decode(loaded.processor, tokens), {"first_token": first, "generate": end - start,
                                              "new_tokens": int(tokens.numel())}  # fmt: skip


def _check_answer_settings(max_new_tokens: int, warmup: int, repeats: int) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"--repeats must be >= 1 and --warmup >= 0, got {repeats} and {warmup}")


def _prompt_inputs(loaded: LoadedModel, frames, question: str):
    """The processed prompt (a batch of one) on the model's device; refuses a processor that puts no
    video tokens in it (not a video model)."""
    import torch

    from ..tiny_models import zoo

    device = getattr(loaded.model, "device", torch.device("cpu"))
    inputs = zoo.video_inputs(loaded.processor, [question], [frames]).to(device)
    video_token_id = getattr(loaded.model.config, "video_token_id", None)
    if video_token_id is not None and not bool((inputs["input_ids"] == video_token_id).any()):
        raise ValueError(f"the processor of {loaded.name} put no video tokens in the prompt: is it a video model?")
    return inputs


@dataclass
class _Rounds:
    """What the timed rounds gave: each setting's answer and per-run times, and FrameFusion's last report."""

    answers: dict[str, str]
    times: dict[str, list[dict]]  # per setting, one {"first_token", "generate", "new_tokens"} per round
    report: Any

    def medians(self) -> dict[str, dict[str, float]]:
        return {
            name: {
                "first_token": statistics.median(t["first_token"] for t in runs),
                "generate": statistics.median(t["generate"] for t in runs),
                "new_tokens": runs[-1]["new_tokens"],
            }
            for name, runs in self.times.items()
        }


def _timed_rounds(loaded: LoadedModel, inputs, config, *, compare: bool, max_new_tokens: int, repeats: int,
                  progress: bool, budget: str = "token-layers") -> _Rounds:  # fmt: skip
    """``repeats`` rounds, each answering untouched (with ``compare``) then with FrameFusion: interleaved,
    so a machine that slows down or speeds up affects both alike."""
    settings = {**({UNTOUCHED: None} if compare else {}), FRAMEFUSION: config}
    rounds = _Rounds({}, {name: [] for name in settings}, None)
    for r in range(repeats):
        for name, setting in settings.items():
            desc = f"{name} ({r + 1}/{repeats})" if repeats > 1 else name
            with reduced(loaded.model, setting, loaded.processor, budget) as handle:
                rounds.answers[name], t = _timed_answer(loaded, inputs, max_new_tokens, desc, progress)
                if handle is not None:
                    rounds.report = handle.last_report()
            rounds.times[name].append(t)
    return rounds


def answer_video(
    loaded: LoadedModel,
    video: Any,
    question: str | None = None,
    config: Any = None,
    *,
    video_name: str = "",
    compare: bool = True,
    max_new_tokens: int = 32,
    warmup: int = 1,
    repeats: int = 1,
    progress: bool = True,
    match_frames: int | None = None,
    match_scope: str = "total",
    chunk_frames: int | None = None,
) -> VideoAnswer:
    """Answer ``question`` (default: the model's own) about ``video`` ((T, H, W, 3) uint8 frames, or a
    :class:`~framefusion.tools.video.VideoClip`, whose duration and sampled times then go into the result)
    with ``config`` (default ``FrameFusionConfig()``), and untouched too with ``compare``; times are
    medians over ``repeats`` interleaved runs after ``warmup`` untimed one-token generations.
    ``match_frames`` (F): the method's cost is planned (:func:`framefusion.planning.plan_frames`, FLOP-priced)
    so that the video's frames cost no more than F of them untouched (``match_scope``: counting the vision
    tower or not); the plan and what the run spent go into the result. ``chunk_frames``: the vision tower
    runs over at most that many frames at a time (:func:`framefusion.chunked_vision`; same answers)."""
    from ..chunking import chunked_vision
    from ..config import FrameFusionConfig
    from .video import VideoClip

    clip = video if isinstance(video, VideoClip) else None
    frames = clip.frames if clip is not None else video
    _check_answer_settings(max_new_tokens, warmup, repeats)
    question = loaded.question if question is None else question
    if not question.strip():
        raise ValueError("the question is empty: ask something about the video")
    config = config or FrameFusionConfig()
    plan = None
    with nullcontext() if chunk_frames is None else chunked_vision(loaded.model, chunk_frames):
        if match_frames is not None:
            plan = _plan(loaded, frames, question, match_frames, match_scope)
            config = config.with_cost(plan.cost)
        inputs = _prompt_inputs(loaded, frames, question)
        for _ in range(warmup):
            generate_tokens(loaded.model, inputs, 1)
        rounds = _timed_rounds(loaded, inputs, config, compare=compare, max_new_tokens=max_new_tokens, repeats=repeats,
                               progress=progress, budget="token-layers" if plan is None else "flops")  # fmt: skip
    answer = _video_answer(loaded, clip, frames, video_name, question, config, inputs, rounds, repeats)
    if plan is not None:
        answer.plan = plan.as_dict()
        answer.spent = plan.spent(answer.tokens_per_layer)
    return answer


def _plan(loaded: LoadedModel, frames, question: str, match_frames: int, scope: str):
    """The equal-compute plan for this prompt: all of ``frames`` for the compute of ``match_frames`` of them."""
    from ..planning import plan_frames
    from .video import spread_frames

    def make_inputs(n: int):
        return _prompt_inputs(loaded, spread_frames(frames, n), question)

    return plan_frames(loaded.model, make_inputs, len(frames), match_frames, processor=loaded.processor, scope=scope)


def _video_answer(loaded: LoadedModel, clip, frames, video_name: str, question: str, config, inputs,
                  rounds: _Rounds, repeats: int) -> VideoAnswer:  # fmt: skip
    """The result: FrameFusion's report (sample 0 of a batch of one), answers, median and per-run times,
    and, for a :class:`~framefusion.tools.video.VideoClip` (``clip``), what was sampled from the file."""
    report = rounds.report
    per_layer = list(report.vision_tokens_per_layer[0])
    video_tokens = int(report.vision_tokens[0])
    return VideoAnswer(
        model=loaded.name,
        note=loaded.note,
        video=video_name,
        frames=len(frames),
        question=question,
        video_tokens=video_tokens,
        prompt_tokens=int(inputs["input_ids"].shape[1]),
        config=asdict(config),
        tokens_per_layer=per_layer,
        kept_tokens=per_layer[-1] if per_layer else video_tokens,
        achieved_cost=float(report.achieved_cost[0]),
        reduction_seconds=float(report.reduction_seconds),
        answers=rounds.answers,
        seconds=rounds.medians(),
        repeats=repeats,
        first_token_runs={n: [t["first_token"] for t in ts] for n, ts in rounds.times.items()},
        duration=None if clip is None else round(clip.duration, 6),
        total_frames=None if clip is None else clip.total_frames,
        sampled_times=None if clip is None else [round(t, 6) for t in clip.times],
        report=report,
        inputs=inputs,
        video_frames=frames,
    )


def ask(
    question: str | None = None,
    video: str | Path | None = None,
    model: str | Path | None = None,
    config: Any = None,
    *,
    options: ModelOptions = ModelOptions(),
    frames: int | None = None,
    fps: float | None = None,
    compare: bool = False,
    max_new_tokens: int = 32,
    warmup: int = 1,
    repeats: int = 1,
    progress: bool = False,
    match_frames: int | None = None,
    match_scope: str = "total",
    chunk_frames: int | None = None,
) -> VideoAnswer:
    """Read the video file ``video`` (default: the shipped demo video), load ``model`` (default: the shipped
    model) and answer ``question`` about it with ``config`` (default ``FrameFusionConfig()``); with
    ``compare`` untouched too. ``frames``/``fps`` sample the video as :func:`sample_clip`; with neither, the
    shipped model gets the frame count it was trained on (all frames of a shorter video). The video is read
    before the model is loaded, so a bad file fails at once."""
    exact = frames is not None
    if frames is None and fps is None and model is None and (SHIPPED_MODEL / "config.json").is_file():
        # the clip length the shipped model was trained and evaluated on; a shorter video gives all its frames
        frames = int(training_info(SHIPPED_MODEL).get("frames", DEFAULT_FRAMES))
    name, clip = read_input_clip(video, frames, progress, exact=exact, fps=fps)
    loaded = load_video_model(model, options, progress=progress)
    return answer_video(loaded, clip, question, config, video_name=name, compare=compare,
                        max_new_tokens=max_new_tokens, warmup=warmup, repeats=repeats,
                        progress=progress, match_frames=match_frames, match_scope=match_scope,
                        chunk_frames=chunk_frames)  # fmt: skip
