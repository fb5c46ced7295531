"""``framefusion analyze``: the paper's three observations measured on a model and video."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .common import add_model_arguments, check_model_arguments

HELP = "measure adjacent-frame similarity, its layer-wise distribution and ranking consistency; suggest a threshold"


def add_arguments(p) -> None:
    add_model_arguments(p, required=True)
    p.add_argument("--video", help="video file (default: the shipped demo video)")
    p.add_argument("--frames", type=int, default=16, help="frames sampled uniformly from the video")
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="resize frames to SIZE x SIZE (multiple of 28; default: 448 for shipped configs, else unchanged)",
    )
    p.add_argument("--question", default="Describe what happens in this video.")
    p.add_argument("--distances", type=int, nargs="+", default=[1, 2, 4, 8], help="frame gaps compared (1 always)")
    p.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=[0.5, 0.6, 0.7, 0.8, 0.9],
        help="candidate similarity thresholds (share of tokens at or above each, per layer)",
    )
    p.add_argument(
        "--target-share",
        type=float,
        default=0.3,
        help="share of video tokens the suggested threshold marks as similar at the first merging layer, in (0, 1)",
    )
    p.add_argument("--random-pairs", type=int, default=4096, help="random video-token pairs per layer")
    p.add_argument("--seed", type=int, default=0, help="seed of the random pairs")
    p.add_argument("--bins", type=int, default=40, help="histogram bins over [-1, 1]")
    p.add_argument("--vision-depth", type=int, default=None, help="override the vision blocks of a shipped config")
    p.add_argument("--out", default="outputs/analyze", help="folder for analysis.json and the plots")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")


def run(args) -> int:
    from ..tools.analyze import analyze, check_settings
    from ..tiny_models import demo_video_path, read_video
    from ..tools.answer import load_video_model
    from .common import check_size, model_options

    check_settings(args.distances, args.thresholds, args.target_share, args.random_pairs, args.bins)
    if args.frames < 2:
        raise ValueError(f"--frames must be >= 2 (adjacent frames are compared), got {args.frames}")
    if args.size is not None:
        check_size(args.size)
    check_model_arguments(args)
    video_path = Path(args.video) if args.video else demo_video_path()
    video = read_video(video_path, num_frames=args.frames)  # before loading the model: a bad file fails fast
    options = dataclasses.replace(model_options(args), size=args.size, vision_depth=args.vision_depth)
    loaded = load_video_model(args.model, options)
    model, processor = loaded.model, loaded.processor
    device = next(model.parameters()).device
    from ..tools import bench

    size = args.size or (448 if args.model in bench.shipped_configs() else None)
    if size is not None:
        from ..tools.video import resize_video

        video = resize_video(video, size)
    result = analyze(
        model,
        processor,
        video,
        question=args.question,
        distances=args.distances,
        thresholds=args.thresholds,
        target_share=args.target_share,
        random_pairs=args.random_pairs,
        seed=args.seed,
        bins=args.bins,
        out_dir=args.out,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    print(f"{args.model} ({loaded.weights}, {next(model.parameters()).dtype}, {device}); video {video_path}")
    print(result.summary())
    print("written: " + ", ".join(result.files.values()))
    return 0
