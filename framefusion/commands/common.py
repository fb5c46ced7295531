"""Arguments shared by several commands."""

from __future__ import annotations

import argparse

from ..config import FrameFusionConfig


def add_config_arguments(p: argparse.ArgumentParser, costs: bool = False) -> None:
    if costs:
        p.add_argument("--costs", type=float, nargs="+", default=[0.3, 0.5, 0.7], help="budgets to run, each in (0, 1]")
    else:
        p.add_argument("--cost", type=float, default=0.3, help="share of vision-token compute to keep, in (0, 1]")
    p.add_argument("--similarity-threshold", type=float, default=0.6, help="merge at or above this cosine")
    p.add_argument("--ratio-threshold", type=float, default=0.1, help="keep merging while this share is similar")


def config_from(args, cost: float | None = None) -> FrameFusionConfig:
    return FrameFusionConfig(args.cost if cost is None else cost, args.similarity_threshold, args.ratio_threshold)


def check_size(size: int) -> None:
    if size < 28 or size % 28:
        raise ValueError(f"--size must be a positive multiple of 28 (patch 14 x merge 2), e.g. 112 or 448, got {size}")


# ------------------------------------------------------------------ equal compute, long videos (run, eval, bench)
def add_match_arguments(p: argparse.ArgumentParser, match_help: str) -> None:
    """--match-frames F (``match_help`` says what the command does with it) and --match-scope."""
    from ..planning import SCOPES

    p.add_argument("--match-frames", type=int, default=None, metavar="F", help=match_help)
    p.add_argument("--match-scope", choices=SCOPES, default="total",
                   help="what equal compute counts: total (the vision tower too, default) or llm (the LLM prefill)")  # fmt: skip


def add_chunk_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chunk-frames", type=int, default=None, metavar="K",
                   help="long videos: run the vision tower over at most K frames at a time (framefusion.chunked_vision: "
                        "the same features; its memory follows K, not the video)")  # fmt: skip


def check_match_frames(match_frames: int | None, frames: list[int] | None) -> None:
    """--match-frames F needs --frames counts, each at least F (eval, bench)."""
    if match_frames is None:
        return
    if not frames:
        raise ValueError("--match-frames F needs --frames: the frame counts to run at the compute of F")
    if match_frames < 1 or any(f < match_frames for f in frames):
        raise ValueError(f"--match-frames must be >= 1 and at most every --frames count; got {match_frames} "
                         f"with --frames {frames}")  # fmt: skip


# ------------------------------------------------------------------ loading a model (every command)
MODEL_HELP = (
    "tiny:FAMILY (a tiny model, random weights, e.g. tiny:llava_onevision), a shipped config name "
    "(real shape, random weights, e.g. qwen2-vl-2b), a local folder saved with save_pretrained, or a "
    "Hugging Face model id"
)


def add_model_arguments(
    p: argparse.ArgumentParser, *, required: bool = False, default_help: str = "the shipped trained model"
) -> None:
    """The options of every command that loads a model (see :func:`framefusion.tools.loading.load_model`)."""
    p.add_argument(
        "--model",
        metavar="NAME_OR_PATH",
        required=required,
        help=MODEL_HELP + ("" if required else f" (default: {default_help})"),
    )
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python code")
    add_device_arguments(
        p, dtype_auto="a checkpoint's own; tiny models float32; shipped configs bfloat16 on a GPU", threads=False
    )
    p.add_argument(
        "--attn-implementation",
        default=None,
        metavar="IMPL",
        help="eager, sdpa, flash_attention_2 or flash_attention_3 (default: the model's)",
    )
    p.add_argument(
        "--device-map",
        default=None,
        help="for checkpoints: handed to from_pretrained instead of --device (e.g. auto, with accelerate)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (torch.set_num_threads)")


def add_device_arguments(p: argparse.ArgumentParser, *, dtype_auto: str, threads: bool = True) -> None:
    """--device, --dtype (``dtype_auto``: what auto means for this command) and --threads: the options
    of a command that builds its own model (``demo``), as every model-loading command spells them."""
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="auto", help=f"auto ({dtype_auto}), float32, bfloat16 or float16")
    if threads:
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads (torch.set_num_threads)")


def check_device_arguments(args) -> None:
    """Refuse a device that is not there, an unknown dtype or a thread count below 1, and apply --threads."""
    import torch

    from ..tools.loading import resolve_device, resolve_dtype

    resolve_device(args.device)
    resolve_dtype(args.dtype, None, None)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)


def check_model_arguments(args) -> None:
    """Refuse a bad model, device, dtype, attention or thread count before any slow step (video
    decoding, building a model), and apply --threads."""
    from ..tools.loading import check_attn_implementation, check_model_spec

    check_model_spec(args.model)
    check_attn_implementation(args.attn_implementation)
    check_device_arguments(args)


def model_options(args):
    """The :class:`~framefusion.tools.loading.ModelOptions` of the common model options in ``args``."""
    from ..tools.loading import ModelOptions

    return ModelOptions(
        device=args.device,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
        device_map=args.device_map,
        trust_remote_code=args.trust_remote_code,
    )
