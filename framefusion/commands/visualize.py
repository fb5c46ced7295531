"""``framefusion visualize``: what the model keeps of each frame, as an HTML page, a PNG grid and a GIF."""

from __future__ import annotations

import json
from pathlib import Path

from .common import add_model_arguments, check_model_arguments, config_from, model_options
from .run import add_input_arguments

HELP = "draw which video tokens FrameFusion keeps, merges and prunes (self-contained HTML, PNG grid, GIF)"
FORMATS = ("html", "png", "gif")


def add_arguments(p) -> None:
    add_model_arguments(p)
    add_input_arguments(p)
    p.add_argument("--out", default="outputs/visualize", help="folder for the files (created)")
    p.add_argument("--name", default="token_map", help="file name stem: NAME.html, NAME.png, NAME.gif")
    p.add_argument("--formats", nargs="+", default=list(FORMATS), help=f"any of {', '.join(FORMATS)}")
    p.add_argument(
        "--no-answers",
        action="store_true",
        help="skip generating the two answers (untouched and FrameFusion): one reduced prefill only",
    )
    p.add_argument("--max-new-tokens", type=int, default=32, help="most tokens per answer")
    p.add_argument("--json", action="store_true", help="print the written paths and counts as JSON")


def _token_map(args, loaded, frames, name: str, config, progress: bool):
    """``(token map, answers table or None)``: with answers, the map is drawn from the reduced answer's
    own report; with --no-answers, from one reduced prefill."""
    from ..tools.answer import answer_video
    from ..tools.visualize import build_token_map

    question = loaded.question if args.question is None else args.question
    caption = f"{loaded.name} | {Path(name).name}, {len(frames)} frames | question: {question}"
    if args.no_answers:
        return build_token_map(loaded.model, loaded.processor, frames, question, config, caption=caption), None
    result = answer_video(loaded, frames, question, config, video_name=name, compare=True,
                          max_new_tokens=args.max_new_tokens, progress=progress)  # fmt: skip
    tmap = build_token_map(
        loaded.model, loaded.processor, frames, question, inputs=result.inputs, report=result.report,
        caption=caption,
    )  # fmt: skip
    results = {
        n: {
            "answer": result.answers[n],
            "video tokens kept": result.video_tokens if n == "untouched" else result.kept_tokens,
            "achieved cost": 1.0 if n == "untouched" else round(result.achieved_cost, 3),
            "first token, s": round(result.seconds[n]["first_token"], 3),
            "generate, s": round(result.seconds[n]["generate"], 3),
        }
        for n in result.answers
    }
    return tmap, results


def _write_files(args, tmap, results) -> dict[str, str]:
    from ..tools.visualize import write_gif, write_html, write_png

    out = Path(args.out)
    written = {}
    if "html" in args.formats:
        written["html"] = str(write_html(tmap, out / f"{args.name}.html", results=results))
    if "png" in args.formats:
        written["png"] = str(write_png(tmap, out / f"{args.name}.png"))
    if "gif" in args.formats:
        written["gif"] = str(write_gif(tmap, out / f"{args.name}.gif"))
    return written


def run(args) -> int:
    from ..tools.answer import load_video_model, read_input_clip
    from ..tools.visualize import check_supported

    bad = [f for f in args.formats if f not in FORMATS]
    if bad:
        raise ValueError(f"--formats: unknown format(s) {', '.join(map(repr, bad))}; choose from {', '.join(FORMATS)}")
    config = config_from(args)
    progress = not args.json
    check_model_arguments(args)
    name, clip = read_input_clip(args.video, args.frames, progress, fps=args.fps)
    loaded = load_video_model(args.model, model_options(args), progress=progress)
    check_supported(loaded.model)  # before any generation
    tmap, results = _token_map(args, loaded, clip.frames, name, config, progress)
    if loaded.note:
        tmap.caption += f" ({loaded.note})"
    written = _write_files(args, tmap, results)
    if args.json:
        print(json.dumps({"files": written, "summary": tmap.summary(), "counts": tmap.drawn_counts()}, indent=2))
    else:
        print(f"framefusion visualize: {tmap.summary()}")
        if loaded.note:
            print(f"  model: {loaded.name} ({loaded.note})")
        for kind, path in written.items():
            print(f"  {kind:4}: {path}")
    return 0
