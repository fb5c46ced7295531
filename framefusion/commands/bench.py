"""``framefusion bench``: speed, memory and compute, untouched vs reduced, as ratios."""

from __future__ import annotations

from .common import add_config_arguments, check_size, config_from

HELP = "speed, memory and compute: untouched vs FrameFusion (and baselines) side by side, as ratios"


def add_arguments(p) -> None:
    p.add_argument(
        "--model", default="qwen2-vl-0.5b-llm", help="shipped config name (random weights) or checkpoint path/name"
    )
    p.add_argument("--frames", type=int, nargs="+", default=[16], help="frame counts to run")
    p.add_argument("--size", type=int, default=448, help="frame side in pixels (multiple of 28)")
    add_config_arguments(p, costs=True)
    p.add_argument(
        "--baselines",
        nargs="*",
        default=[],
        choices=["fastv", "random", "uniform", "input-merge"],
        help="also run these methods at the same costs",
    )
    p.add_argument("--video", help="video file (default: synthetic moving shapes)")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--vision-depth", type=int, default=None, help="override the vision blocks of a shipped config")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--out", default="outputs/bench", help="folder for bench.json, bench.md and plots")


def _settings(args):
    from .. import FastVConfig, InputMergeConfig, RandomPruneConfig, UniformPruneConfig

    baselines = {
        "fastv": FastVConfig,
        "random": RandomPruneConfig,
        "uniform": UniformPruneConfig,
        "input-merge": InputMergeConfig,
    }
    settings = [("untouched", None)]
    for c in args.costs:
        settings.append((f"framefusion cost={c}", config_from(args, c)))
        for name in args.baselines:
            settings.append((f"{name} cost={c}", baselines[name](cost=c)))
    return settings


def run(args) -> int:
    import torch

    from .. import bench
    from ..models import make_synthetic_video, read_video

    check_size(args.size)
    settings = _settings(args)
    videos = {}  # read first: a bad video fails before a model is built
    for f in args.frames:
        if f < 1:
            raise ValueError(f"--frames must be >= 1, got {f}")
        if args.video:
            from ..demo import _resize

            videos[f] = _resize(read_video(args.video, num_frames=f), args.size)
        else:
            videos[f] = make_synthetic_video(num_frames=f, size=args.size, seed=f)
    dtype = getattr(torch, args.dtype)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    # created on the device in the dtype: a real size built on the CPU first takes minutes to move
    if args.model in bench.shipped_configs():
        model, processor = bench.build_random_model(args.model, dtype, args.vision_depth, args.size, device=device)
        weights = "random weights"
    else:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=dtype, device_map=device).eval()
        processor = AutoProcessor.from_pretrained(args.model)
        weights = "checkpoint"
    rows = bench.run_bench(model, processor, videos, settings, repeats=args.repeats, new_tokens=args.new_tokens)
    meta = {
        "model": args.model,
        "weights": weights,
        "dtype": args.dtype,
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "size": args.size,
        "vision_depth": args.vision_depth,
        "command": "framefusion " + " ".join(getattr(args, "argv", [])),
    }
    paths = bench.write_outputs(rows, args.out, meta)
    print(f"model {args.model} ({weights}, {args.dtype}, {device})")
    print(bench.format_table(rows))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0
