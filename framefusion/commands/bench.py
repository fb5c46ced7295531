"""``framefusion bench``: speed, memory and compute, untouched vs reduced, as ratios."""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import signal
import sys
import threading
from datetime import datetime, timezone

from ..registry import MethodChoices, check_method_name, config_for, method_names
from ..tools.timing import timing_caveat
from .common import add_chunk_argument, add_config_arguments, add_match_arguments, check_match_frames, check_size, config_from

HELP = "speed, memory and compute: untouched vs FrameFusion (and baselines) side by side, as ratios"

BASELINES = MethodChoices([name for name in method_names() if name != "framefusion"])
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION = ("sdpa", "eager")


def add_arguments(p) -> None:
    from ..tools.bench import shipped_configs

    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter  # every option shows its default
    p.add_argument(
        "--model",
        default="qwen2-vl-0.5b-llm",
        help=f"shipped config ({', '.join(shipped_configs())}: real shapes, random weights), tiny:FAMILY, "
        "a local folder or a Hugging Face model id",
    )
    p.add_argument("--frames", type=int, nargs="+", default=[16], help="frame counts to run")
    p.add_argument("--size", type=int, default=448, help="frame side in pixels (multiple of 28)")
    add_config_arguments(p, costs=True)
    p.add_argument(
        "--baselines", nargs="*", default=[], choices=BASELINES, type=check_method_name,
        help="also run these methods at the same costs (stacks too: evs@0.5+framefusion)"
    )
    p.add_argument("--video", help="video file; without one, synthetic moving shapes")
    p.add_argument(
        "--dtype", default="bfloat16", help="weights and compute: " + ", ".join(DTYPES)
    )
    p.add_argument("--device", default=None, help="cpu or cuda; without one, cuda if available")
    p.add_argument(
        "--attn", "--attn-implementation", dest="attn", default="sdpa", metavar="IMPL",
        help="attention implementation: " + ", ".join(ATTENTION),
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (torch.set_num_threads)")
    p.add_argument(
        "--vision-depth", type=int, default=None, help="vision blocks of a shipped config; without it, the config's"
    )
    add_match_arguments(p, "equal compute: run the methods at each --frames count with the cost planned for the "
                           "compute of F frames untouched (FLOP-priced; --costs is not used), and compare them with "
                           "the untouched model at F")  # fmt: skip
    add_chunk_argument(p)
    p.add_argument("--repeats", type=int, default=3, help="measured rounds after one warm-up round")
    p.add_argument("--new-tokens", type=int, default=16, help="tokens decoded after the prefill")
    p.add_argument("--out", default="outputs/bench", help="folder for bench.json, bench.md and plots")
    p.add_argument("--json", action="store_true", help="print the result JSON to stdout (progress goes to stderr)")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``'s signal) during a bench, handled like Ctrl-C: what was measured is written."""


@contextlib.contextmanager
def _sigterm_interrupts():
    """Turn SIGTERM into ``Terminated`` while measuring (Python only handles signals in its main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _settings(args):
    settings = [("untouched", None)]
    for c in args.costs:
        settings.append((f"framefusion cost={c}", config_from(args, c)))
        for name in args.baselines:
            settings.append((f"{name} cost={c}", config_for(name, cost=c)))
    return settings


def _matched_settings(args, model, processor, videos: dict, say) -> tuple[dict, dict]:
    """With --match-frames F: the untouched model alone at F; at each wanted count, untouched and each
    method at its planned cost. Returns (settings per frame count, plan per wanted count)."""
    from ..planning import plan_frames
    from ..tools.bench import QUESTION, prompt_inputs

    device = next(model.parameters()).device

    def inputs_for(n: int):
        return prompt_inputs(processor, QUESTION, videos[n], device)

    settings_for, plans = {args.match_frames: [("untouched", None)]}, {}
    for wanted in sorted(set(args.frames) - {args.match_frames}):
        plan = plans[wanted] = plan_frames(model, inputs_for, wanted, args.match_frames, processor=processor,
                                           scope=args.match_scope)  # fmt: skip
        say(plan.describe())
        settings_for[wanted] = [("untouched", None), (f"framefusion planned {plan.cost:.4f}", config_from(args, plan.cost))]
        settings_for[wanted] += [(f"{name} planned {plan.cost:.4f}", config_for(name, cost=plan.cost)) for name in args.baselines]
    return settings_for, plans


def _videos(args) -> dict:
    """Frames for each frame count; read before any model is built, so a bad video fails at once.
    With --match-frames: one clip of the most frames, each count an evenly spread subset of it."""
    from ..tiny_models import make_synthetic_video, read_video
    from ..tools.video import resize_video, spread_frames

    def clip(frames: int):
        if args.video:
            return resize_video(read_video(args.video, num_frames=frames), args.size)
        return make_synthetic_video(num_frames=frames, size=args.size, seed=frames)

    for f in args.frames:
        if f < 1:
            raise ValueError(f"--frames must be >= 1, got {f}")
    if args.match_frames is not None:
        check_match_frames(args.match_frames, args.frames)
        most = clip(max(args.frames))
        return {f: spread_frames(most, f) for f in sorted({args.match_frames, *args.frames})}
    return {f: clip(f) for f in args.frames}


def _load(args, dtype, device: str):
    """(model, processor, weights) through :func:`framefusion.tools.answer.load_video_model`: a shipped config
    is built on ``device`` in ``dtype`` (a real size built on the CPU first takes minutes to move), a
    checkpoint loaded straight onto it."""
    from ..tools.answer import load_video_model
    from ..tools.loading import ModelOptions

    options = ModelOptions(device=device, dtype=dtype, attn_implementation=args.attn, size=args.size,
                           vision_depth=args.vision_depth)  # fmt: skip
    loaded = load_video_model(args.model, options)
    return loaded.model, loaded.processor, loaded.weights


def _meta(args, model, weights: str) -> dict:
    from ..tools import bench

    return {
        "model": args.model,
        "weights": weights,
        **bench.environment(model),
        "frames": args.frames,
        "size": f"{args.size}x{args.size}",
        "vision_depth": args.vision_depth,
        "repeats": args.repeats,
        "new_tokens": args.new_tokens,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["framefusion", *getattr(args, "argv", [])]),
        "complete": False,
    }


def _device(name: str | None) -> str:
    from ..tools.loading import resolve_device

    return str(resolve_device(name))


def _measure(bench_run, meta: dict, out: str, say) -> list:
    """Run the bench. If it stops early (Ctrl-C, SIGTERM, an error), write the rows measured so
    far, marked incomplete, and let the exception go on: the exit status still says it stopped."""
    from ..tools import bench

    try:
        with _sigterm_interrupts():
            return bench_run.run(progress=False)  # the per-generate lines are the progress
    except BaseException as err:
        meta["stopped_by"] = type(err).__name__ + (f": {err}" if str(err) else "")
        rows = bench_run.rows()
        paths = bench.write_outputs(rows, out, meta)
        say(f"stopped by {meta['stopped_by']}; wrote the {len(rows)} rows measured so far, marked incomplete:")
        say("  " + ", ".join(str(p) for p in paths.values()))
        raise


def run(args) -> int:
    import torch

    from ..tools import bench

    check_size(args.size)
    # checked here, not by argparse choices, so a bad value is one "framefusion: error:" line
    if args.dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {args.dtype!r}")
    if args.attn not in ATTENTION:
        raise ValueError(f"--attn must be one of {', '.join(ATTENTION)}, got {args.attn!r}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    settings = _settings(args)
    videos = _videos(args)
    device = _device(args.device)
    # with --json, stdout carries only the JSON; the running log goes to stderr
    log_stream = sys.stderr if args.json else sys.stdout

    def say(text: str) -> None:
        print(text, file=log_stream, flush=True)

    model, processor, weights = _load(args, getattr(torch, args.dtype), device)
    meta = _meta(args, model, weights)
    say(f"model {args.model} ({weights}, {meta['dtype']}, {meta['device']}, {meta['attn_implementation']})")
    settings_for, plans = {}, {}
    if args.match_frames is not None:
        settings_for, plans = _matched_settings(args, model, processor, videos, say)
    bench_run = bench.BenchRun(
        model, processor, videos, settings, args.repeats, args.new_tokens, on_measure=lambda m: say(m.line()),
        settings_for=settings_for, budget="token-layers" if not plans else "flops",
    )  # fmt: skip
    meta["chunk_frames"] = args.chunk_frames
    with contextlib.ExitStack() as stack:
        if args.chunk_frames is not None:
            from ..chunking import chunked_vision

            stack.enter_context(chunked_vision(model, args.chunk_frames))
        rows = _measure(bench_run, meta, args.out, say)
    meta["complete"] = True
    if plans:
        meta["matched"] = bench.matched_rows(rows, plans, args.match_frames)
        say(bench.format_matched(meta["matched"]))
    paths = bench.write_outputs(rows, args.out, meta)
    say(bench.format_table(rows))
    caveat = timing_caveat(r.prefill_s for r in rows)
    if caveat:
        say(caveat)
    say("written: " + ", ".join(str(p) for p in paths.values()))
    if args.json:
        print(json.dumps(bench.bench_payload(rows, meta), indent=2))
    return 0
