"""``framefusion run``: answer a question about a video with FrameFusion (and untouched, with --compare).

Also the loading and answering used by ``framefusion visualize`` and ``framefusion web``:
:func:`load_model` (a checkpoint by name or path, or the shipped model) and :func:`answer`.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..tools.timing import spread_ratio, timing_caveat
from .common import add_config_arguments, add_model_arguments, check_model_arguments, config_from

HELP = "answer a question about a video with FrameFusion (--compare: and untouched), side by side"

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "assets" / "model"
DEFAULT_QUESTION = "What moves in this video, and in which direction?"
SHIPPED_QA = SHIPPED_MODEL.parent / "demo_qa.json"  # the shipped video's question and answer
SHIPPED_QUESTION = (
    json.loads(SHIPPED_QA.read_text())["question"] if SHIPPED_QA.is_file() else "what colour is the still shape?"
)
DEFAULT_FRAMES = 16
# Most frames --fps samples without --frames (the cap of Qwen2-VL's own video sampling); a longer clip
# gives this many, evenly spread.
MAX_FPS_FRAMES = 768
RANDOM_WEIGHTS_NOTE = "random weights: its answers are meaningless; it shows tokens kept and time, not accuracy"
RANDOM_NOTE = (
    "framefusion/assets/model/ is not there yet, so this is a tiny Qwen2-VL with RANDOM weights "
    "(framefusion.tiny_models.zoo): its answers are meaningless; it shows tokens kept and time, not accuracy"
)


# ------------------------------------------------------------------------------------------ model
@dataclass
class LoadedModel:
    model: Any
    processor: Any
    name: str
    note: str = ""  # what the user should know about it (e.g. random weights)
    question: str = DEFAULT_QUESTION  # the default question for this model


@contextmanager
def _stage(what: str, progress: bool):
    """One line on stderr around a step that takes a while (loading, decoding)."""
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


def load_model(
    name: str | None = None,
    *,
    trust_remote_code: bool = False,
    device: str = "auto",
    progress: bool = True,
    dtype: str = "auto",
    attn_implementation: str | None = None,
    device_map: str | None = None,
) -> LoadedModel:
    """A model and its processor, in any form :func:`framefusion.tools.loading.load_model` takes (``tiny:FAMILY``,
    a shipped config, a folder, a Hugging Face id). Without ``name``: the shipped model in
    ``framefusion/assets/model/``, or, while that folder does not exist, the tiny random Qwen2-VL."""
    from ..tools import loading

    if name is None and not (SHIPPED_MODEL / "config.json").is_file():
        name, fallback = "tiny:qwen2_vl", True
    else:
        fallback = False
    with _stage(f"loading {name or 'the shipped model'}", progress):
        model, processor, what = loading.load_model(
            name,
            device=device,
            dtype=dtype,
            attn_implementation=attn_implementation,
            device_map=device_map,
            trust_remote_code=trust_remote_code,
        )
    if fallback:
        return LoadedModel(model, processor, "tiny random Qwen2-VL", RANDOM_NOTE)
    if name is None:
        note = "a small model trained on synthetic videos (moving shapes), shipped with framefusion"
        return LoadedModel(model, processor, "framefusion/assets/model (shipped)", note, SHIPPED_QUESTION)
    random = what in (loading.TINY, loading.CONFIG)
    return LoadedModel(model, processor, name, RANDOM_WEIGHTS_NOTE if random else "")


# ----------------------------------------------------------------------------------------- answer
@dataclass
class RunResult:
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
    report: Any = field(default=None, repr=False)
    inputs: Any = field(default=None, repr=False)
    video_frames: Any = field(default=None, repr=False)

    def as_dict(self) -> dict:
        """The JSON-ready part (no report, inputs or frames)."""
        skip = ("report", "inputs", "video_frames")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


class _Tokens:
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


def _generate(model, processor, inputs, max_new_tokens: int, desc: str, progress: bool) -> tuple[str, dict]:
    import torch
    from tqdm.auto import tqdm

    prompt = inputs["input_ids"].shape[1]
    with tqdm(total=max_new_tokens, desc=desc, unit="tok", disable=not progress, leave=False) as bar:
        streamer = _Tokens(bar)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer)
        end = time.perf_counter()
    new = out[0, prompt:]
    text = processor.batch_decode(new[None], skip_special_tokens=True)[0]
    first = (streamer.first or end) - start
    return text, {"first_token": first, "generate": end - start, "new_tokens": int(new.numel())}


def answer(
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
) -> RunResult:
    """Answer ``question`` about ``video`` ((T, H, W, 3) uint8 frames, or a :class:`~framefusion.tools.video.VideoClip`,
    whose duration and sampled times then go into the result) with FrameFusion, and untouched too with
    ``compare``; times are medians over ``repeats`` interleaved runs after ``warmup`` ones."""
    import torch

    from ..config import FrameFusionConfig
    from ..engine import apply
    from ..tiny_models import zoo
    from ..tools.video import VideoClip

    clip = video if isinstance(video, VideoClip) else None
    video = clip.frames if clip is not None else video

    if max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"--repeats must be >= 1 and --warmup >= 0, got {repeats} and {warmup}")
    question = loaded.question if question is None else question
    if not question.strip():
        raise ValueError("the question is empty: ask something about the video")
    config = config or FrameFusionConfig()
    model, processor = loaded.model, loaded.processor
    device = getattr(model, "device", torch.device("cpu"))
    inputs = zoo.video_inputs(processor, [question], [video]).to(device)
    video_token_id = getattr(model.config, "video_token_id", None)
    if video_token_id is not None and not bool((inputs["input_ids"] == video_token_id).any()):
        raise ValueError(f"the processor of {loaded.name} put no video tokens in the prompt: is it a video model?")
    for _ in range(warmup):
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=1, do_sample=False)
    names = (["untouched"] if compare else []) + ["framefusion"]
    times: dict[str, list[dict]] = {n: [] for n in names}
    answers: dict[str, str] = {}
    report = None
    for r in range(repeats):
        for name in names:
            desc = f"{name} ({r + 1}/{repeats})" if repeats > 1 else name
            if name == "framefusion":
                with apply(model, config, processor=processor) as handle:
                    answers[name], t = _generate(model, processor, inputs, max_new_tokens, desc, progress)
                    report = handle.last_report()
            else:
                answers[name], t = _generate(model, processor, inputs, max_new_tokens, desc, progress)
            times[name].append(t)
    seconds = {
        n: {
            "first_token": statistics.median(t["first_token"] for t in ts),
            "generate": statistics.median(t["generate"] for t in ts),
            "new_tokens": ts[-1]["new_tokens"],
        }
        for n, ts in times.items()
    }
    per_layer = list(report.vision_tokens_per_layer[0])
    video_tokens = int(report.vision_tokens[0])
    return RunResult(
        model=loaded.name,
        note=loaded.note,
        video=video_name,
        frames=len(video),
        question=question,
        video_tokens=video_tokens,
        prompt_tokens=int(inputs["input_ids"].shape[1]),
        config=asdict(config),
        tokens_per_layer=per_layer,
        kept_tokens=per_layer[-1] if per_layer else video_tokens,
        achieved_cost=float(report.achieved_cost[0]),
        reduction_seconds=float(report.reduction_seconds),
        answers=answers,
        seconds=seconds,
        repeats=repeats,
        first_token_runs={n: [t["first_token"] for t in ts] for n, ts in times.items()},
        duration=None if clip is None else round(clip.duration, 6),
        total_frames=None if clip is None else clip.total_frames,
        sampled_times=None if clip is None else [round(t, 6) for t in clip.times],
        report=report,
        inputs=inputs,
        video_frames=video,
    )


def format_result(result: RunResult) -> str:
    c = result.config
    cols = list(result.answers)
    share = 100 * result.kept_tokens / max(result.video_tokens, 1)

    def row(label: str, values: list[str], extra: str = "") -> str:
        return f"  {label:26}" + "".join(f"{v:>14}" for v in values) + (f"  {extra}" if extra else "")

    kept = {"untouched": str(result.video_tokens), "framefusion": str(result.kept_tokens)}
    cost = {"untouched": "1.000", "framefusion": f"{result.achieved_cost:.3f}"}
    s = result.seconds
    speed = ""
    if "untouched" in s:
        f_u, f_f = s["untouched"]["first_token"], s["framefusion"]["first_token"]
        speed = f"speed-up {f_u / f_f:.2f}x (untouched / framefusion)" if f_f > 0 else ""
    how = f"median of {result.repeats}" if result.repeats > 1 else "one run"
    runs = result.first_token_runs or {n: [s[n]["first_token"]] for n in cols}
    lines = [
        "framefusion run",
        f"  model   : {result.model}",
        *([f"            ({result.note})"] if result.note else []),
        f"  video   : {result.video}, {result.frames} frames -> {result.video_tokens} video tokens"
        f" in a {result.prompt_tokens}-token prompt",
        *([f"  sampled : {_sampled_text(result)}"] if result.sampled_times is not None else []),
        f"  question: {result.question}",
        f"  config  : cost={c['cost']} similarity_threshold={c['similarity_threshold']}"
        f" ratio_threshold={c['ratio_threshold']}",
        "",
        row("", cols),
        row("video tokens kept", [kept[n] for n in cols], f"({share:.1f}% kept by framefusion)"),
        row("achieved cost", [cost[n] for n in cols], f"(budget {c['cost']})"),
        row(f"first token, s ({how})", [f"{s[n]['first_token']:.3f}" for n in cols], speed),
        *([row("first token spread", [_spread_cell(runs[n]) for n in cols], "(max/min over repeats)")]
          if result.repeats > 1 else []),
        row("generate, s", [f"{s[n]['generate']:.3f}" for n in cols]),
        row("new tokens", [str(s[n]["new_tokens"]) for n in cols]),
        "",
        f"  video tokens per layer (framefusion): {result.tokens_per_layer}",
        f"  time spent reducing: {result.reduction_seconds * 1000:.1f} ms",
        "",
    ]
    width = max(len(n) for n in cols)
    lines += [f"  answer, {n:{width}}: {result.answers[n]!r}" for n in cols]
    caveat = timing_caveat(runs.values())
    return "\n".join(lines + ([f"  {caveat}"] if caveat else []))


def _spread_cell(times: list[float]) -> str:
    ratio = spread_ratio(times)
    return "-" if ratio is None else f"{ratio:.2f}x"


def _sampled_text(result: RunResult) -> str:
    times = result.sampled_times or []
    at = ", ".join(f"{t:.2f}" for t in times) if len(times) <= 8 else f"{times[0]:.2f} .. {times[-1]:.2f}"
    return f"{len(times)} of {result.total_frames} frames ({result.duration:.2f} s), at {at} s"


# ---------------------------------------------------------------------------------------- command
def add_input_arguments(p) -> None:
    p.add_argument("--video", metavar="FILE", help="video file (default: the shipped demo video)")
    p.add_argument("--question", help="what to ask about the video (default: one the model knows)")
    p.add_argument(
        "--frames",
        type=int,
        help=f"frames sampled uniformly from the video (default: {DEFAULT_FRAMES}, or all if fewer); "
        "with --fps: the most frames",
    )
    p.add_argument(
        "--fps",
        type=float,
        help="sample the frames shown at t = 0, 1/FPS, 2/FPS, ... seconds instead (at most --frames, default "
        f"{MAX_FPS_FRAMES}; a longer clip gives that many, evenly spread)",
    )
    add_config_arguments(p)


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
    from ..tools.video import read_clip

    if frames is not None and frames < 1:
        raise ValueError(f"--frames must be >= 1, got {frames}")
    if fps is not None:
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"--fps must be a number > 0, got {fps}")
        return read_clip(path, fps=fps, max_frames=frames or MAX_FPS_FRAMES, max_pixels=max_pixels)
    if frames is not None and exact:
        return read_clip(path, frames, max_pixels=max_pixels)
    return read_clip(path, max_frames=frames or DEFAULT_FRAMES, max_pixels=max_pixels)


def sample_video(path: str | Path, frames: int | None = None, *, exact: bool = True):
    """The ``(T, H, W, 3)`` frames of :func:`sample_clip`."""
    return sample_clip(path, frames, exact=exact).frames


def read_input_clip(
    path: str | None, frames: int | None, progress: bool, exact: bool = True, fps: float | None = None
):
    """``(name, clip)`` of the video at ``path`` (default: the shipped one), sampled as :func:`sample_clip`
    does; ``exact=False``: a shorter video gives all its frames."""
    from ..tiny_models import demo_video_path

    if frames is not None and frames < 1:
        raise ValueError(f"--frames must be >= 1, got {frames}")
    path = Path(path) if path else demo_video_path()
    if path.is_dir():
        raise ValueError(f"--video must be a video file, got a directory: {path}")
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    with _stage(f"decoding {path.name}", progress):
        clip = sample_clip(path, frames, fps=fps, exact=exact)
    return str(path), clip


def read_input_video(
    path: str | None, frames: int | None, progress: bool, exact: bool = True, fps: float | None = None
):
    """``(name, frames)``: :func:`read_input_clip` without the times."""
    name, clip = read_input_clip(path, frames, progress, exact, fps)
    return name, clip.frames


def add_arguments(p) -> None:
    add_model_arguments(p)
    add_input_arguments(p)
    p.add_argument("--compare", action="store_true", help="also answer with the untouched model, side by side")
    p.add_argument("--max-new-tokens", type=int, default=32, help="most tokens to generate")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up generations (1 token each)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each; times are medians")
    p.add_argument("--json", action="store_true", help="print the result as JSON (no progress output)")


def load_from(args, progress: bool = True) -> LoadedModel:
    """:func:`load_model` with the common model options of ``args``."""
    return load_model(
        args.model,
        trust_remote_code=args.trust_remote_code,
        device=args.device,
        progress=progress,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
        device_map=args.device_map,
    )


def run(args) -> int:
    config = config_from(args)
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    progress = not args.json
    frames, exact = args.frames, args.frames is not None
    if frames is None and args.fps is None and args.model is None and (SHIPPED_MODEL / "config.json").is_file():
        from ..tools.evaluate import training_info

        # the clip length the shipped model was trained and evaluated on; a shorter video gives all its frames
        frames = int(training_info(SHIPPED_MODEL).get("frames", DEFAULT_FRAMES))
    check_model_arguments(args)
    name, clip = read_input_clip(args.video, frames, progress, exact=exact, fps=args.fps)
    loaded = load_from(args, progress)
    result = answer(
        loaded,
        clip,
        args.question,
        config,
        video_name=name,
        compare=args.compare,
        max_new_tokens=args.max_new_tokens,
        warmup=args.warmup,
        repeats=args.repeats,
        progress=progress,
    )
    print(json.dumps(result.as_dict(), indent=2) if args.json else format_result(result))
    return 0
