"""``framefusion eval``: QA accuracy of a model untouched and under each method and budget."""

from __future__ import annotations

import json
from pathlib import Path

from ..registry import MethodChoices, check_method_name, config_for
from .common import add_match_arguments, add_model_arguments, check_match_frames, check_model_arguments, model_options

HELP = "accuracy vs budget on video QA (default: the shipped trained model on the synthetic test split)"

DESCRIPTION = """Accuracy vs budget on video QA, with 95% bootstrap intervals (overall, per question kind, per
camera-motion group where the questions know it (synthetic QA v2), and the paired change against the
untouched model). Each batch is prepared, and its vision tower run, once for all settings.

Data-parallel: under `accelerate launch --num_processes N -m framefusion eval ...` (or torchrun) each
process answers its shard (the batches rank, rank + N, ... of --batch questions) and rank 0 gathers them
(torch.distributed, gloo) and writes the same outputs, answer for answer, as one process. Without a
launcher: `--shard i/N --out DIR` per process (writes DIR/shard-i-of-N.json), then
`framefusion eval --merge DIR ... --out OUT`."""

METHODS = MethodChoices()


def add_arguments(p) -> None:
    import argparse

    p.description, p.formatter_class = DESCRIPTION, argparse.RawDescriptionHelpFormatter
    add_model_arguments(p, default_help="framefusion/assets/model, the shipped one")
    p.add_argument("--qa", help="JSON list of {video, question, answer} or a folder with qa.json "
                   "(default: the synthetic test split)")  # fmt: skip
    p.add_argument("--count", type=int, default=200, help="synthetic test questions (default 200)")
    p.add_argument("--frames", type=int, nargs="+", default=None,
                   help="frames per video (default: as trained); with --match-frames, the frame counts wanted")
    add_match_arguments(p, "equal compute: run each method at every --frames count with the cost at which it costs no "
                           "more than F frames untouched (planned per count; --costs is not used); the untouched "
                           "reference sees F frames of each clip, the clip being made of (or read at) the most frames")
    p.add_argument("--costs", type=float, nargs="+", default=[0.3, 0.5, 0.7], help="budgets, each in (0, 1]")
    p.add_argument("--methods", nargs="+", default=["framefusion", "fastv", "random"], choices=METHODS, type=check_method_name,
                   help="methods to run at every budget")  # fmt: skip
    p.add_argument("--similarity-threshold", type=float, default=0.6, help="FrameFusion merge threshold")
    p.add_argument("--ratio-threshold", type=float, default=0.1, help="FrameFusion cascade threshold")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", default="outputs/eval", help="folder for eval.json, eval.md, eval.png")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument(
        "--resamples", type=int, default=2000, help="bootstrap resamples for the 95%% intervals (default 2000)"
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--shard", metavar="I/N", default=None,
                   help="answer only shard I of N (the batches I, I+N, ... of --batch questions) and write "
                   "OUT/shard-I-of-N.json; merge the N files with --merge")  # fmt: skip
    p.add_argument("--merge", nargs="+", metavar="PATH", default=None,
                   help="merge shard files (or folders holding them) into eval.json/.md/.png in --out; "
                   "loads no model (the methods, budgets and questions are the shards')")  # fmt: skip


def _configs(args) -> list:
    from ..tools.compare import sweep

    for c in args.costs:
        if not 0.0 < c <= 1.0:
            raise ValueError(f"--costs must each be in (0, 1], got {c}")
    ff = dict(similarity_threshold=args.similarity_threshold, ratio_threshold=args.ratio_threshold)
    return sweep([config_for(m, **ff) for m in dict.fromkeys(args.methods)], args.costs)


def _matched_settings(args, loaded, item) -> list:
    """With --match-frames F: per wanted count w, the untouched model at w (a reference) and each method
    at w frames with the FLOP-priced cost planned on ``item`` (w frames for the compute of F)."""
    from ..planning import plan_frames
    from ..tools.evaluate import Setting, question_inputs

    video = item.frames()
    model, processor = loaded.model, loaded.processor

    def make_inputs(n: int):
        return question_inputs(model, processor, [item], [video], n)

    ff = dict(similarity_threshold=args.similarity_threshold, ratio_threshold=args.ratio_threshold)
    settings = []
    for wanted in sorted(set(args.frames)):
        plan = plan_frames(model, make_inputs, wanted, args.match_frames, processor=processor, scope=args.match_scope)
        print(plan.describe())
        if wanted != args.match_frames:
            settings.append(Setting(None, wanted))
        settings += [Setting(config_for(m, plan.cost, **ff), wanted, "flops", plan) for m in dict.fromkeys(args.methods)]
    return settings


