"""Accuracy against compute: a video QA set answered untouched and under reduction methods at budgets.

rows = evaluate(model, processor, samples, sweep([FrameFusionConfig(), FastVConfig(), RandomPruneConfig()],
                [0.3, 0.5, 0.7]), out_dir="outputs/eval")

Every question is answered by greedy generation; the first word of the answer (lower case, without
punctuation) is compared with the gold answer. Per method and budget the table gives the accuracy,
its drop against the untouched model (in points), and the achieved cost (the mean over samples of
the method's report). Written as ``eval.json``, ``eval.md`` and ``eval.png`` (accuracy against
achieved cost, one line per method).

Intervals: every accuracy (overall and per question kind) comes with a 95% confidence interval from a
percentile bootstrap over questions (:data:`RESAMPLES` resamples, seeded: the same numbers every run),
and every method's change against the untouched model with a *paired* interval: each resample draws one
set of questions and both settings are scored on it, so the interval is that of the difference, not of
two independent accuracies. Per kind, the resamples draw from that kind's questions only; the same
holds for the split by camera motion (synthetic QA v2 questions know whether their camera moves).

Data-parallel: :func:`evaluate_shard` answers one shard of the questions (shard ``i`` of ``n`` takes the
batches ``i, i + n, ...`` of ``batch_size`` questions, so every question is answered in the same batch,
with the same padding, as in one process) and :func:`merge_shards` puts the shards back together into
exactly the rows of :func:`evaluate` (which is itself one shard of one, merged).

Question sets: the synthetic test split (:mod:`framefusion.data.synthetic_qa`, generated from its
seeds, never trained on), or a JSON list of ``{"video": file, "question": ..., "answer": ...}``
(file relative to the JSON file; a folder means its ``qa.json``).
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..adapters.base import InstanceAttribute
from ..engine import apply
from ..planning import describe_plan
from .compare import config_dict, method_label, pyplot, save_figure, sweep
from .loading import training_info
from .video import as_uint8_video, spread_frames

__all__ = [
    "QAItem",
    "Setting",
    "add_intervals",
    "bootstrap_indices",
    "bootstrap_interval",
    "default_methods",
    "evaluate",
    "evaluate_shard",
    "first_word",
    "load_qa",
    "load_shards",
    "merge_shards",
    "motion_labels",
    "paired_change_interval",
    "parse_shard",
    "plot_accuracy",
    "question_inputs",
    "shard_indices",
    "synthetic_test_set",
    "vision_features_reused",
    "write_tables",
]

UNTOUCHED = "untouched"
RESAMPLES = 2000  # bootstrap resamples
SEED = 0  # bootstrap seed
LEVEL = 0.95  # confidence level of the intervals
SHARD_FORMAT = "framefusion-eval-shard/1"


@dataclass(frozen=True)
class QAItem:
    # (T, H, W, 3) uint8, or a function that makes it: rendered when the question is answered, so that a
    # large synthetic set holds one batch of videos at a time (see :meth:`frames`)
    video: np.ndarray | Callable[[], np.ndarray]
    question: str
    answer: str
    kind: str = ""
    source: str = ""
    motion: bool | None = None  # synthetic QA v2: the camera pans or zooms in this clip (None: not known)

    def frames(self) -> np.ndarray:
        """The video's frames (made now when ``video`` is a function)."""
        return self.video() if callable(self.video) else self.video


def synthetic_test_set(count: int = 200, frames: int | None = None, size: int | None = None, start: int = 0,
                       model_path: str | Path | None = None) -> list[QAItem]:  # fmt: skip
    """``count`` questions of the synthetic test split the model was trained on (``training.json``'s
    ``data``: v1, or v2 with camera motion); frames/size default to those it was trained on."""
    from ..data import synthetic_qa

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    info = training_info(model_path)
    data = info.get("data", "v1")
    if data not in ("v1", "v2"):
        raise ValueError(f"the model's training.json names data {data!r}; known: 'v1', 'v2'")
    frames = frames or info.get("frames", 8)
    size = size or info.get("size", 112)
    if data == "v2":  # 2.7 MB a video: each is rendered when answered; the rest is known without rendering
        distractors = bool(info.get("distractors", True))
        return [_lazy_v2_item(i, frames, size, distractors) for i in range(start, start + count)]
    return [
        QAItem(s.video, s.question, s.answer, s.kind, f"test/{s.seed[1]}")
        for s in synthetic_qa.make_split("test", count, start=start, num_frames=frames, size=size)
    ]


