"""Procedural video question answering: moving coloured shapes over a still textured background.

Every sample is a short clip (default 16 frames, 112x112) with two shapes (two of circle, square
and triangle, in two colours): one moves in a straight line (left, right, up or down) and changes
colour once, at a random frame in the middle, to a third colour; the other stays still, and in half
the clips is on screen for only part of the clip (it appears and/or leaves).
The background is bit-identical in every frame, so adjacent-frame redundancy is real.

Each question is answered by ONE word from a closed set, and needs the video and its time order:

==============  ==============================================  ===================================
kind            question                                        answers
==============  ==============================================  ===================================
``direction``   "which way does the moving shape go?"           left / right / up / down
``still``       "what colour is the still shape?"               red / green / blue / yellow / purple
``turns_into``  "what colour does the moving shape turn into?"  red / green / blue / yellow / purple
``start``       "what colour is the moving shape at the start?" red / green / blue / yellow / purple
==============  ==============================================  ===================================

(A first version named objects by form -- "which way does the square move?" -- among three shapes;
a tiny model trained from scratch on two CPU cores stayed at chance for 500+ steps, so the scenes
were simplified to what it can learn in the time budget.)

Splits come from distinct seed ranges (:data:`SPLIT_SEEDS`): sample ``i`` of split ``s`` is drawn
from ``numpy.random.default_rng([SPLIT_SEEDS[s], i])``, so the test split is never seen in training.

The tokenizer (:func:`build_qa_tokenizer`) is the project's tiny byte-level BPE tokenizer with the
question and answer words added as merges, so every answer word is a single token.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import (
    Qwen2Tokenizer,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
)

from ..tiny_models.qwen2_vl import MAX_PIXELS, WORDS, build_tiny_model, build_tiny_processor, build_tiny_tokenizer

__all__ = [
    "ANSWERS",
    "COLOURS",
    "DIRECTIONS",
    "KINDS",
    "SHAPES",
    "SPLIT_SEEDS",
    "QASample",
    "build_qa_model",
    "build_qa_processor",
    "answer_tokenizer",
    "build_qa_tokenizer",
    "chat_text",
    "encode",
    "make_labelled_sample",
    "make_sample",
    "make_split",
    "patchify",
    "token_targets",
    "write_demo",
]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 50),
    "blue": (30, 70, 245),
    "yellow": (250, 230, 30),
    "purple": (160, 40, 220),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
KINDS: tuple[str, ...] = ("direction", "still", "turns_into", "start")
ANSWERS: dict[str, tuple[str, ...]] = {
    "direction": tuple(DIRECTIONS),
    "still": tuple(COLOURS),
    "turns_into": tuple(COLOURS),
    "start": tuple(COLOURS),
}
SPLIT_SEEDS: dict[str, int] = {"train": 1_000, "validation": 2_000, "test": 3_000, "demo": 4_000}

_EXTRA_WORDS: tuple[str, ...] = (
    "which", "way", "does", "move", "shape", "stays", "still", "colour", "turn", "into", "at", "start",
    "triangle", "yellow", "purple", "circle", "square", "moving", "go", "red", "green", "blue", "left", "right", "up", "down",
)  # fmt: skip


@dataclass(frozen=True)
class QASample:
    """One question about one clip; ``video`` is ``(T, H, W, 3)`` uint8."""

    video: np.ndarray
    question: str
    answer: str
    kind: str
    seed: tuple[int, int]

    def as_record(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("video")
        return d


# ------------------------------------------------------------------------------------------ tokenizer


def build_qa_tokenizer() -> Qwen2Tokenizer:
    """The tiny byte-level BPE tokenizer plus merges for the QA words (every answer is one token)."""
    return answer_tokenizer(WORDS + _EXTRA_WORDS, ANSWERS)


def answer_tokenizer(words: list[str], answers: dict[str, list[str]]) -> Qwen2Tokenizer:
    """The tiny byte-level BPE tokenizer with merges for ``words``, every answer word (``answers``:
    kind -> words) one token; a RuntimeError names any that is not."""
    # answer words first, longest first, so that no other merge outranks a step of their chains
    answer_words = sorted({a for group in answers.values() for a in group}, key=lambda w: (-len(w), w))
    tokenizer = build_tiny_tokenizer(dict.fromkeys(words), unspaced_first=answer_words)
    for word in answer_words:
        if len(tokenizer(word)["input_ids"]) != 1:
            raise RuntimeError(f"answer word {word!r} is not a single token")
    return tokenizer


def build_qa_processor(max_pixels: int = MAX_PIXELS) -> Qwen2VLProcessor:
    """A real Qwen2-VL processor (patch 14, temporal patch 2, merge 2) around :func:`build_qa_tokenizer`."""
    return build_tiny_processor("qwen2_vl", max_pixels, tokenizer=build_qa_tokenizer())


def build_qa_model(
    processor: Qwen2VLProcessor,
    hidden_size: int = 160,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 448,
    vision_embed_dim: int = 64,
    vision_depth: int = 2,
    vision_heads: int = 4,
    seed: int = 0,
) -> Qwen2VLForConditionalGeneration:
    """A freshly initialised (seeded) small Qwen2-VL whose token ids match ``processor``, in train mode."""
    model = build_tiny_model(
        "qwen2_vl",
        num_layers=num_layers,
        hidden_size=hidden_size,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        vision_depth=vision_depth,
        vision_embed_dim=vision_embed_dim,
        vision_heads=vision_heads,
        rope_theta=10_000.0,
        seed=seed,
        processor=processor,
    )
    return model.train()


# ------------------------------------------------------------------------------------------- videos


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    bg = np.empty((size, size, 3), np.float32)
    for c in range(3):  # smooth muted stripes + a checkerboard of random tints
        fx, fy, phase = rng.uniform(1, 4), rng.uniform(1, 4), rng.uniform(0, 2 * np.pi)
        bg[..., c] = 110 + 30 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
    cells = rng.integers(-20, 21, size=(8, 8, 3)).astype(np.float32)
    bg += np.kron(cells, np.ones((size // 8 + 1, size // 8 + 1, 1), np.float32))[:size, :size]
    return bg.clip(0, 255).astype(np.uint8)


def shape_mask(shape: str, cy: float, cx: float, r: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Bool mask of a circle, square or triangle of radius ``r`` centred at (cy, cx) over the grid yy, xx."""
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dy * dy + dx * dx <= r * r
    if shape == "square":
        return np.maximum(np.abs(dy), np.abs(dx)) <= 0.85 * r
    # triangle pointing up: base at cy + r, apex at cy - r
    return (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)


