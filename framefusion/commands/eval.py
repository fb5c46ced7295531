"""``framefusion eval``: QA accuracy of a model untouched and under each method and budget."""

from __future__ import annotations

import json
from pathlib import Path

from ..registry import MethodChoices, check_method_name, config_for
from .common import add_model_arguments, check_model_arguments, model_options

HELP = "accuracy vs budget on video QA (default: the shipped trained model on the synthetic test split)"

METHODS = MethodChoices()


def add_arguments(p) -> None:
    add_model_arguments(p, default_help="framefusion/assets/model, the shipped one")
    p.add_argument("--qa", help="JSON list of {video, question, answer} or a folder with qa.json "
                   "(default: the synthetic test split)")  # fmt: skip
    p.add_argument("--count", type=int, default=200, help="synthetic test questions (default 200)")
    p.add_argument("--frames", type=int, default=None, help="frames per video (default: as trained)")
    p.add_argument("--costs", type=float, nargs="+", default=[0.3, 0.5, 0.7], help="budgets, each in (0, 1]")
    p.add_argument("--methods", nargs="+", default=["framefusion", "fastv", "random"], choices=METHODS, type=check_method_name,
                   help="methods to run at every budget")  # fmt: skip
    p.add_argument("--similarity-threshold", type=float, default=0.6, help="FrameFusion merge threshold")
    p.add_argument("--ratio-threshold", type=float, default=0.1, help="FrameFusion cascade threshold")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", default="outputs/eval", help="folder for eval.json, eval.md, eval.png")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")


def _configs(args) -> list:
    from ..tools.compare import sweep

    for c in args.costs:
        if not 0.0 < c <= 1.0:
            raise ValueError(f"--costs must each be in (0, 1], got {c}")
    ff = dict(similarity_threshold=args.similarity_threshold, ratio_threshold=args.ratio_threshold)
    return sweep([config_for(m, **ff) for m in dict.fromkeys(args.methods)], args.costs)


def run(args) -> int:
    from ..tools.answer import load_video_model
    from ..tools.evaluate import evaluate, load_qa, synthetic_test_set
    from ..tools.loading import training_info

    if args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    check_model_arguments(args)
    configs = _configs(args)
    loaded = load_video_model(args.model, model_options(args))
    if args.qa:
        # without --frames, at most as many frames as the model was trained on (not every frame of a long video)
        most = int(training_info(args.model).get("frames", 16))
        items = load_qa(args.qa, frames=args.frames, max_frames=most)
        source = str(args.qa)
    else:
        items = synthetic_test_set(args.count, frames=args.frames, model_path=args.model)
        source = f"synthetic test split, {args.count} questions"
    meta = dict(model=str(args.model or "framefusion/assets/model"), questions_from=source)
    rows = evaluate(loaded.model, loaded.processor, items, configs, batch_size=args.batch, out_dir=args.out,
                    meta=meta, progress=not args.json)  # fmt: skip
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "answers"} for r in rows], indent=2))
    else:
        print((Path(args.out) / "eval.md").read_text())
        print(f"written: {Path(args.out) / 'eval.json'}, eval.md, eval.png")
    return 0