def _world() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) under a distributed launcher (accelerate launch, torchrun), else None."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or "RANK" not in os.environ:
        return None
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))


def _check(args) -> None:
    if args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    frames = args.frames or []
    if any(f < 1 for f in frames):
        raise ValueError(f"--frames must each be >= 1, got {frames}")
    if args.match_frames is None and len(frames) > 1:
        raise ValueError(f"--frames takes one count unless --match-frames is given; got {frames}")
    check_match_frames(args.match_frames, frames)
    if args.resamples < 1:
        raise ValueError(f"--resamples must be >= 1, got {args.resamples}")


def _print(args, rows) -> None:
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "answers"} for r in rows], indent=2))
    else:
        print((Path(args.out) / "eval.md").read_text())
        print(f"written: {Path(args.out) / 'eval.json'}, eval.md, eval.png")


def _merge(args) -> int:
    from ..tools.evaluate import load_shards, merge_shards

    _check(args)
    rows = merge_shards(load_shards(args.merge), args.resamples, args.seed, out_dir=args.out)
    _print(args, rows)
    return 0


def _gather(partial: dict, rank: int, world: int) -> list[dict] | None:
    """Every rank's partial result on rank 0 (None elsewhere), over a gloo process group (made here when
    the launcher left none: accelerate launch and torchrun only set the environment)."""
    import torch.distributed as dist

    made = not dist.is_initialized()
    if made:
        dist.init_process_group("gloo")
    try:
        group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
        gathered = [None] * world if rank == 0 else None
        dist.gather_object(partial, gathered, dst=0, group=group)
        dist.barrier(group=group)
    finally:
        if made:
            dist.destroy_process_group()
    return gathered


def run(args) -> int:
    from ..tools.answer import load_video_model
    from ..tools.evaluate import evaluate_shard, load_qa, merge_shards, parse_shard, synthetic_test_set
    from ..tools.loading import training_info

    if args.merge:
        return _merge(args)
    _check(args)
    world = _world()
    shard = parse_shard(args.shard) if args.shard else (0, 1)
    if args.shard and world:
        raise ValueError("--shard is for processes started one by one; under accelerate launch / torchrun "
                         "each process takes its shard from RANK and WORLD_SIZE")  # fmt: skip
    if world:
        shard = world[:2]
        if args.device in ("auto", "cuda"):  # one GPU per process, as accelerate launch expects
            import torch

            if torch.cuda.is_available():
                args.device = f"cuda:{world[2] % torch.cuda.device_count()}"
    check_model_arguments(args)
    matching = args.match_frames is not None
    configs = [] if matching else _configs(args)
    loaded = load_video_model(args.model, model_options(args))
    clip_frames = max(args.frames) if args.frames else None  # with --match-frames: the most wanted
    if args.qa:
        # without --frames, at most as many frames as the model was trained on (not every frame of a long video)
        most = int(training_info(args.model).get("frames", 16))
        items = load_qa(args.qa, frames=clip_frames, max_frames=most)
        source = str(args.qa)
    else:
        items = synthetic_test_set(args.count, frames=clip_frames, model_path=args.model)
        source = f"synthetic test split, {args.count} questions"
    meta = dict(model=str(args.model or "framefusion/assets/model"), questions_from=source)
    if matching:
        configs = _matched_settings(args, loaded, items[0])
        meta.update(clip_frames=clip_frames, match_frames=args.match_frames, match_scope=args.match_scope)
    main_process = shard[0] == 0 if world else True
    partial = evaluate_shard(loaded.model, loaded.processor, items, configs, shard, batch_size=args.batch, meta=meta,
                             progress=not args.json and main_process,
                             out_dir=args.out if args.shard else None, frames=args.match_frames)  # fmt: skip
    if args.shard:
        done = len(partial["indices"])
        print(f"shard {shard[0]}/{shard[1]}: {done} of {len(items)} questions answered; written: "
              f"{Path(args.out) / f'shard-{shard[0]}-of-{shard[1]}.json'} (merge: framefusion eval --merge DIR...)")  # fmt: skip
        return 0
    partials = _gather(partial, *world[:2]) if world else [partial]
    if partials is None:  # not rank 0: rank 0 writes and prints
        return 0
    rows = merge_shards(partials, args.resamples, args.seed, out_dir=args.out)
    _print(args, rows)
    return 0
