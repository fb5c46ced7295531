"""``framefusion web``: a local web demo (127.0.0.1 only): both answers, times and the token map."""

from __future__ import annotations

from ..tools.answer import MAX_FPS_FRAMES
from .common import add_model_arguments, check_model_arguments, model_options

HELP = "local web demo on 127.0.0.1: upload a video or use the shipped one, compare both answers and the token map"


def add_arguments(p) -> None:
    from ..tools.web import Limits

    add_model_arguments(p)
    p.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (0: any free port)")
    p.add_argument("--frames", type=int, help="frames sampled uniformly from each video (default: 16, or all if fewer)")
    p.add_argument(
        "--fps",
        type=float,
        help=f"sample the frames shown every 1/FPS s instead (at most --frames, default {MAX_FPS_FRAMES})",
    )
    p.add_argument("--max-new-tokens", type=int, default=32, help="most tokens per answer")
    limits = Limits()
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=limits.upload_bytes / (1 << 20),
        help="largest upload, in MiB (default %(default)g)",
    )
    p.add_argument(
        "--max-in-flight",
        type=int,
        default=limits.in_flight,
        help="requests read, decoded or answered at once; more get 503 busy (default %(default)s)",
    )
    p.add_argument(
        "--read-timeout",
        type=float,
        default=limits.read_timeout,
        help="seconds a read from a client may wait (default %(default)g)",
    )
    p.add_argument("--quiet", action="store_true", help="do not log requests")


def run(args) -> int:
    from ..tools.answer import load_video_model
    from ..tools.web import Limits, WebDemo, serve

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    if (args.frames is not None and args.frames < 1) or args.max_new_tokens < 1:
        raise ValueError(f"--frames and --max-new-tokens must be >= 1, got {args.frames} and {args.max_new_tokens}")
    if args.fps is not None and not args.fps > 0:
        raise ValueError(f"--fps must be a number > 0, got {args.fps}")
    if not args.max_upload_mb > 0 or args.max_in_flight < 1 or not args.read_timeout > 0:
        raise ValueError(
            "--max-upload-mb and --read-timeout must be > 0 and --max-in-flight >= 1, got "
            f"{args.max_upload_mb}, {args.read_timeout} and {args.max_in_flight}"
        )
    limits = Limits(
        upload_bytes=int(args.max_upload_mb * (1 << 20)), in_flight=args.max_in_flight, read_timeout=args.read_timeout
    )
    check_model_arguments(args)
    loaded = load_video_model(args.model, model_options(args), progress=True)
    if loaded.note:
        print(f"framefusion web: model {loaded.name} ({loaded.note})")
    app = WebDemo(loaded, frames=args.frames, fps=args.fps, max_new_tokens=args.max_new_tokens, limits=limits)
    serve(app, args.port, quiet=args.quiet)
    return 0
