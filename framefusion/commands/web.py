"""``framefusion web``: a local web demo (127.0.0.1 only): both answers, times and the token map."""

from __future__ import annotations

from .run import add_model_arguments, load_model

HELP = "local web demo on 127.0.0.1: upload a video or use the shipped one, compare both answers and the token map"


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (0: any free port)")
    p.add_argument("--frames", type=int, help="frames sampled uniformly from each video (default: 16, or all if fewer)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="most tokens per answer")
    p.add_argument("--quiet", action="store_true", help="do not log requests")


def run(args) -> int:
    from ..webdemo import WebDemo, serve

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    if (args.frames is not None and args.frames < 1) or args.max_new_tokens < 1:
        raise ValueError(f"--frames and --max-new-tokens must be >= 1, got {args.frames} and {args.max_new_tokens}")
    loaded = load_model(args.model, trust_remote_code=args.trust_remote_code, device=args.device)
    if loaded.note:
        print(f"framefusion web: model {loaded.name} ({loaded.note})")
    serve(WebDemo(loaded, frames=args.frames, max_new_tokens=args.max_new_tokens), args.port, quiet=args.quiet)
    return 0