def _scene(rng: np.random.Generator, num_frames: int, size: int) -> dict[str, Any]:
    """Two objects, no overlap: object 0 moves and changes colour once, object 1 stays still.

    The colour changes between the two frames of one temporal patch (the first new-colour frame is
    odd), so the change is visible inside one video token as well as across tokens.
    """
    shapes = [str(x) for x in rng.choice(SHAPES, size=2, replace=False)]
    colours = [str(c) for c in rng.choice(list(COLOURS), size=2, replace=False)]
    new_colour = str(rng.choice([c for c in COLOURS if c not in colours]))
    odd = [f for f in range(num_frames // 4, num_frames - num_frames // 4 + 1) if f % 2 == 1]
    change_at = int(rng.choice(odd))
    direction = str(rng.choice(list(DIRECTIONS)))
    step = np.array(DIRECTIONS[direction], np.float64)
    along = int(np.argmax(np.abs(step)))  # axis of motion: 0 = y, 1 = x
    t = np.linspace(0.0, 1.0, num_frames)[:, None]
    for _ in range(200):
        radius = rng.uniform(0.09, 0.12, 2) * size
        lo, hi = radius[0] + 1, size - radius[0] - 1
        length = rng.uniform(0.35, 0.6) * size
        start = rng.uniform(lo, hi, 2)
        start[along] = rng.uniform(lo, hi - length) if step[along] > 0 else rng.uniform(lo + length, hi)
        still = rng.uniform(radius[1] + 1, size - radius[1] - 1, 2)
        tracks = [start[None] + t * length * step[None], np.repeat(still[None], num_frames, 0)]
        if np.min(np.linalg.norm(tracks[0] - tracks[1], axis=1)) - radius.sum() > 3:
            break
    return dict(
        shapes=shapes,
        colours=colours,
        changer=0,
        new_colour=new_colour,
        change_at=change_at,
        tracks=tracks,
        radius=radius,
        direction=direction,
        visible=[(0, num_frames), (0, num_frames)],
    )


def _still_visibility(rng: np.random.Generator, num_frames: int) -> tuple[int, int]:
    """Frames ``[first, end)`` in which the still shape is on screen: half the clips show it throughout,
    the others from some frame pair to a later one (it appears and/or leaves, as objects do in real
    video), so that "still" has to be read from how the shape moves, not from how long it is seen."""
    pairs = num_frames // 2
    if rng.random() < 0.5:
        return 0, num_frames
    length = int(rng.integers(1, pairs))
    first = int(rng.integers(0, pairs - length + 1))
    return 2 * first, 2 * (first + length)


def _render(rng: np.random.Generator, scene: dict[str, Any], num_frames: int, size: int) -> np.ndarray:
    frames = np.repeat(_background(rng, size)[None], num_frames, axis=0)
    for k in range(len(scene["shapes"])):
        r = scene["radius"][k]
        for f in range(*scene["visible"][k]):
            colour = scene["colours"][k]
            if k == scene["changer"] and f >= scene["change_at"]:
                colour = scene["new_colour"]
            cy, cx = scene["tracks"][k][f]
            y0, y1 = max(0, int(cy - r) - 1), min(size, int(cy + r) + 2)
            x0, x1 = max(0, int(cx - r) - 1), min(size, int(cx + r) + 2)
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            frames[f, y0:y1, x0:x1][shape_mask(scene["shapes"][k], cy, cx, r, yy, xx)] = COLOURS[colour]
    return frames


def make_sample(split: str, index: int, num_frames: int = 16, size: int = 112, kind: str | None = None) -> QASample:
    """Sample ``index`` of ``split`` (deterministic); ``kind`` fixes the question type (default: drawn)."""
    return _draw(split, index, num_frames, size, kind)[0]


def _draw(split: str, index: int, num_frames: int, size: int, kind: str | None) -> tuple[QASample, dict[str, Any]]:
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown question kind {kind!r}; expected one of {list(KINDS)}")
    if num_frames < 4 or num_frames % 2:
        raise ValueError(f"num_frames must be an even number >= 4, got {num_frames}")
    if size < 56 or size % 28:
        raise ValueError(f"size must be a multiple of 28 and >= 56, got {size}")
    seed = (SPLIT_SEEDS[split], int(index))
    rng = np.random.default_rng(list(seed))
    scene = _scene(rng, num_frames, size)
    scene["visible"][1] = _still_visibility(np.random.default_rng([*seed, 1]), num_frames)
    video = _render(rng, scene, num_frames, size)
    kind = kind or str(rng.choice(KINDS))
    if kind == "direction":
        question, answer = "which way does the moving shape go?", scene["direction"]
    elif kind == "still":
        question, answer = "what colour is the still shape?", scene["colours"][1]
    elif kind == "turns_into":
        question, answer = "what colour does the moving shape turn into?", scene["new_colour"]
    else:
        question, answer = "what colour is the moving shape at the start?", scene["colours"][0]
    return QASample(video=video, question=question, answer=answer, kind=kind, seed=seed), scene


def token_targets(scene: dict[str, Any], num_frames: int, size: int, merge: int = 28) -> dict[str, np.ndarray]:
    """Per video token (one ``merge`` x ``merge`` pixel square of one pair of frames) what it shows.

    Targets for the vision tower's auxiliary training loss, in the order of the Qwen2-VL merged tokens
    (frame pair, row, column): ``colour_a`` / ``colour_b`` -- the colour of the object covering most
    of the square in the pair's first / second frame (index into :data:`COLOURS`, ``-1`` = none, with a
    threshold of 10% of the square); ``role`` -- 0 none, 1 the moving object, 2 the still one;
    ``direction`` -- the moving object's direction (index into :data:`DIRECTIONS`) or -1.
    """
    colours = list(COLOURS)
    cells = size // merge
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    area = np.zeros((num_frames, len(scene["shapes"]), cells, cells), np.float32)
    for k, shape in enumerate(scene["shapes"]):
        for f in range(*scene["visible"][k]):
            cy, cx = scene["tracks"][k][f]
            m = shape_mask(shape, cy, cx, scene["radius"][k], yy, xx).astype(np.float32)
            area[f, k] = m.reshape(cells, merge, cells, merge).sum((1, 3)) / (merge * merge)

    def colour_of(f: int) -> np.ndarray:
        k = area[f].argmax(0)
        out = np.full((cells, cells), -1, np.int64)
        for obj in range(len(scene["shapes"])):
            name = scene["colours"][obj]
            if obj == scene["changer"] and f >= scene["change_at"]:
                name = scene["new_colour"]
            out[(k == obj) & (area[f].max(0) >= 0.1)] = colours.index(name)
        return out

    pairs = range(0, num_frames - 1, 2)
    colour_a = np.stack([colour_of(f) for f in pairs])
    colour_b = np.stack([colour_of(f + 1) for f in pairs])
    both = np.stack([area[f] + area[f + 1] for f in pairs])  # (pairs, objects, cells, cells)
    owner = both.argmax(1)
    present = both.max(1) >= 0.2
    role = np.where(present, np.where(owner == scene["changer"], 1, 2), 0)
    direction = np.where(role == 1, list(DIRECTIONS).index(scene["direction"]), -1)
    return {k: v.reshape(-1) for k, v in
            dict(colour_a=colour_a, colour_b=colour_b, role=role, direction=direction).items()}  # fmt: skip


def make_labelled_sample(
    split: str, index: int, num_frames: int = 16, size: int = 112, kind: str | None = None
) -> tuple[QASample, dict[str, np.ndarray]]:
    """:func:`make_sample` plus its :func:`token_targets` (for training the vision tower)."""
    sample, scene = _draw(split, index, num_frames, size, kind)
    return sample, token_targets(scene, num_frames, size)


def make_split(split: str, count: int, start: int = 0, **kwargs: Any) -> list[QASample]:
    """``count`` samples ``start .. start + count - 1`` of ``split``."""
    return [make_sample(split, i, **kwargs) for i in range(start, start + count)]


# ------------------------------------------------------------------------------------------ encoding


def chat_text(processor: Any, question: str, answer: str | None = None) -> str:
    """The chat-template prompt for one video question (with the answer appended when given)."""
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    return text if answer is None else text + answer + "<|im_end|>"


def encode(processor: Any, samples: list[QASample], with_answers: bool = False) -> Any:
    """Real processor output (left padded) for a batch of samples; ``with_answers`` appends the answers."""
    texts = [chat_text(processor, s.question, s.answer if with_answers else None) for s in samples]
    return processor(text=texts, videos=[s.video for s in samples], padding=True, return_tensors="pt")


def patchify(video: np.ndarray, processor: Any) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Fast equivalent of the Qwen2-VL video processor for frames that need no resize.

    Returns normalised ``(T/2 * H/14 * W/14, 3*2*14*14)`` float32 patches in the processor's order and
    the ``(t, h, w)`` grid. Only valid when ``H`` and ``W`` are multiples of 28 within the pixel limits
    (checked against the processor in the tests).
    """
    vp = processor.video_processor
    p, tp, m = vp.patch_size, vp.temporal_patch_size, vp.merge_size
    t, h, w, c = video.shape
    gt, gh, gw = t // tp, h // p, w // p
    x = np.asarray(video, np.uint8).reshape(gt, tp, gh // m, m, p, gw // m, m, p, c)
    x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7).reshape(gt * gh * gw, c, tp * p * p)  # uint8: a cheap copy
    mean = np.asarray(vp.image_mean, np.float32)[:, None]
    std = np.asarray(vp.image_std, np.float32)[:, None]
    x = (x.astype(np.float32) / np.float32(255.0) - mean) / std
    return x.reshape(gt * gh * gw, c * tp * p * p), (gt, gh, gw)


def write_demo(
    index: int = 0,
    kind: str = "turns_into",
    num_frames: int = 16,
    repeat: int = 1,
    size: int = 112,
    video_path: str | Path | None = None,
) -> dict[str, str]:
    """Write the shipped demo video (sample ``index`` of the ``demo`` split) and ``demo_qa.json`` beside it.

    The clip has ``num_frames`` distinct frames, each shown ``repeat`` times, so that sampling
    ``num_frames`` of them uniformly gives back the generated sample.
    Returns ``{"video", "question", "answer", "kind"}``, the JSON written.
    """
    from ..tiny_models.qwen2_vl import demo_video_path, read_video, write_video

    video_path = Path(video_path) if video_path else demo_video_path()
    sample = make_sample("demo", index, num_frames=num_frames, size=size, kind=kind)
    write_video(np.repeat(sample.video, repeat, axis=0), video_path, fps=4 * repeat)
    back = read_video(video_path, num_frames=num_frames).astype(int)
    if np.abs(back - sample.video).mean() > 8:
        raise RuntimeError(f"{video_path}: resampled frames do not match the sample")
    qa = dict(video=video_path.name, question=sample.question, answer=sample.answer, kind=sample.kind,
              made_by=f"framefusion.data.synthetic_qa.write_demo(index={index}, kind={kind!r}, "
                      f"num_frames={num_frames}, repeat={repeat}, size={size})")  # fmt: skip
    (video_path.parent / "demo_qa.json").write_text(json.dumps(qa, indent=1) + "\n")
    return qa
