"""``framefusion visualize``: what the model keeps of each frame, as an HTML page, a PNG grid and a GIF."""

from __future__ import annotations

import json
from pathlib import Path

from .common import add_model_arguments, check_model_arguments, config_from
from .run import add_input_arguments, answer, load_from, read_input_video

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


def run(args) -> int:
    from ..tools.visualize import build_token_map, check_supported, write_gif, write_html, write_png

    bad = [f for f in args.formats if f not in FORMATS]
    if bad:
        raise ValueError(f"--formats: unknown format(s) {', '.join(map(repr, bad))}; choose from {', '.join(FORMATS)}")
    config = config_from(args)
    progress = not args.json
    check_model_arguments(args)
    name, video = read_input_video(args.video, args.frames, progress, fps=args.fps)
    loaded = load_from(args, progress)
    check_supported(loaded.model)  # before any generation
    question = loaded.question if args.question is None else args.question
    caption = f"{loaded.name} | {Path(name).name}, {len(video)} frames | question: {question}"
    results = None
    if args.no_answers:
        tmap = build_token_map(loaded.model, loaded.processor, video, question, config, caption=caption)
    else:
        result = answer(
            loaded,
            video,
            question,
            config,
            video_name=name,
            compare=True,
            max_new_tokens=args.max_new_tokens,
            progress=progress,
        )
        tmap = build_token_map(
            loaded.model, loaded.processor, video, question, inputs=result.inputs, report=result.report,
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
    if loaded.note:
        tmap.caption += f" ({loaded.note})"
    out = Path(args.out)
    written = {}
    if "html" in args.formats:
        written["html"] = str(write_html(tmap, out / f"{args.name}.html", results=results))
    if "png" in args.formats:
        written["png"] = str(write_png(tmap, out / f"{args.name}.png"))
    if "gif" in args.formats:
        written["gif"] = str(write_gif(tmap, out / f"{args.name}.gif"))
    if args.json:
        print(json.dumps({"files": written, "summary": tmap.summary(), "counts": tmap.drawn_counts()}, indent=2))
    else:
        print(f"framefusion visualize: {tmap.summary()}")
        if loaded.note:
            print(f"  model: {loaded.name} ({loaded.note})")
        for kind, path in written.items():
            print(f"  {kind:4}: {path}")
    return 0
