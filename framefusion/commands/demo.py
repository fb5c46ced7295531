"""``framefusion demo``: untouched vs FrameFusion on a built-in model and video (the default command)."""

from __future__ import annotations

import json

from .common import add_config_arguments, check_size, config_from

HELP = "untouched vs FrameFusion side by side on a built-in model and the shipped video"


def add_arguments(p) -> None:
    add_config_arguments(p)
    p.add_argument("--video", help="video file (default: the shipped demo video)")
    p.add_argument("--frames", type=int, default=16, help="frames sampled from the video")
    p.add_argument("--size", type=int, default=448, help="frame side in pixels (multiple of 28)")
    p.add_argument("--layers", type=int, default=12, help="decoder layers of the random model")
    p.add_argument("--hidden", type=int, default=512, help="hidden size of the random model")
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    config = config_from(args)
    check_size(args.size)
    if args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    from ..demo import format_demo, run_demo

    result = run_demo(
        config,
        video_path=args.video,
        frames=args.frames,
        size=args.size,
        num_layers=args.layers,
        hidden_size=args.hidden,
        new_tokens=args.new_tokens,
        repeats=args.repeats,
        progress=not args.json,
    )
    print(json.dumps(result.as_dict(), indent=2) if args.json else format_demo(result))
    return 0