def _lazy_v2_item(index: int, frames: int, size: int, distractors: bool) -> QAItem:
    """Test question ``index`` of synthetic QA v2, its video made when asked for."""
    from ..data import synthetic_qa_v2 as v2

    kind, answer = v2.planned_question(index)
    motion = bool(v2.camera_of("test", index, num_frames=frames, size=size)["motion"])
    render = functools.partial(_v2_video, index, frames, size, distractors)
    return QAItem(render, v2.QUESTIONS[kind], answer, kind, f"test/{index}", motion)


def _v2_video(index: int, frames: int, size: int, distractors: bool) -> np.ndarray:
    from ..data import synthetic_qa_v2 as v2

    return v2.make_sample("test", index, num_frames=frames, size=size, distractors=distractors).video


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


@contextmanager
def vision_features_reused(model):
    """Within: the vision tower runs once per batch, whatever the settings it is answered under.

    The base model's ``get_video_features`` / ``get_image_features`` keep each result and return it when
    called again with the very same argument objects (the same processor output under another setting;
    the arguments are kept alive, so an ``id`` cannot be reused by another object). Exact because every
    method acts inside the LLM, after the vision tower: its features do not depend on the setting."""
    base = getattr(model, "model", model)
    wrappers = []
    for name in ("get_video_features", "get_image_features"):
        original = getattr(base, name, None)
        if original is None:
            continue
        memo: dict = {}
        signature = inspect.signature(original)

        @functools.wraps(original)  # generate() reads the encoder's signature
        def reused(*args, _original=original, _memo=memo, _signature=signature, **kwargs):
            key = _call_key(_signature, args, kwargs)
            if key not in _memo:
                _memo[key] = (args, kwargs, _original(*args, **kwargs))  # kept alive: their ids stay theirs
            return _memo[key][2]

        wrappers.append(InstanceAttribute(base, name, reused))
    try:
        yield
    finally:
        for wrapper in reversed(wrappers):
            wrapper.remove()


def _call_key(signature: inspect.Signature, args: tuple, kwargs: dict) -> tuple:
    """The identity of each argument of a call, by parameter name (an adapter's wrapper passes by
    position what generate() passes by name; ``*args`` / ``**kwargs`` are spread out)."""
    key = []
    for name, value in signature.bind(*args, **kwargs).arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            key += sorted((k, id(v)) for k, v in value.items())
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            key += [(name, tuple(map(id, value)))]
        else:
            key.append((name, id(value)))
    return tuple(key)


def question_inputs(model, processor, chunk: Sequence[QAItem], videos: Sequence[np.ndarray] | None = None,
                  frames: int | None = None):  # fmt: skip
    """The processor's (left-padded) output for a batch of questions, on the model's device
    (``videos``: the chunk's, already made; ``frames``: how many of each to show)."""
    from ..data.synthetic_qa import chat_text

    videos = [it.frames() for it in chunk] if videos is None else videos
    return processor(
        text=[chat_text(processor, it.question) for it in chunk],
        videos=[as_uint8_video(spread_frames(v, frames), f"{it.source or 'a question'}'s video") for it, v in zip(chunk, videos)],
        padding=True,
        return_tensors="pt",
    ).to(model.device)


@dataclass(frozen=True)
class Setting:
    """One way of answering: a method (None: untouched) shown ``frames`` of each clip (None: the
    evaluation's own count), its ``cost`` a share of ``budget`` (``apply``'s unit); ``plan``: the
    equal-compute plan that set the cost (:func:`framefusion.planning.plan_frames`), if one did."""

    config: Any = None
    frames: int | None = None
    budget: str = "token-layers"
    plan: Any = None

    def label(self, base_frames: int | None) -> str:
        name = UNTOUCHED if self.config is None else method_label(self.config)
        return name if self.frames in (None, base_frames) else f"{name} @{self.frames}f"


