"""``framefusion demo``: untouched vs FrameFusion on a built-in model and video (the default command)."""

from __future__ import annotations

import json

from .common import add_config_arguments, add_device_arguments, check_device_arguments, check_size, config_from

HELP = "untouched vs FrameFusion side by side on a built-in model and the shipped video"


def add_arguments(p) -> None:
    add_config_arguments(p)
    p.add_argument("--video", help="video file (default: the shipped demo video)")
    p.add_argument("--frames", type=int, default=None, help="frames sampled (default: as trained; 16 with --random)")
    p.add_argument(
        "--size", type=int, default=None, help="frame side, multiple of 28 (default: as trained; 448 with --random)"
    )
    p.add_argument("--random", action="store_true", help="a bigger random-weight model (for timing)")
    p.add_argument("--question", help="question to ask (default: the shipped video's known question)")
    p.add_argument("--layers", type=int, default=None, help="layers of the random model (implies --random; 12)")
    p.add_argument("--hidden", type=int, default=None, help="hidden size of the random model (implies --random; 512)")
    p.add_argument(
        "--new-tokens", type=int, default=None, help="tokens generated (default 1, the answer word; 8 with --random)"
    )
    p.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up round; times are medians")
    add_device_arguments(p, dtype_auto="float32: both models are small")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    config = config_from(args)
    if args.size is not None:
        check_size(args.size)
    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    check_device_arguments(args)
    from ..tools.demo import format_demo, run_demo

    def demo(random_weights: bool, **overrides):
        kwargs = dict(
            video_path=args.video,
            frames=args.frames,
            size=args.size,
            num_layers=args.layers or 12,
            hidden_size=args.hidden or 512,
            new_tokens=args.new_tokens,
            repeats=args.repeats,
            progress=not args.json,
            question=args.question,
            device=args.device,
            dtype=args.dtype,
        )
        return run_demo(config, random_weights=random_weights, **dict(kwargs, **overrides))

    if args.random or args.layers is not None or args.hidden is not None:
        results = {"timing": demo(True)}
    else:
        # Default: the trained model answers the shipped video's question (too small to time),
        # then a bigger random-weight model on the same video shows tokens kept and time.
        results = {"answers": demo(False), "timing": demo(True, question=None, frames=None, size=None, new_tokens=None)}
    if args.json:
        payload = {name: r.as_dict() for name, r in results.items()}
        print(json.dumps(payload if len(payload) > 1 else payload["timing"], indent=2))
    else:
        print("\n\n".join(format_demo(r) for r in results.values()))
    return 0
