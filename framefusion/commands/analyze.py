"""``framefusion analyze``: the paper's three observations measured on a model and video."""

from __future__ import annotations

import json
from pathlib import Path

HELP = "measure adjacent-frame similarity, its layer-wise distribution and ranking consistency; suggest a threshold"

TINY_PREFIX = "tiny:"


def add_arguments(p) -> None:
    p.add_argument(
        "--model",
        required=True,
        help="tiny:FAMILY (a tiny zoo model, e.g. tiny:qwen2_vl), a shipped config name (random weights), "
        "or a checkpoint path/name",
    )
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
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--vision-depth", type=int, default=None, help="override the vision blocks of a shipped config")
    p.add_argument("--out", default="outputs/analyze", help="folder for analysis.json and the plots")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")


def load_model(name: str, dtype: str = "auto", device: str = "cpu", size: int | None = None, vision_depth=None):
    """``(model, processor, weights)`` for a ``tiny:FAMILY``, a shipped config or a checkpoint."""
    import torch

    from .. import bench

    if name.startswith(TINY_PREFIX):
        from ..models import zoo

        family = name[len(TINY_PREFIX) :]
        if family not in zoo.TINY_FAMILIES:
            raise ValueError(f"unknown tiny family {family!r}; available: {sorted(zoo.TINY_FAMILIES)}")
        torch_dtype = torch.float32 if dtype == "auto" else getattr(torch, dtype)
        model, processor = zoo.build(family, dtype=torch_dtype)
        weights = "tiny, random weights"
    elif name in bench.shipped_configs():
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        # on the device already: a real size built on the CPU first takes minutes to move
        model, processor = bench.build_random_model(name, torch_dtype, vision_depth, size or 448, device=device)
        weights = "random weights"
    else:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        allowed = (
            f"--model takes tiny:FAMILY ({', '.join(sorted(_tiny_families()))}), a shipped config "
            f"({', '.join(bench.shipped_configs())}) or a checkpoint path/name"
        )
        if (name.startswith((".", "/", "~")) or name.count("/") > 1) and not Path(name).expanduser().exists():
            raise FileNotFoundError(f"model not found: {name}; {allowed}")
        try:
            model = AutoModelForImageTextToText.from_pretrained(
                name, dtype=dtype if dtype == "auto" else getattr(torch, dtype)
            )
            processor = AutoProcessor.from_pretrained(name)
        except (OSError, ValueError) as err:
            raise ValueError(f"could not load model {name!r} ({err}); {allowed}") from err
        weights = "checkpoint"
    return model.eval().to(device), processor, weights


def _tiny_families() -> list[str]:
    from ..models import zoo

    return list(zoo.TINY_FAMILIES)


def run(args) -> int:
    import torch

    from ..analyze import analyze, check_settings
    from ..models import demo_video_path, read_video
    from .common import check_size

    check_settings(args.distances, args.thresholds, args.target_share, args.random_pairs, args.bins)
    if args.frames < 2:
        raise ValueError(f"--frames must be >= 2 (adjacent frames are compared), got {args.frames}")
    if args.size is not None:
        check_size(args.size)
    video_path = Path(args.video) if args.video else demo_video_path()
    video = read_video(video_path, num_frames=args.frames)  # before loading the model: a bad file fails fast
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, processor, weights = load_model(args.model, args.dtype, device, args.size, args.vision_depth)
    from .. import bench

    size = args.size or (448 if args.model in bench.shipped_configs() else None)
    if size is not None:
        from ..demo import _resize

        video = _resize(video, size)
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
    print(f"{args.model} ({weights}, {next(model.parameters()).dtype}, {device}); video {video_path}")
    print(result.summary())
    print("written: " + ", ".join(result.files.values()))
    return 0