def _first_words(model, processor, inputs, new_tokens: int) -> list[str]:
    """Greedy answers to one batch, as their first words."""
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
    texts = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return [first_word(t) for t in texts]


def _setting_answers(model, processor, items: Sequence[QAItem], configs: Sequence[Any], batch_size: int,
                     new_tokens: int, progress: bool, frames: int | None = None) -> list[dict]:  # fmt: skip
    """The untouched setting (shown ``frames`` of each clip), then one per config (a method, or a
    :class:`Setting`; the method applied around its questions only): label, config (JSON), cost, the
    first words answered and the achieved costs (none untouched), in question order; a planned
    setting also its FLOPs against the plan's target, per question.

    Batch by batch: each batch's videos are made once, and per frame count its inputs prepared and
    its vision features computed once for every setting (:func:`vision_features_reused`); the bar
    (stderr) counts answers, since a large set takes minutes."""
    from tqdm.auto import tqdm

    chosen = [Setting(frames=frames)] + [c if isinstance(c, Setting) else Setting(c) for c in configs]
    settings = [dict(label=c.label(frames), config=None if c.config is None else config_dict(c.config),
                     cost=getattr(c.config, "cost", None), frames=c.frames or frames, budget=c.budget,
                     plan=None if c.plan is None else c.plan.as_dict(), answers=[], costs=[], flops=[])
                for c in chosen]  # fmt: skip
    by_frames: dict[int | None, list[int]] = {}
    for j, c in enumerate(chosen):
        by_frames.setdefault(c.frames or frames, []).append(j)
    bar = tqdm(total=len(items) * len(settings), desc="eval (questions x settings)", unit="answer",
               disable=not progress, mininterval=0)  # fmt: skip  # every batch shows, however fast
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        videos = [it.frames() for it in chunk]
        for shown, group in by_frames.items():
            inputs = question_inputs(model, processor, chunk, videos, shown)
            with vision_features_reused(model):
                for j in group:
                    _answer_setting(model, processor, inputs, new_tokens, chosen[j], settings[j], bar)
    bar.close()
    return settings


def _answer_setting(model, processor, inputs, new_tokens: int, chosen: Setting, setting: dict, bar) -> None:
    """One batch answered under one setting, appended to its answers (and costs, FLOPs)."""
    bar.set_postfix_str(f"{setting['label']} cost={setting['cost'] or '-'}", refresh=False)
    if chosen.config is None:
        setting["answers"] += _first_words(model, processor, inputs, new_tokens)
    else:
        with apply(model, chosen.config, processor=processor, budget=chosen.budget) as handle:
            setting["answers"] += _first_words(model, processor, inputs, new_tokens)
            report = handle.last_report()
        setting["costs"] += [float(c) for c in report.achieved_cost]
        if chosen.plan is not None:  # each question's own text: the plan was made on the first question's
            plan, valid = chosen.plan, inputs["attention_mask"].sum(1).tolist()
            setting["flops"] += [plan.spent(layers, text_tokens=int(v) - n)
                                 for layers, v, n in zip(report.vision_tokens_per_layer, valid, report.vision_tokens)]  # fmt: skip
    bar.update(len(inputs["input_ids"]))


MOVING, STILL = "camera moves", "still camera"  # the groups of the split by camera motion


def motion_labels(items: Sequence[QAItem]) -> list[str]:
    """Each question's camera-motion group (:data:`MOVING` / :data:`STILL`; '' where not known)."""
    return [{True: MOVING, False: STILL}.get(it.motion, "") for it in items]


