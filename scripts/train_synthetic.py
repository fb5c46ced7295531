"""Train the small Qwen2-VL shipped in ``framefusion/assets/model/`` on synthetic video QA.

Samples come from :mod:`framefusion.data.synthetic_qa` (train split, generated on the fly, seeded);
validation accuracy is measured on the validation split (distinct seeds); the test split is never
used here. The loss is the cross-entropy of the answer word (one token) right after the chat
template's assistant prefix, plus that of the ``<|im_end|>`` that follows it (so that ``generate``
stops after the answer).

Usage:
    python scripts/train_synthetic.py --steps 3000 --minutes 50 --out framefusion/assets/model
"""

from __future__ import annotations

import argparse
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
    make_sample,
    make_split,
    patchify,
)


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
    """Builds training batches fast: prompt ids cached per question, frames patchified in numpy.

    The result equals the real processor's output (checked on the first batch).
    """

    def __init__(self, processor, frames: int, size: int):
        self.processor, self.frames, self.size = processor, frames, size
        self.ids: dict[tuple[str, str], list[int]] = {}
        self.pad = processor.tokenizer.pad_token_id

    def _ids(self, sample) -> list[int]:
        key = (sample.question, sample.answer)
        if key not in self.ids:
            text = chat_text(self.processor, sample.question, sample.answer)
            self.ids[key] = self.processor(text=[text], videos=[sample.video])["input_ids"][0]
        return self.ids[key]

    def __call__(self, samples) -> dict[str, torch.Tensor]:
        ids = [self._ids(s) for s in samples]
        n = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), n), self.pad, dtype=torch.long)
        mask = torch.zeros((len(ids), n), dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, n - len(x) :] = torch.tensor(x)
            mask[i, n - len(x) :] = 1
        patches, grids = zip(*(patchify(s.video, self.processor) for s in samples))
        video_id = self.processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
        return dict(
            input_ids=input_ids,
            attention_mask=mask,
            mm_token_type_ids=(input_ids == video_id).long() * 2,
            pixel_values_videos=torch.from_numpy(np.concatenate(patches)),
            video_grid_thw=torch.tensor(grids, dtype=torch.long),
        )


def loss_fn(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    # left padded: the sequence ends "... assistant\n ANSWER <|im_end|>"; predict both from the positions before
    targets = input_ids[:, -2:]
    return torch.nn.functional.cross_entropy(logits[:, -3:-1].reshape(-1, logits.shape[-1]), targets.reshape(-1))


@torch.no_grad()
def validate(model, val_inputs, answer_ids: torch.Tensor, batch: int = 50) -> float:
    model.eval()
    correct = 0
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
        correct += int((logits.argmax(-1) == answer_ids[sl]).sum())
    model.train()
    return correct / n


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("framefusion/assets/model"))
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps (the cosine schedule's length)")
    p.add_argument("--minutes", type=float, default=50.0, help="stop (and save) after this many minutes")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--hidden", type=int, default=160)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vision-dim", type=int, default=64)
    p.add_argument("--val", type=int, default=300, help="validation questions")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--feature-init", action=argparse.BooleanOptionalAction, default=True,
                   help="colour/motion features in the first patch-embedding channels at init")  # fmt: skip
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--init-from", type=Path, help="start from this saved model instead of a fresh one")
    p.add_argument("--first-sample", type=int, default=0, help="index of the first training sample drawn")
    args = p.parse_args(argv)

    from tqdm.auto import tqdm

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    processor = build_qa_processor()
    if args.init_from:  # continue from a saved model (its sizes win over --hidden etc.)
        from transformers import Qwen2VLForConditionalGeneration

        model = Qwen2VLForConditionalGeneration.from_pretrained(args.init_from, local_files_only=True)
        model.generation_config = build_qa_model(processor, hidden_size=16, num_layers=1, num_heads=2,
                                                 vision_embed_dim=16, vision_heads=2).generation_config  # fmt: skip
    else:
        model = build_qa_model(
            processor,
            hidden_size=args.hidden,
            num_layers=args.layers,
            intermediate_size=args.hidden * 3,
            vision_embed_dim=args.vision_dim,
            seed=args.seed,
        )
        if args.feature_init:
            feature_init(model)
    model.train()
    tok = processor.tokenizer
    n_params = sum(t.numel() for t in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, vocab {len(tok)}", flush=True)

    val = make_split("validation", args.val, num_frames=args.frames, size=args.size)
    val_inputs = encode(processor, val)
    val_answers = torch.tensor([tok.convert_tokens_to_ids(s.answer) for s in val])
    batcher = Batcher(processor, args.frames, args.size)

    # the fast batcher must give exactly what the real processor gives
    probe = make_split("train", 4, start=10**9, num_frames=args.frames, size=args.size)
    fast, real = batcher(probe), encode(processor, probe, with_answers=True)
    assert torch.equal(fast["input_ids"], real["input_ids"]), "token ids differ from the processor's"
    assert torch.equal(fast["mm_token_type_ids"], real["mm_token_type_ids"])
    assert torch.allclose(fast["pixel_values_videos"], real["pixel_values_videos"], atol=1e-5)

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "norm" in name else decay).append(param)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
    )

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

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
    start, seen, running, best = time.time(), args.first_sample, None, -1.0
    bar = tqdm(range(args.steps), desc="train", mininterval=5)
    step = 0
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        samples = [make_sample("train", seen + i, num_frames=args.frames, size=args.size) for i in range(args.batch)]
        seen += args.batch
        inputs = batcher(samples)
        logits = model(**inputs, logits_to_keep=3).logits
        loss = loss_fn(logits, inputs["input_ids"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        elapsed = time.time() - start
        bar.set_postfix(loss=f"{running:.3f}", lr=f"{lr_at(step):.1e}", sps=f"{(step + 1) / elapsed:.2f}")
        last = step + 1 == args.steps or elapsed > args.minutes * 60
        if (step + 1) % args.eval_every == 0 or last:
            acc = validate(model, val_inputs, val_answers)
            entry = dict(step=step + 1, loss=round(running, 4), val_acc=acc, minutes=round(elapsed / 60, 2))
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
