"""``framefusion run``: answer a question about a video with FrameFusion (and untouched, with --compare).

The loading and answering are :mod:`framefusion.tools.answer`'s (:func:`~framefusion.tools.answer.ask`);
this module parses the arguments and formats the result.
"""

from __future__ import annotations

import json

from ..planning import describe_plan
from ..tools.answer import DEFAULT_FRAMES, MAX_FPS_FRAMES, VideoAnswer, ask
from ..tools.timing import spread_cell, timing_caveat
from .common import (
    add_chunk_argument,
    add_config_arguments,
    add_match_arguments,
    add_model_arguments,
    check_model_arguments,
    config_from,
    model_options,
)

HELP = "answer a question about a video with FrameFusion (--compare: and untouched), side by side"


def format_result(result: VideoAnswer) -> str:
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
        f"  config  : cost={c['cost']:.4g} similarity_threshold={c['similarity_threshold']}"
        f" ratio_threshold={c['ratio_threshold']}",
        "",
        row("", cols),
        row("video tokens kept", [kept[n] for n in cols], f"({share:.1f}% kept by framefusion)"),
        row("achieved cost", [cost[n] for n in cols], f"(budget {c['cost']:.4g})"),
        row(f"first token, s ({how})", [f"{s[n]['first_token']:.3f}" for n in cols], speed),
        *([row("first token spread", [spread_cell(runs[n]) for n in cols], "(max/min over repeats)")]
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
    if result.plan is not None:
        lines += ["", f"  equal compute: {describe_plan(result.plan)}; this run spent {result.spent:.4f}x the target"]
    caveat = timing_caveat(runs.values())
    return "\n".join(lines + ([f"  {caveat}"] if caveat else []))


def _sampled_text(result: VideoAnswer) -> str:
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


def add_arguments(p) -> None:
    add_model_arguments(p)
    add_input_arguments(p)
    add_match_arguments(p, "equal compute: set the cost so that --frames frames cost no more than F of them untouched "
                           "(FLOP-priced budget; --cost is not used)")
    add_chunk_argument(p)
    p.add_argument("--compare", action="store_true", help="also answer with the untouched model, side by side")
    p.add_argument("--max-new-tokens", type=int, default=32, help="most tokens to generate")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up generations (1 token each)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each; times are medians")
    p.add_argument("--json", action="store_true", help="print the result as JSON (no progress output)")


def run(args) -> int:
    config = config_from(args)
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    check_model_arguments(args)
    if args.match_frames is not None and (args.match_frames < 1 or args.frames is None or args.frames < args.match_frames):
        raise ValueError(f"--match-frames F needs --frames N with N >= F >= 1; got --frames {args.frames} "
                         f"--match-frames {args.match_frames}")  # fmt: skip
    result = ask(args.question, args.video, args.model, config, options=model_options(args), frames=args.frames,
                 fps=args.fps, compare=args.compare, max_new_tokens=args.max_new_tokens, warmup=args.warmup,
                 repeats=args.repeats, progress=not args.json, match_frames=args.match_frames,
                 match_scope=args.match_scope, chunk_frames=args.chunk_frames)  # fmt: skip
    print(json.dumps(result.as_dict(), indent=2) if args.json else format_result(result))
    return 0