def _groups(labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Question indices per non-empty label, labels sorted."""
    labels = np.asarray(list(labels), dtype=object)
    return {g: np.flatnonzero(labels == g) for g in sorted(set(labels.tolist()) - {""})}


def _accuracy_row(label: str, config: dict | None, cost: float | None, words: Sequence[str], costs: Sequence[float],
                  kinds: Sequence[str], gold: Sequence[str], motions: Sequence[str] = ()) -> dict:  # fmt: skip
    """One setting's row: accuracy over all questions, per question kind and (where ``motions`` labels
    them) per camera-motion group, and the mean achieved cost (1.0 untouched: ``costs`` is empty without
    a method). ``config``: the config as JSON (None untouched)."""
    ok = np.asarray([w == g for w, g in zip(words, gold)], dtype=np.float64)
    return dict(
        label=label,
        config=config,
        cost=cost,
        accuracy=float(ok.mean()),
        correct=int(ok.sum()),
        total=len(ok),
        achieved_cost=float(np.mean(costs)) if costs else 1.0,
        per_kind={k: float(ok[where].mean()) for k, where in _groups(kinds).items()},
        per_motion={m: float(ok[where].mean()) for m, where in _groups(motions).items()},
        answers=list(words),
    )


# ------------------------------------------------------------------------------------------ intervals
def bootstrap_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, n) question indices, each row ``n`` draws with replacement from ``range(n)``; seeded."""
    if n < 1 or resamples < 1:
        raise ValueError(f"need at least one question and one resample, got {n} and {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n), dtype=np.int64)


def _percentiles(values: np.ndarray, level: float) -> list[float]:
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return [float(lo), float(hi)]


def bootstrap_interval(correct: Sequence[bool], resamples: int = RESAMPLES, seed: int = SEED,
                       level: float = LEVEL) -> list[float]:  # fmt: skip
    """[low, high]: the percentile bootstrap interval of the accuracy of ``correct`` (one bool per question)."""
    ok = np.asarray(correct, dtype=np.float64)
    return _percentiles(ok[bootstrap_indices(len(ok), resamples, seed)].mean(1), level)


def paired_change_interval(correct: Sequence[bool], reference: Sequence[bool], resamples: int = RESAMPLES,
                           seed: int = SEED, level: float = LEVEL) -> list[float]:  # fmt: skip
    """[low, high] of accuracy(correct) - accuracy(reference), in points, both scored on the same resampled
    questions (a paired bootstrap)."""
    ok, ref = np.asarray(correct, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if ok.shape != ref.shape:
        raise ValueError(f"paired answers must cover the same questions, got {ok.shape} and {ref.shape}")
    idx = bootstrap_indices(len(ok), resamples, seed)
    return _percentiles(100 * (ok[idx].mean(1) - ref[idx].mean(1)), level)


def interval_note(resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> str:
    """How the intervals were computed, in words (written with the tables)."""
    return (f"[low, high]: {100 * level:g}% percentile bootstrap interval over questions ({resamples} resamples, "
            f"seed {seed}); per kind and per camera-motion group over that group's questions; change vs "
            "untouched paired (both settings scored on the same resampled questions)")  # fmt: skip


def add_intervals(rows: Sequence[dict], gold: Sequence[str], kinds: Sequence[str] | None = None,
                  resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL,
                  motions: Sequence[str] = ()) -> None:  # fmt: skip
    """Add to every row (the first is the untouched model) ``ci`` ([low, high] of the accuracy),
    ``per_kind_ci`` and ``per_motion_ci`` (each group resampled within itself), ``change`` (points
    against untouched, negative a loss) and ``change_ci`` (paired; None for the untouched row), from the
    rows' ``answers`` and the ``gold`` first words."""
    gold = np.asarray(gold, dtype=object)
    idx = bootstrap_indices(len(gold), resamples, seed)  # the same resampled questions for every row
    split = {"per_kind_ci": _groups(kinds if kinds is not None else ()), "per_motion_ci": _groups(motions)}
    group_idx = {key: {g: where[bootstrap_indices(len(where), resamples, seed)] for g, where in groups.items()}
                 for key, groups in split.items()}  # fmt: skip
    base = None
    for r in rows:
        ok = (np.asarray(r["answers"], dtype=object) == gold).astype(np.float64)
        means = ok[idx].mean(1)
        r["ci"] = _percentiles(means, level)
        for key, groups in group_idx.items():
            r[key] = {g: _percentiles(ok[resampled].mean(1), level) for g, resampled in groups.items()}
        if base is None:
            base = (ok, means)
            r["change"], r["change_ci"] = 0.0, None
            continue
        r["change"] = round(100 * (float(ok.mean()) - float(base[0].mean())), 4)
        r["change_ci"] = _percentiles(100 * (means - base[1]), level)


# ------------------------------------------------------------------------------------------ shards
def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n), with 0 <= i < n."""
    index, sep, count = str(text).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard must be i/n with 0 <= i < n (e.g. 0/2), got {text!r}")
    return i, n


def shard_indices(count: int, batch_size: int, shard: tuple[int, int]) -> list[int]:
    """The questions shard ``i`` of ``n`` answers: the batches ``i, i + n, ...`` of ``batch_size``
    questions, in order (so each question sits in the batch, and gets the padding, it gets in one process)."""
    i, n = shard
    return [
        q for b in range(i, -(-count // batch_size), n) for q in range(b * batch_size, min((b + 1) * batch_size, count))
    ]


def evaluate_shard(
    model,
    processor,
    items: Sequence[QAItem],
    configs: Sequence[Any] | None = None,
    shard: tuple[int, int] = (0, 1),
    batch_size: int = 16,
    new_tokens: int = 2,
    meta: dict | None = None,
    progress: bool = True,
    out_dir: str | Path | None = None,
    frames: int | None = None,
) -> dict:
    """Answer shard ``(i, n)`` of ``items`` (see :func:`shard_indices`) untouched and under every config
    (methods or :class:`Setting`; ``frames``: how many of each clip the untouched reference sees).

    Returns the partial result as JSON (with ``out_dir`` also written there as ``shard-i-of-n.json``): the
    shard, the whole question set's gold answers, kinds and questions, and per setting the answers and
    achieved costs of this shard's questions. :func:`merge_shards` turns the ``n`` partials into the rows."""
    if not items:
        raise ValueError("no questions to evaluate")
    if batch_size < 1 or new_tokens < 1:
        raise ValueError(f"batch_size and new_tokens must be >= 1, got {batch_size} and {new_tokens}")
    parse_shard(f"{shard[0]}/{shard[1]}")
    configs = default_methods() if configs is None else list(configs)
    indices = shard_indices(len(items), batch_size, shard)
    mine = [replace(items[q], source=items[q].source or f"question {q}") for q in indices]  # videos made per batch
    settings = _setting_answers(model, processor, mine, configs, batch_size, new_tokens, progress, frames)
    partial = dict(
        format=SHARD_FORMAT,
        shard=[int(shard[0]), int(shard[1])],
        batch_size=batch_size,
        new_tokens=new_tokens,
        meta=dict(meta or {}),
        gold=[first_word(it.answer) for it in items],
        kinds=[it.kind for it in items],
        motions=motion_labels(items),
        questions=[it.question for it in items],
        indices=indices,
        settings=settings,
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"shard-{shard[0]}-of-{shard[1]}.json").write_text(json.dumps(partial, indent=1))
    return partial


def load_shards(paths: Sequence[str | Path]) -> list[dict]:
    """The partial results in ``paths``: files, or folders whose ``shard-*-of-*.json`` files are read."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("shard-*-of-*.json"))
            if not found:
                raise FileNotFoundError(f"no shard-*-of-*.json in {p} (written by framefusion eval --shard i/n)")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"shard file not found: {p}")
    partials = []
    for f in files:
        try:
            partial = json.loads(f.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{f} is not valid JSON: {err}") from err
        if not isinstance(partial, dict) or partial.get("format") != SHARD_FORMAT:
            raise ValueError(f"{f} is not a framefusion eval shard (format {SHARD_FORMAT})")
        partials.append(partial)
    return partials


def _setting_key(setting: dict) -> str:
    return json.dumps([setting["label"], setting["config"], setting["cost"]], sort_keys=True)


def merge_shards(partials: Sequence[dict], resamples: int = RESAMPLES, seed: int = SEED,
                 out_dir: str | Path | None = None, meta: dict | None = None) -> list[dict]:  # fmt: skip
    """The rows of the whole question set from its ``n`` shards (any order; each exactly once): the
    answers and achieved costs put back in question order, then accuracy, drop, intervals as
    :func:`evaluate` gives them. With ``out_dir`` writes eval.json/.md/.png."""
    if not partials:
        raise ValueError("no shards to merge")
    first = partials[0]
    n = first["shard"][1]
    seen = sorted(p["shard"][0] for p in partials)
    if any(p["shard"][1] != n for p in partials) or seen != list(range(n)):
        got = sorted(f"{p['shard'][0]}/{p['shard'][1]}" for p in partials)
        raise ValueError(f"shards must be 0/n .. n-1/n of one run, each once; got {got}")
    for p in partials[1:]:
        for key in ("gold", "kinds", "motions", "questions", "batch_size", "new_tokens", "meta"):
            if p.get(key) != first.get(key):
                raise ValueError(f"shards {first['shard']} and {p['shard']} differ in {key}: not the same run")
        if [_setting_key(s) for s in p["settings"]] != [_setting_key(s) for s in first["settings"]]:
            raise ValueError(f"shards {first['shard']} and {p['shard']} ran different methods or budgets")
    count = len(first["gold"])
    covered = sorted(q for p in partials for q in p["indices"])
    if covered != list(range(count)):
        raise ValueError(f"the shards cover {len(covered)} answers of {count} questions, not each question once")
    motions = first.get("motions", [])  # absent in shards written before the split by motion
    rows = []
    for j, setting in enumerate(first["settings"]):
        words, costs, flops = [None] * count, [None] * count, [None] * count
        for p in partials:
            s = p["settings"][j]
            for k, q in enumerate(p["indices"]):
                words[q] = s["answers"][k]
                if s["costs"]:
                    costs[q] = s["costs"][k]
                if s.get("flops"):
                    flops[q] = s["flops"][k]
        costs = [] if setting["config"] is None else costs
        row = _accuracy_row(setting["label"], setting["config"], setting["cost"], words, costs, first["kinds"],
                            first["gold"], motions)  # fmt: skip
        row.update({k: setting[k] for k in ("frames", "budget", "plan") if setting.get(k) is not None})
        if setting.get("flops"):  # a planned setting: its compute against the plan's target, per question
            row["flops_vs_target"] = dict(mean=float(np.mean(flops)), max=float(np.max(flops)), min=float(np.min(flops)))
        rows.append(row)
    base = rows[0]["accuracy"]
    for r in rows:
        r["drop"] = round(100 * (base - r["accuracy"]), 4)
    add_intervals(rows, first["gold"], first["kinds"], resamples, seed, motions=motions)
    if out_dir is not None:
        info = {**first["meta"], **(meta or {})}
        if n > 1:
            info["shards"] = n
        extra = dict(gold=first["gold"], questions=first["questions"], kinds=first["kinds"], motions=motions,
                     interval=interval_note(resamples, seed))  # fmt: skip
        write_tables(rows, out_dir, {**info, **extra})
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
    resamples: int = RESAMPLES,
    seed: int = SEED,
    frames: int | None = None,
) -> list[dict]:
    """Accuracy of the untouched model (shown ``frames`` of each clip; None: all) and of every config
    (default :func:`default_methods`; a :class:`Setting` may show another frame count).

    Rows: label, config, cost (requested; None untouched), accuracy and ``ci`` (its 95% bootstrap
    interval), drop (points vs untouched), change (its negative: points, a loss negative) and
    ``change_ci`` (paired interval), achieved_cost, correct, total, per_kind accuracy and
    ``per_kind_ci``, answers (first words, in question order). With ``out_dir`` writes eval.json/.md/.png.
    """
    partial = evaluate_shard(model, processor, items, configs, (0, 1), batch_size, new_tokens, meta, progress,
                             frames=frames)  # fmt: skip
    return merge_shards([partial], resamples, seed, out_dir)


def _interval(ci: Sequence[float] | None, scale: float = 1.0, digits: int = 3) -> str:
    return "" if ci is None else f" [{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]"


def _group_cell(row: dict, key: str, group: str) -> str:
    """A row's accuracy on one group of questions (``key``: per_kind or per_motion) with its interval."""
    if group not in row.get(key, {}):
        return "nan"
    return f"{row[key][group]:.3f}{_interval(row.get(key + '_ci', {}).get(group))}"


def write_tables(rows: Sequence[dict], out_dir: str | Path, meta: dict | None = None) -> Path:
    """``eval.json`` (meta + rows), ``eval.md`` (the paper-style table, with each accuracy's interval
    when the rows have them, see :func:`add_intervals`) and ``eval.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps({**(meta or {}), "rows": list(rows)}, indent=1))
    kinds = sorted({k for r in rows for k in r.get("per_kind", {})})
    motions = sorted({m for r in rows for m in r.get("per_motion", {})})
    intervals = all("ci" in r for r in rows)
    # the change in points, as the README writes it: -4.6 is a loss (the JSON's "drop" is +4.6)
    head = ["method", "budget (cost)", "accuracy", "change vs untouched (points)", "achieved cost"]
    head += ["change, 95% CI (points)"] if intervals else []
    head += kinds + motions
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cost = "-" if r["cost"] is None else f"{r['cost']:.2g}"
        drop = "-" if r is rows[0] else f"{0.0 - r['drop']:+.1f}"  # 0.0 - x: no "-0.0"
        cells = [f"{r['achieved_cost']:.3f}"]
        if intervals:
            ci = r.get("change_ci")
            cells.append("-" if ci is None else f"[{ci[0] + 0.0:+.1f}, {ci[1] + 0.0:+.1f}]")
        cells += [_group_cell(r, "per_kind", k) for k in kinds] + [_group_cell(r, "per_motion", m) for m in motions]
        lines.append(
            f"| {r['label']} | {cost} | {r['accuracy']:.3f}{_interval(r.get('ci'))} ({r['correct']}/{r['total']}) | "
            f"{drop} | " + " | ".join(cells) + " |"
        )
    info = {k: v for k, v in (meta or {}).items()
            if k not in ("gold", "questions", "kinds", "motions", "interval", "shards")}  # fmt: skip
    if info:
        lines += ["", ", ".join(f"{k}: {v}" for k, v in info.items())]
    if (meta or {}).get("interval"):
        lines += ["", meta["interval"]]
    lines += _plan_lines(rows)
    (out / "eval.md").write_text("\n".join(lines) + "\n")
    plot_accuracy(rows, out / "eval.png")
    return out


def _plan_lines(rows: Sequence[dict]) -> list[str]:
    """What each equal-compute setting was planned to cost and what it cost (from its per-layer counts)."""
    lines = []
    for r in rows:
        plan, spent = r.get("plan"), r.get("flops_vs_target")
        if plan and spent:
            lines.append(f"- {r['label']}: {describe_plan(plan)}; spent {spent['mean']:.4f}x the target on average "
                         f"({spent['min']:.4f} to {spent['max']:.4f})")  # fmt: skip
    return ["", "Equal compute:", *lines] if lines else []


def plot_accuracy(rows: Sequence[dict], path: str | Path) -> bool:
    """Accuracy against achieved cost, one line per method, the untouched model as a star and a line;
    error bars: the rows' 95% intervals (``ci``) where they have them."""
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    series: dict[str, list[dict]] = {}
    for r in rows:
        series.setdefault(r["label"], []).append(r)
    for i, (label, items) in enumerate(series.items()):
        items = sorted(items, key=lambda r: r["achieved_cost"])
        x, y = [r["achieved_cost"] for r in items], [100 * r["accuracy"] for r in items]
        err = None
        if all(r.get("ci") for r in items):  # below and above each point, in points
            err = [[max(0.0, a - 100 * r["ci"][0]) for a, r in zip(y, items)],
                   [max(0.0, 100 * r["ci"][1] - a) for a, r in zip(y, items)]]  # fmt: skip
        if label == UNTOUCHED:
            ax.axhline(y[0], color="black", linewidth=0.8, linestyle="--")
            ax.errorbar(x, y, yerr=err, marker="*", markersize=12, linestyle="none", color="black", label=label,
                        zorder=5, capsize=3)  # fmt: skip
        else:  # past the 10 colours of the cycle, a second line style and marker tell the lines apart
            style = dict(marker="o") if i <= 10 else dict(marker="s", linestyle="--")
            ax.errorbar(x, y, yerr=err, label=label, capsize=3, **style)
    ax.set(xlabel="achieved cost (share of vision-token compute)", ylabel="accuracy (%)", xlim=(0, 1.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(
        "Video QA accuracy vs compute" + (" (bars: 95% bootstrap interval)" if any(r.get("ci") for r in rows) else "")
    )
    return save_figure(fig, path)
