"""Accuracy against compute: a video QA set answered untouched and under reduction methods at budgets.

rows = evaluate(model, processor, samples, sweep([FrameFusionConfig(), FastVConfig(), RandomPruneConfig()],
                [0.3, 0.5, 0.7]), out_dir="outputs/eval")

Every question is answered by greedy generation; the first word of the answer (lower case, without
punctuation) is compared with the gold answer. Per method and budget the table gives the accuracy,
its drop against the untouched model (in points), and the achieved cost (the mean over samples of
the method's report). Written as ``eval.json``, ``eval.md`` and ``eval.png`` (accuracy against
achieved cost, one line per method).

Question sets: the synthetic test split (:mod:`framefusion.data.synthetic_qa`, generated from its
seeds, never trained on), or a JSON list of ``{"video": file, "question": ..., "answer": ...}``
(file relative to the JSON file; a folder means its ``qa.json``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..engine import apply
from .compare import config_dict, method_label, pyplot, save_figure, sweep
from .loading import training_info
from .video import as_uint8_video

__all__ = [
    "QAItem",
    "default_methods",
    "evaluate",
    "first_word",
    "load_qa",
    "plot_accuracy",
    "synthetic_test_set",
    "write_tables",
]

UNTOUCHED = "untouched"


@dataclass(frozen=True)
class QAItem:
    video: np.ndarray  # (T, H, W, 3) uint8
    question: str
    answer: str
    kind: str = ""
    source: str = ""


def synthetic_test_set(count: int = 200, frames: int | None = None, size: int | None = None, start: int = 0,
                       model_path: str | Path | None = None) -> list[QAItem]:  # fmt: skip
    """``count`` questions of the synthetic test split; frames/size default to those the model was trained on."""
    from ..data.synthetic_qa import make_split

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    info = training_info(model_path)
    frames = frames or info.get("frames", 8)
    size = size or info.get("size", 112)
    return [
        QAItem(s.video, s.question, s.answer, s.kind, f"test/{s.seed[1]}")
        for s in make_split("test", count, start=start, num_frames=frames, size=size)
    ]


def load_qa(
    path: str | Path, frames: int | None = None, limit: int | None = None, max_frames: int | None = None
) -> list[QAItem]:
    """Questions from a JSON list of ``{"video", "question", "answer"}`` (a folder means its ``qa.json``).

    Each video gives ``frames`` frames evenly spread, or with ``max_frames`` at most that many (all of a
    shorter one), or, with neither, every frame; decoding holds only the frames kept."""
    from .video import read_clip

    path = Path(path)
    if path.is_dir():
        path = path / "qa.json"
    if not path.is_file():
        raise FileNotFoundError(f"QA file not found: {path} (a JSON list of {{video, question, answer}})")
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path} must hold a non-empty JSON list of {{video, question, answer}} objects")
    items = []
    for i, r in enumerate(records[:limit]):
        if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in ("video", "question", "answer")):
            raise ValueError(f"{path} entry {i} must have string fields video, question and answer, got {r!r}")
        video = read_clip(path.parent / r["video"], frames, max_frames=None if frames else max_frames).frames
        items.append(QAItem(video, r["question"], r["answer"], str(r.get("kind", "")), r["video"]))
    return items


def first_word(text: str) -> str:
    """The first word of ``text``, lower case, without surrounding punctuation ('' when none)."""
    words = re.findall(r"[\w'-]+", text.lower())
    return words[0] if words else ""


def default_methods(costs: Sequence[float] = (0.3, 0.5, 0.7)) -> list[Any]:
    """FrameFusion, FastV and random pruning, each at every cost."""
    from ..config import FastVConfig, FrameFusionConfig, RandomPruneConfig

    return sweep([FrameFusionConfig(), FastVConfig(), RandomPruneConfig()], costs)


def _answers(model, processor, items: Sequence[QAItem], batch_size: int, new_tokens: int, handle=None,
             progress: bool = False, label: str = ""):  # fmt: skip
    """First words of the answers, and the achieved costs with a ``handle``; ``progress``: a bar (stderr)
    counting the questions answered, since one setting of a large set takes minutes."""
    from tqdm.auto import tqdm

    from ..data.synthetic_qa import chat_text

    words, costs = [], []
    bar = tqdm(total=len(items), desc=f"  {label}", unit="q", leave=False, disable=not progress,
               mininterval=0)  # every batch shows, however fast
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        inputs = processor(
            text=[chat_text(processor, it.question) for it in chunk],
            videos=[it.video for it in chunk],
            padding=True,
            return_tensors="pt",
        ).to(model.device)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
        texts = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        words += [first_word(t) for t in texts]
        if handle is not None:
            costs += list(handle.last_report().achieved_cost)
        bar.update(len(chunk))
    bar.close()
    return words, costs


def _accuracy_row(label: str, config: Any, words: Sequence[str], costs: Sequence[float], items: Sequence[QAItem],
                  gold: Sequence[str]) -> dict:  # fmt: skip
    """One setting's row: accuracy over all questions and per question kind, and the mean achieved cost
    (1.0 untouched: ``costs`` is empty without a method)."""
    ok = [w == g for w, g in zip(words, gold)]
    kinds = sorted({it.kind for it in items if it.kind})
    per_kind = {k: float(np.mean([o for o, it in zip(ok, items) if it.kind == k])) for k in kinds}
    return dict(
        label=label,
        config=None if config is None else config_dict(config),
        cost=None if config is None else getattr(config, "cost", None),
        accuracy=float(np.mean(ok)),
        correct=int(sum(ok)),
        total=len(ok),
        achieved_cost=float(np.mean(costs)) if costs else 1.0,
        per_kind=per_kind,
        answers=list(words),
    )


def _setting_rows(model, processor, items: Sequence[QAItem], configs: Sequence[Any], gold: Sequence[str],
                  batch_size: int, new_tokens: int, progress: bool) -> list[dict]:  # fmt: skip
    """The untouched row, then one row per config (the method applied around its questions only)."""
    from tqdm.auto import tqdm

    rows = []
    for config in tqdm([None, *configs], desc="eval (methods x budgets)", disable=not progress):
        if config is None:
            words, costs = _answers(model, processor, items, batch_size, new_tokens, None, progress, UNTOUCHED)
            rows.append(_accuracy_row(UNTOUCHED, None, words, costs, items, gold))
            continue
        with apply(model, config, processor=processor) as handle:
            label = f"{method_label(config)} cost={getattr(config, 'cost', '-')}"
            words, costs = _answers(model, processor, items, batch_size, new_tokens, handle, progress, label)
        rows.append(_accuracy_row(method_label(config), config, words, costs, items, gold))
    return rows


def evaluate(
    model,
    processor,
    items: Sequence[QAItem],
    configs: Sequence[Any] | None = None,
    batch_size: int = 16,
    new_tokens: int = 2,
    out_dir: str | Path | None = None,
    meta: dict | None = None,
    progress: bool = True,
) -> list[dict]:
    """Accuracy of the untouched model and of every config (default :func:`default_methods`).

    Rows: label, config, cost (requested; None untouched), accuracy, drop (points vs untouched),
    achieved_cost, correct, total, per_kind accuracy. With ``out_dir`` writes eval.json/.md/.png.
    """
    if not items:
        raise ValueError("no questions to evaluate")
    if batch_size < 1 or new_tokens < 1:
        raise ValueError(f"batch_size and new_tokens must be >= 1, got {batch_size} and {new_tokens}")
    configs = default_methods() if configs is None else list(configs)
    items = [replace(it, video=as_uint8_video(it.video, f"question {i}'s video")) for i, it in enumerate(items)]
    gold = [first_word(it.answer) for it in items]
    rows = _setting_rows(model, processor, items, configs, gold, batch_size, new_tokens, progress)
    base = rows[0]["accuracy"]
    for r in rows:
        r["drop"] = round(100 * (base - r["accuracy"]), 4)
    if out_dir is not None:
        write_tables(rows, out_dir, {**(meta or {}), "gold": gold, "questions": [it.question for it in items]})
    return rows


def write_tables(rows: Sequence[dict], out_dir: str | Path, meta: dict | None = None) -> Path:
    """``eval.json`` (meta + rows), ``eval.md`` (the paper-style table) and ``eval.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps({**(meta or {}), "rows": list(rows)}, indent=1))
    kinds = sorted({k for r in rows for k in r.get("per_kind", {})})
    # the change in points, as the README writes it: -4.6 is a loss (the JSON's "drop" is +4.6)
    head = ["method", "budget (cost)", "accuracy", "change vs untouched (points)", "achieved cost", *kinds]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cost = "-" if r["cost"] is None else f"{r['cost']:.2g}"
        drop = "-" if r["cost"] is None else f"{0.0 - r['drop']:+.1f}"  # 0.0 - x: no "-0.0"
        per = [f"{r['per_kind'].get(k, float('nan')):.3f}" for k in kinds]
        lines.append(
            f"| {r['label']} | {cost} | {r['accuracy']:.3f} ({r['correct']}/{r['total']}) | {drop} | "
            f"{r['achieved_cost']:.3f} | " + " | ".join(per) + (" |" if per else "|")
        )
    info = {k: v for k, v in (meta or {}).items() if k not in ("gold", "questions")}
    if info:
        lines += ["", ", ".join(f"{k}: {v}" for k, v in info.items())]
    (out / "eval.md").write_text("\n".join(lines) + "\n")
    plot_accuracy(rows, out / "eval.png")
    return out


def plot_accuracy(rows: Sequence[dict], path: str | Path) -> bool:
    """Accuracy against achieved cost, one line per method, the untouched model as a star and a line."""
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    series: dict[str, list[dict]] = {}
    for r in rows:
        series.setdefault(r["label"], []).append(r)
    for label, items in series.items():
        items = sorted(items, key=lambda r: r["achieved_cost"])
        x, y = [r["achieved_cost"] for r in items], [100 * r["accuracy"] for r in items]
        if label == UNTOUCHED:
            ax.axhline(y[0], color="black", linewidth=0.8, linestyle="--")
            ax.plot(x, y, marker="*", markersize=12, linestyle="none", color="black", label=label, zorder=5)
        else:
            ax.plot(x, y, marker="o", label=label)
    ax.set(xlabel="achieved cost (share of vision-token compute)", ylabel="accuracy (%)", xlim=(0, 1.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Video QA accuracy vs compute")
    return save_figure(fig, path)
