"""Procedural video question answering, version 2: long noisy clips, brief events, a moving camera.

Version 1 (:mod:`framefusion.data.synthetic_qa`) stopped measuring token reduction: its background is
bit-identical from frame to frame and every answer is spread over many tokens, so any method that
keeps a fifth of the tokens still answers (issue 18). Here every clip (default 32 frames at 168x168:
16 temporal patches x 6 x 6 = **576 video tokens** with the Qwen2-VL processor) shows one scene, and
each answer lives in few tokens or in a short stretch of time:

- **a lamp** (a dark disc about one token wide) that flashes 1 to 4 times, each flash 1 or 2 frames;
- **a small dot** (about half a token wide: it lies in one or two tokens of each frame);
- **two shapes** (two of circle, square, triangle) that appear one after the other, each on screen for
  a quarter to a half of the clip, in an order unrelated to how long each is seen; one of them changes
  colour once while on screen;
- a textured background and, in a controllable share of the clips (``motion_share``, default one
  half), **camera motion**: the view pans, zooms, or both, so the same token position shows different
  content from frame to frame (the scene is fixed in the world and moves with the view);
- **sensor noise** on every pixel of every frame (no two frames are bit-identical).

Questions (one word answers, kinds in :data:`KINDS`, balanced by construction: sample ``i`` asks
kind ``KINDS[i % 5]`` with answer ``ANSWERS[kind][(i // 5) % len(ANSWERS[kind])]``):

================  ==========================================  =========================================
kind              question                                    answers
================  ==========================================  =========================================
``flash_colour``  "what colour was the flash?"                 red / green / blue / yellow / purple
``count``         "how many times does the light flash?"       one / two / three / four
``order``         "which shape appears first?"                 circle / square / triangle
``dot``           "what colour is the small dot?"              red / green / blue / yellow / purple
``turns_into``    "what colour does the changing shape turn    red / green / blue / yellow / purple
                  into?"
================  ==========================================  =========================================

``flash_colour`` clips have a single flash (1 or 2 frames); ``count`` clips have flashes of 2 frames
each (so the number of lit frames is twice the answer), at least 4 dark frames apart; in the other
kinds the lamp flashes 1 to 4 times as a distractor.

``distractors=False`` draws only the objects the question is about (the lamp for ``flash_colour`` and
``count``, the dot for ``dot``, both shapes for ``order``, each in its form's colour and without the
colour change, the changing shape for ``turns_into``); the scene, its timing and the camera are drawn
exactly as with distractors, so sample ``i`` is the same clip minus the other objects. The answer still sits in the same few tokens, so what reduction can lose is
unchanged, while a small model learns to read it far sooner (measured: the 1.6M-parameter model stays
near chance on every kind but ``dot`` after 600 steps with distractors).

Every sample records its ``kind`` and whether its camera moves (``motion``, and ``camera``: ``"still"``,
``"pan"``, ``"zoom"`` or ``"pan+zoom"``), so accuracy can be split by both. The camera path is drawn
from its own random stream: sample ``i`` shows the same scene whatever ``motion_share`` is (only the
view differs), so still and moving versions of one clip can be compared directly.

Splits come from distinct seed ranges (:data:`SPLIT_SEEDS`, none shared with version 1): sample ``i``
of split ``s`` is drawn from ``numpy.random.default_rng([SPLIT_SEEDS[s], i])`` (and sub-streams
``[..., 1]`` for the camera, ``[..., 2]`` for the noise). :func:`sample_and_scene` also returns what
was drawn (positions per frame, flash frames, windows) for checks and for :func:`token_targets`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from transformers import Qwen2Tokenizer, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

from ..tiny_models.qwen2_vl import MAX_PIXELS, WORDS, build_tiny_processor
from .synthetic_qa import QASample as _V1Sample
from .synthetic_qa import build_qa_model as _build_v1_model
from .synthetic_qa import answer_tokenizer, chat_text, encode, patchify, shape_mask

__all__ = [
    "ANSWERS",
    "COLOURS",
    "COUNTS",
    "KINDS",
    "QUESTIONS",
    "SHAPES",
    "SPLIT_SEEDS",
    "TOKEN_TARGET_SIZES",
    "QASample",
    "build_qa_model",
    "build_qa_processor",
    "build_qa_tokenizer",
    "camera_of",
    "chat_text",
    "encode",
    "make_labelled_sample",
    "make_sample",
    "make_split",
    "patchify",
    "planned_question",
    "sample_and_scene",
    "token_targets",
]

NUM_FRAMES = 32
SIZE = 168
TOKEN = 28  # pixels per merged Qwen2-VL token side (patch 14, merge 2)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 50),
    "blue": (30, 70, 245),
    "yellow": (250, 230, 30),
    "purple": (160, 40, 220),
}
LAMP_OFF: tuple[int, int, int] = (40, 40, 40)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
FORM_COLOURS: dict[str, str] = {"circle": "red", "square": "green", "triangle": "blue"}  # order clips, distractors off
COUNTS: tuple[str, ...] = ("one", "two", "three", "four")
KINDS: tuple[str, ...] = ("flash_colour", "count", "order", "dot", "turns_into")
QUESTIONS: dict[str, str] = {
    "flash_colour": "what colour was the flash?",
    "count": "how many times does the light flash?",
    "order": "which shape appears first?",
    "dot": "what colour is the small dot?",
    "turns_into": "what colour does the changing shape turn into?",
}
ANSWERS: dict[str, tuple[str, ...]] = {
    "flash_colour": tuple(COLOURS),
    "count": COUNTS,
    "order": SHAPES,
    "dot": tuple(COLOURS),
    "turns_into": tuple(COLOURS),
}
# distinct from version 1's (1_000 .. 4_000): no clip of either version is a clip of the other
SPLIT_SEEDS: dict[str, int] = {"train": 21_000, "validation": 22_000, "test": 23_000, "demo": 24_000}
CAMERAS: tuple[str, ...] = ("pan", "zoom", "pan+zoom")

# object radii in token units (world pixels = radius * TOKEN at zoom 1)
LAMP_RADIUS = 0.5  # one token wide
DOT_RADIUS = 0.22  # about half a token wide
SHAPE_RADIUS = 0.65
MIN_FLASH_GAP = 4  # dark frames between two flashes: at least one whole dark temporal patch

# per merged token, for the vision tower's auxiliary loss: classes of each target (see token_targets)
TOKEN_TARGET_SIZES: dict[str, int] = {"colour_a": 6, "colour_b": 6, "role": 4, "form": 3}
ROLES: tuple[str, ...] = ("none", "lamp", "dot", "shape")

_EXTRA_WORDS: tuple[str, ...] = (
    "what", "colour", "was", "flash", "how", "many", "times", "does", "light", "which", "shape", "appears",
    "first", "small", "dot", "changing", "turn", "into", "yellow", "purple", "triangle",
)  # fmt: skip


@dataclass(frozen=True)
class QASample(_V1Sample):
    """One question about one clip (version 1's fields and ``as_record``), and its camera: ``motion``,
    the camera moves (pans and/or zooms); ``camera`` says how (``"still"`` when it does not).
    """

    motion: bool
    camera: str


# ------------------------------------------------------------------------------------------ tokenizer


def build_qa_tokenizer() -> Qwen2Tokenizer:
    """The tiny byte-level BPE tokenizer plus merges for the v2 question words (every answer is one token)."""
    return answer_tokenizer(WORDS + _EXTRA_WORDS, ANSWERS)


def build_qa_processor(max_pixels: int = MAX_PIXELS) -> Qwen2VLProcessor:
    """A real Qwen2-VL processor (patch 14, temporal patch 2, merge 2) around :func:`build_qa_tokenizer`.

    The default ``max_pixels`` (224 x 224) keeps 168 x 168 and 224 x 224 frames as they are."""
    return build_tiny_processor("qwen2_vl", max_pixels, tokenizer=build_qa_tokenizer())


def build_qa_model(processor: Qwen2VLProcessor, **kwargs: Any) -> Qwen2VLForConditionalGeneration:
    """A freshly initialised (seeded) small Qwen2-VL whose token ids match ``processor`` (as in version 1)."""
    return _build_v1_model(processor, **kwargs)


# ------------------------------------------------------------------------------------------- scenes


def _background(rng: np.random.Generator, world: int) -> np.ndarray:
    """Muted stripes and a checkerboard of random tints (cells about 0.6 token), float32 ``(world, world, 3)``."""
    yy, xx = np.mgrid[0:world, 0:world].astype(np.float32) / 112.0
    bg = np.empty((world, world, 3), np.float32)
    for c in range(3):
        fx, fy, phase = rng.uniform(1, 4), rng.uniform(1, 4), rng.uniform(0, 2 * np.pi)
        bg[..., c] = 115 + 30 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
    cell = 16
    n = world // cell + 1
    cells = rng.integers(-25, 26, size=(n, n, 3)).astype(np.float32)
    bg += np.kron(cells, np.ones((cell, cell, 1), np.float32))[:world, :world]
    return bg.clip(0, 255)


def _camera(rng: np.random.Generator, motion_share: float, num_frames: int, size: int) -> dict[str, Any]:
    """View centre (world px, per frame) and scale (world px per screen px, per frame).

    A moving camera sweeps back and forth (a scanning or hand-held camera): the view centre follows
    ``A sin(2 pi f / P + phase)`` along a random direction (``A`` 8-14% of the frame, period ``P`` 12-24
    frames: 2 to 8 pixels a frame, up to half a token per temporal patch), and/or the scale follows
    ``1 + Z sin(...)`` (``Z`` 0.1-0.2). A one-way pan that fast would carry the scene out of view.
    The world is ``2 * size`` square; the still view is centred on a pixel-aligned spot, so still
    clips are plain crops of the background (no resampling)."""
    world = 2 * size
    motion = bool(rng.random() < motion_share)
    camera = str(rng.choice(CAMERAS)) if motion else "still"
    f = np.arange(num_frames, dtype=np.float64)
    base = np.floor(world / 2 + rng.uniform(-0.1, 0.1, 2) * size) + 0.5  # centre - (size - 1) / 2 is whole
    centre = np.repeat(base[None], num_frames, 0)
    scale = np.ones(num_frames)
    both = 0.7 if camera == "pan+zoom" else 1.0  # keep a common view large enough for the scene
    if "pan" in camera:
        angle = rng.uniform(0, 2 * np.pi)
        amp, period, phase = both * rng.uniform(0.08, 0.14) * size, rng.uniform(12, 24), rng.uniform(0, 2 * np.pi)
        wave = amp * np.sin(2 * np.pi * f / period + phase)
        centre = centre + wave[:, None] * np.array([np.sin(angle), np.cos(angle)])[None]
    if "zoom" in camera:
        amp, period, phase = both * rng.uniform(0.1, 0.2), rng.uniform(12, 24), rng.uniform(0, 2 * np.pi)
        scale = 1.0 + amp * np.sin(2 * np.pi * f / period + phase)
    return dict(motion=motion, camera=camera, centre=centre, scale=scale, world=world)


def _safe_box(cam: dict[str, Any], size: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """World-coordinate box (lo, hi) visible in every frame, shrunk by ``margin``."""
    half = cam["scale"] * (size - 1) / 2  # screen pixel 0 and size-1 map to centre -/+ half
    lo = np.max(cam["centre"] - half[:, None], axis=0) + margin
    hi = np.min(cam["centre"] + half[:, None], axis=0) - margin
    return lo, hi


def _flashes(rng: np.random.Generator, n: int, lengths: list[int], num_frames: int) -> list[tuple[int, int]]:
    """``n`` flashes ``[start, end)`` with the given lengths, >= MIN_FLASH_GAP dark frames apart, off the first and last frame."""
    free = num_frames - 2 - sum(lengths) - MIN_FLASH_GAP * (n - 1)
    if free < 0:
        raise ValueError(f"{n} flashes do not fit in {num_frames} frames")
    extra = rng.multinomial(free, [1.0 / (n + 1)] * (n + 1))
    out, f = [], 1 + int(extra[0])
    for i in range(n):
        out.append((f, f + lengths[i]))
        f += lengths[i] + MIN_FLASH_GAP + int(extra[i + 1])
    return out


def _place_apart(rng: np.random.Generator, cam: dict[str, Any], size: int) -> tuple[np.ndarray, np.ndarray]:
    """World positions (4, 2) of the lamp, the dot and the two shapes and their radii (4,): inside the
    box seen in every frame, apart from each other; placed one by one, largest first (the two shapes,
    the lamp, the dot), starting over if one does not fit."""
    radii = np.array([LAMP_RADIUS, DOT_RADIUS, SHAPE_RADIUS, SHAPE_RADIUS]) * TOKEN
    lo, hi = _safe_box(cam, size, 2.0)
    for _ in range(50):
        placed: dict[int, np.ndarray] = {}
        for k in (2, 3, 0, 1):
            for _ in range(100):
                p = rng.uniform(lo + radii[k], hi - radii[k])
                if all(np.linalg.norm(p - q) - radii[k] - radii[j] > 4 for j, q in placed.items()):
                    placed[k] = p
                    break
            else:
                break
        if len(placed) == 4:
            return np.stack([placed[k] for k in range(4)]), radii
    raise RuntimeError(f"could not place the objects apart in a {size}x{size} view")


def _draw_scene(rng: np.random.Generator, kind: str, answer: str, num_frames: int, cam: dict[str, Any],
                size: int) -> dict[str, Any]:  # fmt: skip
    colours = list(COLOURS)
    pick = lambda options: str(rng.choice(options))  # noqa: E731
    # the lamp
    if kind == "flash_colour":
        n_flash, flash_colour, lengths = 1, answer, [int(rng.integers(1, 3))]
    elif kind == "count":
        n_flash, flash_colour = COUNTS.index(answer) + 1, pick(colours)
        lengths = [2] * n_flash
    else:
        n_flash, flash_colour = int(rng.integers(1, 5)), pick(colours)
        lengths = [int(x) for x in rng.integers(1, 3, size=n_flash)]
    flashes = _flashes(rng, n_flash, lengths, num_frames)
    dot_colour = answer if kind == "dot" else pick(colours)
    # the two shapes: the first appears at a1, the second at a2 >= a1 + 4; durations drawn alike
    first_form = answer if kind == "order" else pick(SHAPES)
    second_form = pick([s for s in SHAPES if s != first_form])
    dmin, dmax = max(8, num_frames // 4), max(8, num_frames // 2)
    d1, d2 = (int(x) for x in rng.integers(dmin, dmax + 1, size=2))
    a1 = int(rng.integers(0, max(0, min(num_frames - d1, num_frames - d2 - 4)) + 1))
    a2 = int(rng.integers(a1 + 4, num_frames - d2 + 1))
    windows = [(a1, a1 + d1), (a2, a2 + d2)]
    changer = int(rng.integers(0, 2))
    new_colour = answer if kind == "turns_into" else pick(colours)
    shape_colours = [pick(colours), pick(colours)]
    if shape_colours[changer] == new_colour:
        shape_colours[changer] = pick([c for c in colours if c != new_colour])
    lo_w, hi_w = windows[changer]
    change_at = int(rng.integers(lo_w + 3, hi_w - 3 + 1))
    pos, radii = _place_apart(rng, cam, size)
    return dict(
        flashes=flashes,
        flash_colour=flash_colour,
        dot_colour=dot_colour,
        forms=[first_form, second_form],
        shape_colours=shape_colours,
        windows=windows,
        changer=changer,
        new_colour=new_colour,
        change_at=change_at,
        world_pos=pos,
        world_radius=radii,
    )


def _objects(scene: dict[str, Any], cam: dict[str, Any], num_frames: int, size: int) -> list[dict[str, Any]]:
    """Per object: form, role, screen centre and radius per frame, colour per frame (None = not drawn).

    Drawing order (later on top): lamp, dot, first shape, second shape."""
    mid = (size - 1) / 2
    scale = cam["scale"]
    screen = (scene["world_pos"][None] - cam["centre"][:, None]) / scale[:, None, None] + mid  # (T, 4, 2)
    radius = scene["world_radius"][None] / scale[:, None]  # (T, 4)
    lit = [None] * num_frames
    for s, e in scene["flashes"]:
        for f in range(s, e):
            lit[f] = scene["flash_colour"]
    lamp = [c or "off" for c in lit]
    shape_cols = []
    for k in range(2):
        cols = [None] * num_frames
        for f in range(*scene["windows"][k]):
            cols[f] = scene["shape_colours"][k]
            if k == scene["changer"] and f >= scene["change_at"]:
                cols[f] = scene["new_colour"]
        shape_cols.append(cols)
    specs = [("circle", "lamp", lamp), ("circle", "dot", [scene["dot_colour"]] * num_frames),
             (scene["forms"][0], "shape", shape_cols[0]), (scene["forms"][1], "shape", shape_cols[1])]  # fmt: skip
    return [dict(form=form, role=role, colours=cols, centre=screen[:, k], radius=radius[:, k])
            for k, (form, role, cols) in enumerate(specs)]  # fmt: skip


def _only_asked_about(objects: list[dict[str, Any]], kind: str, changer: int) -> list[dict[str, Any]]:
    """The objects with every one the question is not about blanked (never drawn): objects are
    (lamp, dot, first shape, second shape). In ``order`` clips each shape is drawn in its form's colour
    (:data:`FORM_COLOURS`) throughout: the question is when each appears, and the tiny vision tower
    trained here barely tells forms apart (43% on three forms after its first stage)."""
    asked = {"flash_colour": {0}, "count": {0}, "dot": {1}, "order": {2, 3}, "turns_into": {2 + changer}}[kind]
    out = [obj if k in asked else {**obj, "colours": [None] * len(obj["colours"])} for k, obj in enumerate(objects)]
    if kind == "order":
        for k in (2, 3):
            colour = FORM_COLOURS[out[k]["form"]]
            out[k] = {**out[k], "colours": [None if c is None else colour for c in out[k]["colours"]]}
    return out


def _view(bg: np.ndarray, cam: dict[str, Any], num_frames: int, size: int) -> np.ndarray:
    """The background seen by the camera: float32 ``(T, size, size, 3)`` (bilinear; exact crops when still)."""
    out = np.empty((num_frames, size, size, 3), np.float32)
    grid = np.arange(size, dtype=np.float64) - (size - 1) / 2
    for f in range(num_frames):
        y = cam["centre"][f, 0] + cam["scale"][f] * grid
        x = cam["centre"][f, 1] + cam["scale"][f] * grid
        y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
        wy, wx = (y - y0).astype(np.float32), (x - x0).astype(np.float32)
        if not wy.any() and not wx.any():
            out[f] = bg[y0[0] : y0[0] + size, x0[0] : x0[0] + size]
            continue
        rows = bg[y0] * (1 - wy)[:, None, None] + bg[y0 + 1] * wy[:, None, None]  # (size, world, 3)
        out[f] = rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x0 + 1] * wx[None, :, None]
    return out


def _render(rng: np.random.Generator, noise_rng: np.random.Generator, objects: list[dict[str, Any]],
            cam: dict[str, Any], num_frames: int, size: int, noise: float) -> np.ndarray:  # fmt: skip
    frames = _view(_background(rng, cam["world"]), cam, num_frames, size)
    for obj in objects:
        for f in range(num_frames):
            name = obj["colours"][f]
            if name is None:
                continue
            (cy, cx), r = obj["centre"][f], obj["radius"][f]
            y0, y1 = max(0, int(cy - r) - 1), min(size, int(cy + r) + 2)
            x0, x1 = max(0, int(cx - r) - 1), min(size, int(cx + r) + 2)
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            colour = LAMP_OFF if name == "off" else COLOURS[name]
            frames[f, y0:y1, x0:x1][shape_mask(obj["form"], cy, cx, r, yy, xx)] = colour
    if noise > 0:
        frames += noise * noise_rng.standard_normal(frames.shape, dtype=np.float32)
    return np.rint(frames).clip(0, 255).astype(np.uint8)


def _check_args(split: str, kind: str | None, num_frames: int, size: int, motion_share: float) -> None:
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown question kind {kind!r}; expected one of {list(KINDS)}")
    if num_frames < 24 or num_frames % 2:
        raise ValueError(f"num_frames must be an even number >= 24, got {num_frames}")
    if size < 112 or size % TOKEN:
        raise ValueError(f"size must be a multiple of {TOKEN} and >= 112, got {size}")
    if not 0.0 <= motion_share <= 1.0:
        raise ValueError(f"motion_share must be in [0, 1], got {motion_share}")


def planned_question(index: int) -> tuple[str, str]:
    """The kind and answer of sample ``index`` (any split): ``KINDS[i % 5]``, ``ANSWERS[kind][(i // 5) % n]``."""
    kind = KINDS[int(index) % len(KINDS)]
    options = ANSWERS[kind]
    return kind, options[(int(index) // len(KINDS)) % len(options)]


def camera_of(split: str, index: int, motion_share: float = 0.5, num_frames: int = NUM_FRAMES,
              size: int = SIZE) -> dict[str, Any]:  # fmt: skip
    """The camera of sample ``index`` of ``split`` without rendering it: ``motion``, ``camera``, per-frame
    view ``centre`` (world pixels) and ``scale`` (world pixels per screen pixel), ``world`` size."""
    _check_args(split, None, num_frames, size, motion_share)
    return _camera(np.random.default_rng([SPLIT_SEEDS[split], int(index), 1]), motion_share, num_frames, size)


def sample_and_scene(split: str, index: int, num_frames: int = NUM_FRAMES, size: int = SIZE,
                     kind: str | None = None, motion_share: float = 0.5, noise: float = 6.0,
                     distractors: bool = True) -> tuple[QASample, dict[str, Any]]:  # fmt: skip
    """Sample ``index`` of ``split`` and what was drawn for it (deterministic).

    ``kind`` fixes the question type (default ``KINDS[index % 5]`` with a balanced answer; with a fixed
    kind the answer is drawn). ``noise``: standard deviation of the per-pixel sensor noise (0-255 scale).
    The scene dict holds ``objects`` (per object: ``form``, ``role``, per-frame ``colours``, screen
    ``centre`` and ``radius``), ``flashes`` (``[start, end)`` frames), ``windows`` of the two shapes,
    ``changer``, ``change_at``, and the camera (``motion``, ``camera``, ``centre``, ``scale``).
    ``distractors=False``: only the question's objects are drawn (the others' colours are all None).
    """
    _check_args(split, kind, num_frames, size, motion_share)
    seed = (SPLIT_SEEDS[split], int(index))
    rng = np.random.default_rng(list(seed))
    if kind is None:
        kind, answer = planned_question(index)
    else:
        answer = str(rng.choice(ANSWERS[kind]))
    cam = camera_of(split, index, motion_share, num_frames, size)
    scene = _draw_scene(rng, kind, answer, num_frames, cam, size)
    objects = _objects(scene, cam, num_frames, size)
    if not distractors:
        objects = _only_asked_about(objects, kind, scene["changer"])
    video = _render(rng, np.random.default_rng([*seed, 2]), objects, cam, num_frames, size, noise)
    scene.update(objects=objects, **{k: cam[k] for k in ("motion", "camera", "centre", "scale")})
    sample = QASample(video=video, question=QUESTIONS[kind], answer=answer, kind=kind, seed=seed,
                      motion=cam["motion"], camera=cam["camera"])  # fmt: skip
    return sample, scene


def make_sample(split: str, index: int, num_frames: int = NUM_FRAMES, size: int = SIZE, kind: str | None = None,
                motion_share: float = 0.5, noise: float = 6.0, distractors: bool = True) -> QASample:  # fmt: skip
    """Sample ``index`` of ``split`` (deterministic); see :func:`sample_and_scene`."""
    return sample_and_scene(split, index, num_frames, size, kind, motion_share, noise, distractors)[0]


def make_split(split: str, count: int, start: int = 0, **kwargs: Any) -> list[QASample]:
    """``count`` samples ``start .. start + count - 1`` of ``split`` (every 5 consecutive ones: one of each kind)."""
    return [make_sample(split, i, **kwargs) for i in range(start, start + count)]


# ------------------------------------------------------------------------------------ token targets


def token_targets(scene: dict[str, Any], num_frames: int, size: int, merge: int = TOKEN) -> dict[str, np.ndarray]:
    """Per video token (one ``merge`` x ``merge`` square of one pair of frames) what it shows.

    Targets for the vision tower's auxiliary loss, in the order of the Qwen2-VL merged tokens (frame
    pair, row, column); sizes in :data:`TOKEN_TARGET_SIZES`: ``colour_a`` / ``colour_b`` -- the colour
    (index into :data:`COLOURS`, -1 none) of the object covering most of the square in the pair's
    first / second frame, at least 3% of it (an unlit lamp counts as none); ``role`` -- index into
    :data:`ROLES` of the object covering most of the square over the pair (>= 5%); ``form`` -- the
    shape's form (index into :data:`SHAPES`) on shape tokens, else -1.
    """
    colours = list(COLOURS)
    objects = scene["objects"]
    cells = size // merge
    area = np.zeros((num_frames, len(objects), cells, cells), np.float32)
    for k, obj in enumerate(objects):
        for f in range(num_frames):
            if obj["colours"][f] is None:
                continue
            (cy, cx), r = obj["centre"][f], obj["radius"][f]
            y0, y1 = max(0, int(cy - r) - 1), min(size, int(cy + r) + 2)
            x0, x1 = max(0, int(cx - r) - 1), min(size, int(cx + r) + 2)
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            m = np.zeros((size, size), np.float32)
            m[y0:y1, x0:x1] = shape_mask(obj["form"], cy, cx, r, yy, xx)
            area[f, k] = m.reshape(cells, merge, cells, merge).sum((1, 3)) / (merge * merge)

    def colour_of(f: int) -> np.ndarray:
        k = area[f].argmax(0)
        out = np.full((cells, cells), -1, np.int64)
        for obj_i, obj in enumerate(objects):
            name = obj["colours"][f]
            if name is None or name == "off":
                continue
            out[(k == obj_i) & (area[f].max(0) >= 0.03)] = colours.index(name)
        return out

    pairs = range(0, num_frames - 1, 2)
    colour_a = np.stack([colour_of(f) for f in pairs])
    colour_b = np.stack([colour_of(f + 1) for f in pairs])
    both = np.stack([area[f] + area[f + 1] for f in pairs])  # (pairs, objects, cells, cells)
    owner = both.argmax(1)
    present = both.max(1) >= 0.1
    role_of = np.array([ROLES.index(o["role"]) for o in objects])
    form_of = np.array([SHAPES.index(o["form"]) if o["role"] == "shape" else -1 for o in objects])
    role = np.where(present, role_of[owner], 0)
    form = np.where(present, form_of[owner], -1)
    return {k: v.reshape(-1).astype(np.int64) for k, v in
            dict(colour_a=colour_a, colour_b=colour_b, role=role, form=form).items()}  # fmt: skip


def make_labelled_sample(split: str, index: int, num_frames: int = NUM_FRAMES, size: int = SIZE,
                         kind: str | None = None, **kwargs: Any) -> tuple[QASample, dict[str, np.ndarray]]:  # fmt: skip
    """:func:`make_sample` plus its :func:`token_targets` (for training the vision tower)."""
    sample, scene = sample_and_scene(split, index, num_frames, size, kind, **kwargs)
    return sample, token_targets(scene, num_frames, size)
