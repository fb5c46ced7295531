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
    bench = sub.add_parser("bench", help="speed, memory and compute: untouched vs reduced, as ratios")
    bench.add_argument("--model", default="qwen2-vl-0.5b-llm", help="shipped config name (random weights) or checkpoint path/name")
    bench.add_argument("--frames", type=int, nargs="+", default=[16], help="frame counts to run")
    bench.add_argument("--size", type=int, default=448, help="frame side in pixels (multiple of 28)")
    bench.add_argument("--costs", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    bench.add_argument("--similarity-threshold", type=float, default=0.6)
    bench.add_argument("--ratio-threshold", type=float, default=0.1)
    bench.add_argument("--video", help="video file (default: synthetic moving shapes)")
    bench.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    bench.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    bench.add_argument("--vision-depth", type=int, default=None, help="override vision blocks of a shipped config")
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--new-tokens", type=int, default=16)
    bench.add_argument("--out", default="outputs/bench", help="folder for bench.json, bench.md and plots")
    args = parser.parse_args(argv)
    if args.command == "bench":
        return _bench(args)
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


def _bench(args) -> int:
    import torch

    from . import bench
    from .models import make_synthetic_video, read_video

    try:
        for c in args.costs:
            FrameFusionConfig(c, args.similarity_threshold, args.ratio_threshold)
        if args.size % 28:
            raise ValueError(f"--size must be a multiple of 28, got {args.size}")
        dtype = getattr(torch, args.dtype)
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if args.model in bench.shipped_configs():
            model, processor = bench.build_random_model(args.model, dtype, args.vision_depth, args.size)
            weights = "random weights"
        else:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=dtype).eval()
            processor = AutoProcessor.from_pretrained(args.model)
            weights = "checkpoint"
        model.to(device)
        videos = {}
        for f in args.frames:
            if args.video:
                from .demo import _resize

                videos[f] = _resize(read_video(args.video, num_frames=f), args.size)
            else:
                videos[f] = make_synthetic_video(num_frames=f, size=args.size, seed=f)
    except (ValueError, TypeError, FileNotFoundError, OSError) as err:
        print(f"framefusion: error: {err}", file=sys.stderr)
        return 2
    settings = [("untouched", None)] + [
        (f"framefusion cost={c}", FrameFusionConfig(c, args.similarity_threshold, args.ratio_threshold)) for c in args.costs
    ]
    rows = bench.run_bench(model, processor, videos, settings, repeats=args.repeats, new_tokens=args.new_tokens)
    meta = {
        "model": args.model,
        "weights": weights,
        "dtype": args.dtype,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "size": args.size,
        "vision_depth": args.vision_depth,
    }
    paths = bench.write_outputs(rows, args.out, meta)
    print(f"model {args.model} ({weights}, {args.dtype}, {device})")
    print(bench.format_table(rows))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
