"""Train the small Qwen2-VL shipped in ``framefusion/assets/model/`` on synthetic video QA.

Samples come from :mod:`framefusion.data.synthetic_qa` (train split, generated on the fly, seeded);
validation accuracy is measured on the validation split (distinct seeds); the test split is never
used here. Two stages:

1. vision: the vision tower alone learns, per merged video token, what it shows -- the object colour
   in each frame of the pair, moving or still, and the direction of motion (linear read-outs of the
   tokens, :class:`TokenHeads`, not shipped). Real video LLMs start from a pretrained vision encoder;
   this stands in for that pretraining.
2. QA: the whole model learns to answer: the cross-entropy of the answer word (one token) right after
   the chat template's assistant prefix, plus that of the ``<|im_end|>`` that follows it (so that
   ``generate`` stops after the answer), with the token loss of stage 1 kept at a small weight.

Training clips have 8, 12 or 16 frames (drawn per clip); validation and evaluation use 16.

Usage (the shipped model, about 25 minutes on 2 CPU cores):
    python scripts/train_synthetic.py --out framefusion/assets/model

``--data v2`` trains on :mod:`framefusion.data.synthetic_qa_v2` instead (32-frame 168x168 clips, 576
video tokens, five question kinds, camera motion and noise; see docs/synthetic_qa_v2.md), with its own
defaults for the clip and run sizes (:data:`V2_DEFAULTS`); version 1 stays the default, unchanged:
    python scripts/train_synthetic.py --data v2 --out runs/qa2_seed0
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framefusion.data.synthetic_qa import (  # noqa: E402
    build_qa_model,
    build_qa_processor,
    chat_text,
    encode,
    make_labelled_sample,
    make_split,
    patchify,
)

# defaults of the options whose value depends on --data (None on the command line = this table)
V1_DEFAULTS = dict(frames=16, train_frames=[8, 12, 16], size=112, batch=16, val=300, steps=1500, vision_steps=600,
                   eval_every=250, minutes=90.0)  # fmt: skip
V2_DEFAULTS = dict(frames=32, train_frames=[32], size=168, batch=8, val=100, steps=900, vision_steps=300,
                   eval_every=150, minutes=75.0)  # fmt: skip


def feature_init(model, gain: float = 2.0) -> None:
    """Give the first channels of the vision patch embedding simple, readable features at init.

    Channels 0-5: mean of each colour channel in each of the two frames of a temporal patch;
    6-8: their difference (frame 1 - frame 0); 9-12: that difference over the left, right, top and
    bottom halves (which way something moves inside the patch). The other channels keep their
    random init. Everything is trained afterwards; this only shortens the plateau at the start.
    """
    w = model.model.visual.patch_embed.proj.weight  # (E, 3, 2, 14, 14)
    p = w.shape[-1]
    area = gain / (p * p)
    with torch.no_grad():
        w[:13].zero_()
        for c in range(3):
            for t in range(2):
                w[2 * c + t, c, t] = area
            w[6 + c, c, 1], w[6 + c, c, 0] = area, -area
        half = p // 2
        for k, region in enumerate(
            [
                (slice(None), slice(0, half)),
                (slice(None), slice(half, p)),
                (slice(0, half), slice(None)),
                (slice(half, p), slice(None)),
            ]
        ):
            w[9 + k, :, 1][(slice(None), *region)] = 2 * area
            w[9 + k, :, 0][(slice(None), *region)] = -2 * area


class Batcher:
    """Builds training batches fast: prompt ids cached per question and clip shape, frames patchified in numpy.

    The result equals the real processor's output (checked on the first batch). Token targets for the
    auxiliary vision loss come along, in the order of the merged video tokens.
    """

    def __init__(self, processor):
        self.processor = processor
        self.ids: dict[tuple, list[int]] = {}
        self.pad = processor.tokenizer.pad_token_id

    def _ids(self, sample) -> list[int]:
        key = (sample.question, sample.answer, sample.video.shape)
        if key not in self.ids:
            text = chat_text(self.processor, sample.question, sample.answer)
            self.ids[key] = self.processor(text=[text], videos=[sample.video])["input_ids"][0]
        return self.ids[key]

    def __call__(self, samples, targets=None) -> dict[str, torch.Tensor]:
        ids = [self._ids(s) for s in samples]
        n = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), n), self.pad, dtype=torch.long)
        mask = torch.zeros((len(ids), n), dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, n - len(x) :] = torch.tensor(x)
            mask[i, n - len(x) :] = 1
        patches, grids = zip(*(patchify(s.video, self.processor) for s in samples))
        video_id = self.processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
        batch = dict(
            input_ids=input_ids,
            attention_mask=mask,
            mm_token_type_ids=(input_ids == video_id).long() * 2,
            pixel_values_videos=torch.from_numpy(np.concatenate(patches)),
            video_grid_thw=torch.tensor(grids, dtype=torch.long),
        )
        if targets is not None:
            batch["targets"] = {k: torch.from_numpy(np.concatenate([t[k] for t in targets])) for k in targets[0]}
        return batch


class TokenHeads(torch.nn.Module):
    """Linear read-outs of the merged video tokens, used only for the auxiliary loss (not shipped).

    They ask the vision tower to say, per token, the object colour in each of the pair's two frames,
    whether the object moves or stays, and which way it moves -- what a pretrained vision encoder
    would already know. Real video LLMs start from such an encoder; this tiny one learns it here.
    """

    SIZES = {"colour_a": 6, "colour_b": 6, "role": 3, "direction": 4}

    def __init__(self, hidden: int, sizes: dict[str, int] | None = None):
        super().__init__()
        sizes = self.SIZES if sizes is None else sizes  # v2: synthetic_qa_v2.TOKEN_TARGET_SIZES
        self.heads = torch.nn.ModuleDict({k: torch.nn.Linear(hidden, n) for k, n in sizes.items()})

    def loss(self, features: torch.Tensor, targets: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        total, accs = features.new_zeros(()), {}
        for name, head in self.heads.items():
            y = targets[name] + (1 if name.startswith("colour") else 0)  # colours: -1 (none) -> class 0
            logits = head(features.float())
            total = total + torch.nn.functional.cross_entropy(logits, y, ignore_index=-1)
            keep = y >= 0 if name in ("direction", "form") else y > 0  # accuracy on tokens that show an object
            accs[name] = float((logits.argmax(-1)[keep] == y[keep]).float().mean()) if keep.any() else float("nan")
        return total, accs


def loss_fn(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    # left padded: the sequence ends "... assistant\n ANSWER <|im_end|>"; predict both from the positions before
    targets = input_ids[:, -2:]
    return torch.nn.functional.cross_entropy(logits[:, -3:-1].reshape(-1, logits.shape[-1]), targets.reshape(-1))


@torch.no_grad()
def validate(model, val_inputs, answer_ids: torch.Tensor, kinds: list[str], batch: int = 50) -> tuple[float, dict]:
    """Accuracy of the first answer token on the validation clips: overall and per question kind."""
    model.eval()
    hits = []
    n = len(answer_ids)
    for i in range(0, n, batch):
        sl = slice(i, i + batch)
        grid = val_inputs["video_grid_thw"][sl]
        per = int(grid[0].prod())
        inputs = dict(
            input_ids=val_inputs["input_ids"][sl],
            attention_mask=val_inputs["attention_mask"][sl],
            mm_token_type_ids=val_inputs["mm_token_type_ids"][sl],
            pixel_values_videos=val_inputs["pixel_values_videos"][i * per : (i + len(grid)) * per],
            video_grid_thw=grid,
        )
        logits = model(**inputs, logits_to_keep=1).logits[:, -1]
        hits += (logits.argmax(-1) == answer_ids[sl]).tolist()
    model.train()
    per_kind = {
        k: round(sum(h for h, kk in zip(hits, kinds) if kk == k) / max(1, kinds.count(k)), 3)
        for k in sorted(set(kinds))
    }
    return sum(hits) / n, per_kind


@torch.no_grad()
def validate_samples(
    model, processor, samples, answer_ids: torch.Tensor, encode_fn, batch: int = 10
) -> tuple[float, dict]:
    """:func:`validate` for long clips: encoded a chunk at a time (v2: all at once would take gigabytes).

    Per kind, and (v2) for the clips with and without camera motion (``motion`` / ``still``)."""
    model.eval()
    hits = []
    for i in range(0, len(samples), batch):
        inputs = encode_fn(processor, samples[i : i + batch])
        logits = model(**inputs, logits_to_keep=1).logits[:, -1]
        hits += (logits.argmax(-1) == answer_ids[i : i + batch]).tolist()
    model.train()
    groups: dict[str, list[bool]] = {}
    for h, s in zip(hits, samples):
        groups.setdefault(s.kind, []).append(h)
        if hasattr(s, "motion"):
            groups.setdefault("motion" if s.motion else "still", []).append(h)
    per_group = {k: round(sum(v) / len(v), 3) for k, v in sorted(groups.items())}
    return sum(hits) / len(hits), per_group


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("framefusion/assets/model"))
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimizer steps of the QA stage (the cosine schedule's length; v1 1500, v2 900)",
    )
    p.add_argument(
        "--vision-steps",
        type=int,
        default=None,
        help="steps of the vision-only stage before the QA stage (v1 600, v2 300)",
    )
    p.add_argument("--minutes", type=float, default=None, help="stop (and save) after this many minutes (v1 90, v2 75)")
    p.add_argument("--batch", type=int, default=None, help="v1 16, v2 8")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--vision-lr", type=float, default=3e-4, help="learning rate of the vision tower in the QA stage")
    p.add_argument(
        "--aux-weight", type=float, default=0.3, help="weight of the token-level vision loss in the QA stage"
    )
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument(
        "--frames", type=int, default=None, help="frames of the validation (and evaluation) clips (v1 16, v2 32)"
    )
    p.add_argument(
        "--train-frames",
        type=int,
        nargs="+",
        default=None,
        help="frame counts drawn for training clips (v1 8 12 16, v2 32)",
    )
    p.add_argument("--size", type=int, default=None, help="frame side in pixels (v1 112, v2 168)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--intermediate", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vision-dim", type=int, default=64)
    p.add_argument("--val", type=int, default=None, help="validation questions (v1 300, v2 100)")
    p.add_argument("--eval-every", type=int, default=None, help="v1 250, v2 150")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--feature-init", action=argparse.BooleanOptionalAction, default=True,
                   help="colour/motion features in the first patch-embedding channels at init")  # fmt: skip
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--init-from", type=Path, help="start from this saved model instead of a fresh one")
    p.add_argument("--first-sample", type=int, default=0, help="index of the first training sample drawn")
    p.add_argument("--data", choices=("v1", "v2"), default="v1",
                   help="v1: framefusion.data.synthetic_qa (the shipped model); v2: synthetic_qa_v2 (issue 18)")  # fmt: skip
    p.add_argument("--distractors", action=argparse.BooleanOptionalAction, default=True,
                   help="v2: draw the objects a question is not about too (--no-distractors: only its own)")  # fmt: skip
    args = p.parse_args(argv)
    if args.data == "v1" and not args.distractors:
        p.error("--no-distractors applies to --data v2 only")
    for key, value in (V2_DEFAULTS if args.data == "v2" else V1_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.data == "v2":
        from framefusion.data import synthetic_qa_v2 as data
    else:
        data = None
    build_processor = data.build_qa_processor if data else build_qa_processor
    build_model = data.build_qa_model if data else build_qa_model
    encode_fn = data.encode if data else encode
    labelled = data.make_labelled_sample if data else make_labelled_sample
    split_fn = data.make_split if data else make_split
    if data is not None and not args.distractors:
        labelled = functools.partial(labelled, distractors=False)
        split_fn = functools.partial(split_fn, distractors=False)

    from tqdm.auto import tqdm

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    processor = build_processor()
    if args.init_from:  # continue from a saved model (its sizes win over --hidden etc.)
        from transformers import Qwen2VLForConditionalGeneration

        model = Qwen2VLForConditionalGeneration.from_pretrained(args.init_from, local_files_only=True)
    else:
        model = build_model(
            processor,
            hidden_size=args.hidden,
            num_layers=args.layers,
            num_heads=args.heads,
            intermediate_size=args.intermediate,
            vision_embed_dim=args.vision_dim,
            seed=args.seed,
        )
        if args.feature_init:
            feature_init(model)
    model.train()
    tok = processor.tokenizer
    n_params = sum(t.numel() for t in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, vocab {len(tok)}", flush=True)
    heads = TokenHeads(model.config.text_config.hidden_size, data.TOKEN_TARGET_SIZES if data else None)
    captured: dict[str, torch.Tensor] = {}
    model.model.visual.merger.register_forward_hook(lambda mod, args_, out: captured.__setitem__("tokens", out))

    val = split_fn("validation", args.val, num_frames=args.frames, size=args.size)
    val_inputs = encode(processor, val) if data is None else None  # v2: encoded a chunk at a time
    val_answers = torch.tensor([tok.convert_tokens_to_ids(s.answer) for s in val])
    batcher = Batcher(processor)
    frame_choices = args.train_frames
    draw = np.random.default_rng(args.seed)

    def train_batch(first: int):
        frames = [int(f) for f in draw.choice(frame_choices, size=args.batch)]
        pairs = [labelled("train", first + i, num_frames=f, size=args.size) for i, f in enumerate(frames)]
        return batcher([s for s, _ in pairs], [t for _, t in pairs])

    # the fast batcher must give exactly what the real processor gives
    probe = split_fn("train", 4, start=10**9, num_frames=args.frames, size=args.size)
    fast, real = batcher(probe), encode_fn(processor, probe, with_answers=True)
    assert torch.equal(fast["input_ids"], real["input_ids"]), "token ids differ from the processor's"
    assert torch.equal(fast["mm_token_type_ids"], real["mm_token_type_ids"])
    assert torch.allclose(fast["pixel_values_videos"], real["pixel_values_videos"], atol=1e-5)

    def param_groups(named, lr: float) -> list[dict]:
        decay, no_decay = [], []
        for name, param in named:
            (no_decay if param.ndim < 2 or "norm" in name else decay).append(param)
        return [
            dict(params=decay, weight_decay=0.05, lr=lr, base_lr=lr),
            dict(params=no_decay, weight_decay=0.0, lr=lr, base_lr=lr),
        ]

    def schedule(step: int, total: int, warmup: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        frac = (step - warmup) / max(1, total - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    def save(step: int, acc: float) -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(args.out)
        processor.save_pretrained(args.out)
        info = dict(
            vars(args) | {"out": str(args.out), "init_from": str(args.init_from) if args.init_from else None},
            step=step,
            validation_accuracy=acc,
            parameters=n_params,
            log=log,
        )
        if previous:
            info["previous"] = previous
        (args.out / "training.json").write_text(json.dumps(info, indent=1))

    previous = None
    if args.init_from and (args.init_from / "training.json").is_file():
        previous = json.loads((args.init_from / "training.json").read_text())

    log: list[dict] = []
    start, seen = time.time(), args.first_sample

    # stage 1: the vision tower alone learns what each token shows (colour per frame, moving or still, direction)
    vision = model.model.visual
    if args.vision_steps:
        opt = torch.optim.AdamW(param_groups(list(vision.named_parameters()) + list(heads.named_parameters()), args.lr),
                                betas=(0.9, 0.98))  # fmt: skip
        running = None
        bar = tqdm(range(args.vision_steps), desc="vision", mininterval=5)
        for step in bar:
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * schedule(step, args.vision_steps, min(args.warmup, args.vision_steps // 5))
            batch = train_batch(seen)
            seen += args.batch
            feats = vision(batch["pixel_values_videos"], grid_thw=batch["video_grid_thw"]).pooler_output
            loss, accs = heads.loss(feats, batch["targets"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vision.parameters(), 1.0)
            opt.step()
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            bar.set_postfix(loss=f"{running:.3f}", **{k[:5]: f"{v:.2f}" for k, v in accs.items()}, refresh=False)
            if (step + 1) % 100 == 0 or step + 1 == args.vision_steps:
                entry = dict(stage="vision", step=step + 1, loss=round(running, 4), minutes=round((time.time() - start) / 60, 2),
                             **{k: round(v, 3) for k, v in accs.items()})  # fmt: skip
                log.append(entry)
                print(json.dumps(entry), flush=True)

    # stage 2: the whole model answers questions (answer word + <|im_end|>), the token loss kept on the side
    vision_ids = {id(q) for q in vision.parameters()}
    rest = [(n, q) for n, q in model.named_parameters() if id(q) not in vision_ids]
    opt = torch.optim.AdamW(
        param_groups(rest, args.lr)
        + param_groups(list(vision.named_parameters()) + list(heads.named_parameters()), args.vision_lr),
        betas=(0.9, 0.98),
    )
    running, best = None, -1.0
    bar = tqdm(range(args.steps), desc="train", mininterval=5)
    step = 0
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * schedule(step, args.steps, args.warmup)
        inputs = train_batch(seen)
        seen += args.batch
        targets = inputs.pop("targets")
        logits = model(**inputs, logits_to_keep=3).logits
        qa_loss = loss_fn(logits, inputs["input_ids"])
        aux_loss, _ = heads.loss(captured.pop("tokens"), targets)
        loss = qa_loss + args.aux_weight * aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = qa_loss.item() if running is None else 0.95 * running + 0.05 * qa_loss.item()
        elapsed = time.time() - start
        bar.set_postfix(
            loss=f"{running:.3f}", aux=f"{aux_loss.item():.3f}", sps=f"{(step + 1) / elapsed:.2f}", refresh=False
        )
        last = step + 1 == args.steps or elapsed > args.minutes * 60
        if (step + 1) % args.eval_every == 0 or last:
            if data is None:
                acc, per_kind = validate(model, val_inputs, val_answers, [v.kind for v in val])
            else:
                acc, per_kind = validate_samples(model, processor, val, val_answers, encode_fn)
            entry = dict(step=step + 1, loss=round(running, 4), aux=round(aux_loss.item(), 4), val_acc=acc,
                         minutes=round(elapsed / 60, 2), **per_kind)  # fmt: skip
            log.append(entry)
            print(json.dumps(entry), flush=True)
            if acc >= best:
                best = acc
                save(step + 1, acc)
        if last:
            break
    return dict(best_validation_accuracy=best, steps=step + 1, minutes=(time.time() - start) / 60)


if __name__ == "__main__":
    print(json.dumps(main()))
