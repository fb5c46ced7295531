"""Command line: ``framefusion demo`` (the default)."""

from __future__ import annotations

import argparse
import json
import sys

from .config import FrameFusionConfig


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cost", type=float, default=0.3, help="share of vision-token compute to keep, in (0, 1]")
    p.add_argument("--similarity-threshold", type=float, default=0.6, help="merge at or above this cosine")
    p.add_argument("--ratio-threshold", type=float, default=0.1, help="keep merging while this share is similar")


def _config(args) -> FrameFusionConfig:
    return FrameFusionConfig(args.cost, args.similarity_threshold, args.ratio_threshold)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="framefusion", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="untouched vs FrameFusion on a built-in model and video")
    _add_config_args(demo)
    demo.add_argument("--video", help="video file (default: the shipped demo video)")
    demo.add_argument("--frames", type=int, default=16, help="frames sampled from the video")
    demo.add_argument("--size", type=int, default=448, help="frame side in pixels (multiple of 28)")
    demo.add_argument("--layers", type=int, default=12, help="decoder layers of the random model")
    demo.add_argument("--hidden", type=int, default=512, help="hidden size of the random model")
    demo.add_argument("--new-tokens", type=int, default=8)
    demo.add_argument("--repeats", type=int, default=3)
    demo.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["demo"] + (argv or []))

    try:
        config = _config(args)
        if args.size % 28:
            raise ValueError(f"--size must be a multiple of 28 (patch 14 x merge 2), got {args.size}")
        if args.frames < 1:
            raise ValueError(f"--frames must be >= 1, got {args.frames}")
        from .demo import format_demo, run_demo

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
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"framefusion: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_dict(), indent=2) if args.json else format_demo(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
