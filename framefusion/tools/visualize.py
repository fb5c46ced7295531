"""Pictures of what a reduction kept: per-token fates, a self-contained HTML page, a PNG grid, a GIF.

Every picture starts from one prefill's :class:`~framefusion.report.ReductionReport`. Its decisions
are replayed over the original video tokens (:func:`token_fates`): each video token was either
**kept** to the last layer, **merged** into a token of an earlier frame (all members of a merge
group share a colour), or **pruned** (greyed). Where a token sits in the frame is family-specific:
the family's adapter says it (``Adapter.video_grids``: model frames, rows x cols tokens, the pixel box
of each token in the processed frame), and :func:`frame_grid` pairs it with pictures of the frames as
the model got them (read back from the processor's pixels, or the input frames resized like the
processor does for Qwen's flattened patches). Every family whose frames are patch grids is drawn
(:data:`SUPPORTED_FAMILIES`); any other raises :class:`UnsupportedFamilyError` naming it.

The HTML page needs no network to open (inline CSS/JS, images as ``data:`` URIs); its pieces
(:func:`page_css`, :func:`page_js`, :func:`html_fragment`) are reused by the web demo.
"""

from __future__ import annotations

import base64
import colorsys
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from .video import resize_video

__all__ = [
    "SUPPORTED_FAMILIES",
    "FrameGrid",
    "TokenFate",
    "TokenMap",
    "UnsupportedFamilyError",
    "build_token_map",
    "check_supported",
    "frame_grid",
    "html_fragment",
    "page_css",
    "page_js",
    "qwen_frame_grid",
    "render_html",
    "token_fates",
    "tokens_svg",
    "write_gif",
    "write_html",
    "write_png",
]



def _drawn_families() -> dict[str, tuple[str, ...]]:
    from ..adapters import ADAPTERS

    return {cls.family: cls.model_classes for cls in ADAPTERS if cls.draws_grids()}


#: family name -> model classes, of the families whose adapters give their frames' token grids
SUPPORTED_FAMILIES = _drawn_families()

KEPT, MERGED, PRUNED = "kept", "merged", "pruned"


class UnsupportedFamilyError(ValueError):
    """The model's family has no known token geometry, so its tokens cannot be drawn."""


# ------------------------------------------------------------------------------------------ fates
class TokenFate(NamedTuple):
    """What happened to one original video token.

    fate: "kept" (present after the last layer), "merged" or "pruned".
    layer: the decoder layer whose input merged or pruned it; None when kept.
    root: original index of the token it was merged into, followed through later merges to the
        group's last representative (so all members of a group share it); its own index when
        kept or pruned.
    """

    fate: str
    layer: int | None
    root: int


def token_fates(report: Any, sample: int = 0) -> list[TokenFate]:
    """Replay ``report.decisions[sample]`` over the sample's original video tokens.

    Each decision's ``keep`` (and, for merges, ``root``) index the video tokens present at that
    layer, in order; the replay tracks which original token each present one is.
    """
    counts = list(report.vision_tokens)
    if not 0 <= sample < len(counts):
        raise ValueError(f"sample must be in [0, {len(counts)}) for this report, got {sample}")
    n = int(counts[sample])
    decisions = report.decisions[sample] if sample < len(report.decisions) else []
    present = list(range(n))
    fate: list[str] = [KEPT] * n
    layer: list[int | None] = [None] * n
    parent = list(range(n))
    for d in decisions:
        keep = [bool(k) for k in d.keep.tolist()]
        if len(keep) != len(present):
            raise ValueError(
                f"the decision at layer {d.layer} covers {len(keep)} tokens but {len(present)} are present "
                f"there: the decisions do not belong to sample {sample} of this report"
            )
        if d.kind == "merge":
            if d.root is None:
                raise ValueError(f"the merge decision at layer {d.layer} has no root index")
            root = [int(r) for r in d.root.tolist()]
            for i, orig in enumerate(present):
                if not keep[i] and root[i] < 0:  # dropped without joining a group (FastVID)
                    fate[orig], layer[orig] = PRUNED, d.layer
                elif not keep[i]:
                    fate[orig], layer[orig], parent[orig] = MERGED, d.layer, present[root[i]]
        elif d.kind == "prune":
            for i, orig in enumerate(present):
                if not keep[i]:
                    fate[orig], layer[orig] = PRUNED, d.layer
        else:
            raise ValueError(f"unknown decision kind {d.kind!r} at layer {d.layer}; expected 'merge' or 'prune'")
        present = [orig for orig, k in zip(present, keep) if k]

    def find(i: int) -> int:
        seen = 0
        while parent[i] != i and seen <= n:
            i, seen = parent[i], seen + 1
        return i

    return [TokenFate(f, lay, find(i) if f == MERGED else i) for i, (f, lay) in enumerate(zip(fate, layer))]


# --------------------------------------------------------------------------------------- geometry
@dataclass
class FrameGrid:
    """Where each video token sits: one picture per token frame, ``rows x cols`` tokens on each.

    images: (t, H, W, 3) uint8, the frames as the model saw them (resized, cropped, padded)
    labels: one caption per picture (e.g. "frames 0-1" for a temporal patch of two frames)
    block: pixels a side of a token's box (rounded, when ``cell`` is not whole pixels)
    cell: (height, width) in pixels of a token's box, if not ``block`` square; token (r, c) covers
        rows ``[r * cell[0], (r + 1) * cell[0])`` and columns ``[c * cell[1], (c + 1) * cell[1])``
    Tokens are ordered frame, row, column.
    """

    images: np.ndarray
    labels: list[str]
    rows: int
    cols: int
    block: int
    cell: tuple[float, float] | None = None

    @property
    def frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def tokens(self) -> int:
        return self.frames * self.rows * self.cols

    @property
    def cell_size(self) -> tuple[float, float]:
        """(height, width) in pixels of one token's box."""
        return self.cell if self.cell is not None else (float(self.block), float(self.block))

    def box(self, row: int, col: int, scale: int = 1) -> tuple[int, int, int, int]:
        """Pixel box ``(x0, y0, x1, y1)`` (x1, y1 exclusive) of token (row, col) in a picture ``scale`` times
        the frame's size."""
        h, w = self.cell_size
        return (round(col * w * scale), round(row * h * scale), round((col + 1) * w * scale), round((row + 1) * h * scale))


def _check_frames(video: np.ndarray) -> np.ndarray:
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or len(video) == 0:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got shape {video.shape}")
    return video


def _input_spans(frames: int, model_frames: int, temporal_patch: int) -> list[tuple[int, int]]:
    """(first, last) input frame of each model frame: ``temporal_patch`` input frames each when the
    counts fit, else (the processor sampled frames itself) one input frame each, spread evenly."""
    t = model_frames
    if (t - 1) * temporal_patch < frames <= t * temporal_patch:
        return [(k * temporal_patch, min((k + 1) * temporal_patch, frames) - 1) for k in range(t)]
    idx = np.linspace(0, frames - 1, t).round().astype(int)
    return [(int(i), int(i)) for i in idx]


def _span_labels(spans: list[tuple[int, int]]) -> list[str]:
    return [f"frame {a}" if a == b else f"frames {a}-{b}" for a, b in spans]


def qwen_frame_grid(
    video: np.ndarray,
    grid_thw: Sequence[int],
    patch_size: int = 14,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
) -> FrameGrid:
    """The Qwen2-VL / Qwen2.5-VL geometry from ``video_grid_thw`` ``(t, h, w)`` (in patches).

    Each of the ``t`` token frames is a temporal patch of ``temporal_patch_size`` input frames and
    holds ``(h/merge) x (w/merge)`` tokens, each covering a ``patch*merge`` pixel square of the frame
    resized to ``(h*patch, w*patch)``. The picture of a token frame is its first input frame.
    """
    video = _check_frames(video)
    t, h, w = (int(v) for v in grid_thw)
    if min(t, h, w) < 1 or h % merge_size or w % merge_size:
        raise ValueError(f"video_grid_thw {tuple(grid_thw)} is not a grid of {merge_size}x{merge_size} merged patches")
    spans = _input_spans(len(video), t, temporal_patch_size)
    images = resize_video(np.stack([video[a] for a, _ in spans]).astype(np.uint8), w * patch_size, h * patch_size)
    return FrameGrid(images, _span_labels(spans), h // merge_size, w // merge_size, patch_size * merge_size)


def _adapter_class(model: Any) -> type:
    """The adapter class of ``model``'s family if it draws token grids; else :class:`UnsupportedFamilyError`."""
    from ..adapters import ADAPTERS

    config = getattr(model, "config", None)
    name = f"{type(model).__name__} (model_type {getattr(config, 'model_type', None)!r})"
    drawn = ", ".join(SUPPORTED_FAMILIES)
    for cls in ADAPTERS:
        if cls.matches(model):
            if cls.draws_grids():
                return cls
            raise UnsupportedFamilyError(
                f"token pictures are not supported yet for {cls.family} ({name}): its frames are not patch "
                f"grids. framefusion reduces it; pictures are drawn for {drawn}"
            )
    raise UnsupportedFamilyError(
        f"token pictures are not supported for {name}: it is no model family framefusion knows. "
        f"Pictures are drawn for {drawn}"
    )


def check_supported(model: Any) -> str:
    """The model_type (else the family) of ``model`` if its tokens can be drawn; else
    :class:`UnsupportedFamilyError` naming it."""
    cls = _adapter_class(model)
    return str(getattr(getattr(model, "config", None), "model_type", None) or cls.family)


def _video_grid(model: Any, inputs: Any, processor: Any = None):
    """The adapter's :class:`~framefusion.adapters.base.VideoGrid` of the one video of sample 0."""
    from ..adapters import adapter_for

    _adapter_class(model)
    adapter = adapter_for(model, processor)
    kwargs = dict(inputs) if hasattr(inputs, "keys") else {}
    layouts = adapter.video_layouts(kwargs)
    if not layouts or len(layouts[0]) == 0:
        raise ValueError("the inputs carry no video (no video tokens in sample 0): nothing to draw")
    videos = adapter.video_grids(kwargs, layouts)[0]
    if len(videos) != 1:
        raise ValueError(f"token pictures are drawn for one video at a time; the inputs hold {len(videos)} videos")
    grid = videos[0]
    if grid.tokens != len(layouts[0]) or not bool((grid.positions == layouts[0].positions).all()):
        raise ValueError(
            f"{adapter.family}: the frame grid ({grid.tokens} tokens) does not follow the video tokens of the "
            f"layout ({len(layouts[0])}) in order"
        )
    return grid


def _processed_pixels(inputs: Any, processor: Any, grid: Any) -> np.ndarray | None:
    """(frames, H, W, 3) uint8: the frames exactly as the model got them (resized, cropped, padded), read
    back from the processor's pixel tensor, shaped (..., frames, 3, H, W) and normalised, when it holds
    just this video's frames; None otherwise (Qwen's flattened patches)."""
    import torch

    height, width = grid.frame_size
    settings = getattr(processor, "video_processor", None)
    for key in ("pixel_values_videos", "pixel_values"):
        pixels = inputs.get(key) if hasattr(inputs, "get") else None
        if not isinstance(pixels, torch.Tensor) or pixels.ndim not in (4, 5) or settings is None:
            continue
        if tuple(pixels.shape[-3:]) != (3, height, width) or pixels[..., 0, 0, 0].numel() != grid.frames:
            continue
        x = pixels.detach().float().cpu().reshape(grid.frames, 3, height, width)
        if getattr(settings, "do_normalize", False):  # undo (x - mean) / std per channel
            mean = torch.tensor(settings.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
            std = torch.tensor(settings.image_std, dtype=torch.float32).view(1, 3, 1, 1)
            x = x * std + mean
        if getattr(settings, "do_rescale", False):  # undo x * rescale_factor (1/255)
            x = x / float(settings.rescale_factor)
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return None


def frame_grid(model: Any, inputs: Any, video: np.ndarray, processor: Any = None) -> FrameGrid:
    """The token geometry of the one video in ``inputs`` (the processor's output for ``video``), as the
    model family's adapter gives it (``Adapter.video_grids``). InternVL and SmolVLM need ``processor``
    to tell their frames from images."""
    grid = _video_grid(model, inputs, processor)
    video = _check_frames(video)
    spans = _input_spans(len(video), grid.frames, grid.temporal_patch)
    images = _processed_pixels(inputs, processor, grid)
    if images is None:  # the frame each model frame starts with, resized as the processor does
        height, width = grid.frame_size
        images = resize_video(np.stack([video[a] for a, _ in spans]).astype(np.uint8), width, height)
    cell = (float(grid.cell[0]), float(grid.cell[1]))
    return FrameGrid(images, _span_labels(spans), grid.rows, grid.cols, max(1, round(min(cell))), cell)


# -------------------------------------------------------------------------------------------- map
@dataclass
class TokenMap:
    """Everything a picture shows: the geometry, each token's fate and the tokens per layer."""

    grid: FrameGrid
    fates: list[TokenFate]
    tokens_per_layer: list[int]
    achieved_cost: float
    requested_cost: float | None = None
    method: str = "framefusion"
    caption: str = ""  # e.g. the model and the question
    colors: dict[int, tuple[int, int, int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if len(self.fates) != self.grid.tokens:
            raise ValueError(
                f"{len(self.fates)} token fates for a grid of {self.grid.frames} frames x {self.grid.rows}x"
                f"{self.grid.cols} tokens = {self.grid.tokens}: the report and the video do not match"
            )
        self._members: dict[int, int] = {}
        for f in self.fates:
            if f.fate == MERGED:
                self._members[f.root] = self._members.get(f.root, 0) + 1
        if not self.colors:
            self.colors = {r: _group_color(i) for i, r in enumerate(sorted(self._members))}

    @property
    def video_tokens(self) -> int:
        return len(self.fates)

    @property
    def kept_tokens(self) -> int:
        return sum(f.fate == KEPT for f in self.fates)

    def counts(self) -> dict[str, int]:
        """Tokens per fate (as :func:`token_fates` gives them)."""
        return {k: sum(f.fate == k for f in self.fates) for k in (KEPT, MERGED, PRUNED)}

    def drawn_counts(self) -> dict[str, int]:
        """Tokens per drawn class: kept (group anchors included), merged into a surviving group, and
        pruned (merged tokens whose group was pruned later included, as ``"pruned_after_merge"`` too)."""
        classes = [self.cell(i) for i in range(self.video_tokens)]
        late = sum(cls == PRUNED and self.fates[i].fate == MERGED for i, (cls, _, _) in enumerate(classes))
        return {
            KEPT: sum(cls in (KEPT, "root") for cls, _, _ in classes),
            MERGED: sum(cls == MERGED for cls, _, _ in classes),
            PRUNED: sum(cls == PRUNED for cls, _, _ in classes),
            "pruned_after_merge": late,
        }

    def cell(self, index: int) -> tuple[str, int | None, str]:
        """How token ``index`` is drawn: (class, group root or None, description).

        class: "kept", "root" (kept, and other tokens merged into it), "merged", or "pruned" (also a
        merged token whose group was pruned at a later layer).
        """
        f = self.fates[index]
        where = self._where(index)
        if f.fate == PRUNED:
            return PRUNED, None, f"{where}: pruned at layer {f.layer}"
        if f.fate == MERGED:
            root = self.fates[f.root]
            into = f"merged at layer {f.layer} into token {f.root} ({self._where(f.root)})"
            if root.fate == PRUNED:
                return PRUNED, f.root, f"{where}: {into}, whose group was pruned at layer {root.layer}"
            return MERGED, f.root, f"{where}: {into}"
        if index in self._members:
            return "root", index, f"{where}: kept; {self._members[index]} later token(s) merged into it"
        return KEPT, None, f"{where}: kept"

    def _where(self, index: int) -> str:
        per_frame = self.grid.rows * self.grid.cols
        k, rest = divmod(index, per_frame)
        return f"{self.grid.labels[k]}, row {rest // self.grid.cols}, col {rest % self.grid.cols}"

    def summary(self) -> str:
        share = 100 * self.kept_tokens / max(self.video_tokens, 1)
        budget = "" if self.requested_cost is None else f" (budget {self.requested_cost:g})"
        return (
            f"{self.video_tokens} -> {self.kept_tokens} video tokens after the last layer ({share:.1f}% kept), "
            f"achieved cost {self.achieved_cost:.3f}{budget}"
        )


def _group_color(i: int) -> tuple[int, int, int]:
    hue = (0.07 + i * 0.618034) % 1.0  # golden-ratio steps: neighbouring groups differ
    sat, val = (0.85, 0.95) if i % 2 == 0 else (0.65, 0.80)
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(r * 255), int(g * 255), int(b * 255)


def build_token_map(
    model: Any,
    processor: Any,
    video: np.ndarray,
    question: str = "What happens in this video?",
    config: Any = None,
    *,
    inputs: Any = None,
    report: Any = None,
    caption: str = "",
) -> TokenMap:
    """The token map of one video: runs one prefill under ``config`` unless ``report`` is given.

    ``inputs`` (the processor's output for ``video`` and ``question``) and ``report`` (the handle's
    ``last_report()`` for those inputs) let a caller that already generated reuse its prefill.
    """
    import torch

    from ..engine import apply

    _adapter_class(model)
    if inputs is None:
        from ..tiny_models import zoo

        inputs = zoo.video_inputs(processor, [question], [video])
    if report is None:
        device = getattr(model, "device", torch.device("cpu"))
        with apply(model, config, processor=processor) as handle, torch.inference_mode():
            model(**inputs.to(device))
            report = handle.last_report()
    return TokenMap(
        grid=frame_grid(model, inputs, video, processor),
        fates=token_fates(report, 0),
        tokens_per_layer=list(report.vision_tokens_per_layer[0]),
        achieved_cost=float(report.achieved_cost[0]),
        requested_cost=report.requested_cost,
        method=report.method,
        caption=caption,
    )


# ----------------------------------------------------------------------------------------- raster
GREY_LEVEL = 150  # pruned tokens: their luminance squeezed into a light grey


def _scale_for(grid: FrameGrid, target: int = 200) -> int:
    return max(1, math.ceil(target / max(grid.images.shape[1], 1)))


def _tile(tmap: TokenMap, k: int, scale: int, kept: bool):
    """Picture of token frame ``k``: the frame itself, or what the model keeps of it (PIL image)."""
    from PIL import Image

    frame = Image.fromarray(tmap.grid.images[k])
    if scale > 1:
        frame = frame.resize((frame.width * scale, frame.height * scale), Image.BICUBIC)
    if not kept:
        return frame
    shaded, outlines = _shade_cells(tmap, k, scale, np.asarray(frame).astype(np.float32))
    img = Image.fromarray(shaded.clip(0, 255).astype(np.uint8))
    _draw_cells(img, tmap.grid, scale, outlines)
    return img


def _shade_cells(tmap: TokenMap, k: int, scale: int, rgb: np.ndarray) -> tuple[np.ndarray, list]:
    """``rgb`` (H, W, 3) float32, a frame ``scale`` times enlarged, with its pruned tokens greyed and its
    merged ones tinted in their group's colour; and the outline of each merged token / group anchor
    ``(x0, y0, x1, y1, colour, class)``, x1 and y1 inclusive."""
    out = rgb.copy()
    per_frame = tmap.grid.rows * tmap.grid.cols
    outlines = []
    for j in range(per_frame):
        cls, group, _ = tmap.cell(k * per_frame + j)
        x0, y0, x1, y1 = tmap.grid.box(*divmod(j, tmap.grid.cols), scale)
        ys, xs = slice(y0, y1), slice(x0, x1)
        if cls == PRUNED:
            luma = rgb[ys, xs] @ np.array([0.299, 0.587, 0.114], np.float32)
            out[ys, xs] = (GREY_LEVEL + 0.25 * (luma - 128))[..., None]
        elif cls in (MERGED, "root"):
            color = np.array(tmap.colors[group], np.float32)
            alpha = 0.72 if cls == MERGED else 0.3
            out[ys, xs] = (1 - alpha) * rgb[ys, xs] + alpha * color
            outlines.append((x0, y0, x1 - 1, y1 - 1, tmap.colors[group], cls))
    return out, outlines


def _draw_cells(img, grid: FrameGrid, scale: int, outlines: list) -> None:
    """The token grid (faint white lines between the boxes), then each outline; a group's anchor gets a
    thicker, darker outline and a dot in its corner."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(img)
    right, bottom = grid.box(grid.rows - 1, grid.cols - 1, scale)[2:]
    for c in range(1, grid.cols + (right < img.width)):
        x = grid.box(0, c, scale)[0]
        draw.line([(x, 0), (x, bottom - 1)], fill=(255, 255, 255), width=1)
    for r in range(1, grid.rows + (bottom < img.height)):
        y = grid.box(r, 0, scale)[1]
        draw.line([(0, y), (right - 1, y)], fill=(255, 255, 255), width=1)
    b = round(min(grid.cell_size) * scale)
    for x0, y0, x1, y1, color, cls in outlines:
        width = max(2, b // 12) if cls == "root" else 1
        dark = tuple(int(v * 0.55) for v in color)
        draw.rectangle([x0, y0, x1, y1], outline=dark if cls == "root" else color, width=width)
        if cls == "root":  # the group's anchor: a dot in the corner
            d = max(3, b // 7)
            draw.ellipse([x0 + width + 1, y0 + width + 1, x0 + width + 1 + d, y0 + width + 1 + d], fill=dark)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def write_png(tmap: TokenMap, path: str | Path, columns: int = 8) -> Path:
    """A grid for papers and slides: the frames (top) over what the model keeps (below), with a legend."""
    from PIL import Image, ImageDraw

    scale = _scale_for(tmap.grid, 160)
    tiles = [(_tile(tmap, k, scale, False), _tile(tmap, k, scale, True)) for k in range(tmap.grid.frames)]
    tw, th = tiles[0][0].size
    cols = max(1, min(columns, len(tiles)))
    bands = math.ceil(len(tiles) / cols)
    pad, label_w, cap_h, legend_h = 8, 150, 20, 40
    band_h = cap_h + 2 * th + pad
    width = label_w + cols * (tw + pad) + pad
    big, small = _font(18), _font(13)
    caption = _wrap(tmap.caption, small, width - 2 * pad, max_lines=3) if tmap.caption else []
    head_h = 40 + 17 * len(caption)
    height = head_h + bands * (band_h + pad) + legend_h
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 8), f"{tmap.method}: {tmap.summary()}", fill=(20, 20, 20), font=big)
    for i, line in enumerate(caption):
        draw.text((pad, 34 + 17 * i), line, fill=(90, 90, 90), font=small)
    for band in range(bands):
        top = head_h + band * (band_h + pad)
        draw.text((pad, top + cap_h + th // 2 - 16), "original", fill=(20, 20, 20), font=small)
        draw.text((pad, top + cap_h + th // 2), f"{tmap.video_tokens} tokens", fill=(90, 90, 90), font=small)
        draw.text((pad, top + cap_h + th + th // 2 - 16), "model keeps", fill=(20, 20, 20), font=small)
        draw.text((pad, top + cap_h + th + th // 2), f"{tmap.kept_tokens} tokens", fill=(90, 90, 90), font=small)
        for i, (orig, kept) in enumerate(tiles[band * cols : (band + 1) * cols]):
            k = band * cols + i
            x = label_w + i * (tw + pad)
            draw.text((x, top + 2), tmap.grid.labels[k], fill=(60, 60, 60), font=small)
            canvas.paste(orig, (x, top + cap_h))
            canvas.paste(kept, (x, top + cap_h + th + 2))
    _legend(draw, pad, height - legend_h + 8, small, tmap)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def _wrap(text: str, font, width: int, max_lines: int) -> list[str]:
    """``text`` broken into lines at most ``width`` pixels wide (the last one cut with "...")."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and font.getlength(trial) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        while lines[-1] and font.getlength(lines[-1] + " ...") > width:
            lines[-1] = lines[-1][:-1]
        lines[-1] += " ..."
    return lines


def _legend(draw, x: int, y: int, font, tmap: TokenMap) -> None:
    c = tmap.drawn_counts()
    s = 16
    items = [
        ((255, 255, 255), f"kept ({c[KEPT]})"),
        (None, f"merged into an earlier frame's token, one colour per group ({c[MERGED]})"),
        ((GREY_LEVEL,) * 3, f"pruned ({c[PRUNED]}{_late(c)})"),
    ]
    for color, text in items:
        if color is None:
            for j in range(4):
                draw.rectangle([x + j * 4, y, x + j * 4 + 3, y + s], fill=_group_color(j))
        else:
            draw.rectangle([x, y, x + s, y + s], fill=color, outline=(80, 80, 80))
        draw.text((x + s + 6, y), text, fill=(40, 40, 40), font=font)
        x += s + 16 + int(draw.textlength(text, font=font))


def _late(c: dict[str, int]) -> str:
    n = c["pruned_after_merge"]
    return f", {n} of them merged first and pruned with their group" if n else ""


def write_gif(tmap: TokenMap, path: str | Path, ms_per_frame: int = 600) -> Path:
    """An animated GIF: each token frame, the original beside what the model keeps, looping."""
    from PIL import Image, ImageDraw

    scale = _scale_for(tmap.grid, 200)
    font = _font(13)
    pictures = []
    for k in range(tmap.grid.frames):
        orig, kept = _tile(tmap, k, scale, False), _tile(tmap, k, scale, True)
        pad, head = 6, 22
        canvas = Image.new("RGB", (2 * orig.width + 3 * pad, orig.height + head + pad), "white")
        draw = ImageDraw.Draw(canvas)
        draw.text(
            (pad, 4), f"{tmap.grid.labels[k]}: original, {tmap.video_tokens} tokens", fill=(30, 30, 30), font=font
        )
        draw.text((2 * pad + orig.width, 4), f"model keeps {tmap.kept_tokens} tokens", fill=(30, 30, 30), font=font)
        canvas.paste(orig, (pad, head))
        canvas.paste(kept, (2 * pad + orig.width, head))
        pictures.append(canvas)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=ms_per_frame, loop=0)
    return path


def _data_uri(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ------------------------------------------------------------------------------------------- html
def tokens_svg(tokens_per_layer: Sequence[int], total: int, width: int = 560, height: int = 220) -> str:
    """Inline SVG bar chart: vision tokens present at each decoder layer, against the untouched count."""
    e = html.escape
    layers = len(tokens_per_layer)
    left, right, top, bottom = 48, 12, 26, 34
    pw, ph = width - left - right, height - top - bottom
    top_value = max([total, *tokens_per_layer, 1])
    bar = pw / max(layers, 1)

    def y(v: float) -> float:
        return top + ph - ph * v / top_value

    parts = [
        f'<svg class="ff-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="video tokens per layer">',
        f'<text x="{left}" y="16" class="ff-chart-title">video tokens per decoder layer</text>',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#888"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#888"/>',
    ]
    for v in sorted({0, total // 2, total}):
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" class="ff-tick">{v}</text>')
    for i, v in enumerate(tokens_per_layer):
        x0 = left + i * bar + bar * 0.12
        parts.append(
            f'<rect class="ff-bar" x="{x0:.1f}" y="{y(v):.1f}" width="{bar * 0.76:.1f}" height="{top + ph - y(v):.1f}">'
            f"<title>layer {i}: {v} video tokens</title></rect>"
        )
    step = max(1, math.ceil(layers / 16))
    for i in range(0, layers, step):
        parts.append(
            f'<text x="{left + (i + 0.5) * bar:.1f}" y="{top + ph + 14}" text-anchor="middle" class="ff-tick">{i}</text>'
        )
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 4}" text-anchor="middle" class="ff-tick">layer</text>')
    parts.append(
        f'<line x1="{left}" y1="{y(total):.1f}" x2="{left + pw}" y2="{y(total):.1f}" class="ff-full"/>'
        f'<text x="{left + pw}" y="{y(total) - 5:.1f}" text-anchor="end" class="ff-tick">'
        f"untouched: {e(str(total))} at every layer</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def page_css() -> str:
    """The stylesheet of the token map (and the web demo's page)."""
    return """
:root { --ff-ink: #1d2330; --ff-muted: #5d6678; --ff-line: #d9dde5; --ff-accent: #3559d6; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ff-ink);
       background: #f6f7fa; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 24px 48px; }
h1 { font-size: 22px; margin: 4px 0 2px; } h2 { font-size: 17px; margin: 22px 0 8px; }
.ff-muted { color: var(--ff-muted); }
.ff-card { background: #fff; border: 1px solid var(--ff-line); border-radius: 10px; padding: 14px 16px; }
.ff-summary { font-size: 16px; margin: 6px 0 12px; }
.ff-slider-row { display: flex; align-items: center; gap: 12px; margin: 10px 0 12px; flex-wrap: wrap; }
.ff-slider-row input[type=range] { flex: 1 1 280px; accent-color: var(--ff-accent); }
.ff-badge { display: inline-block; padding: 2px 9px; border-radius: 999px; background: #eef1f8;
            font-weight: 600; white-space: nowrap; }
.ff-tiles { display: flex; flex-wrap: wrap; gap: 10px; }
.ff-tile { margin: 0; }
.ff-tile figcaption { font-size: 12px; color: var(--ff-muted); margin-bottom: 3px; }
.ff-stack { position: relative; line-height: 0; border-radius: 4px; overflow: hidden; --ff-split: 50%; }
.ff-stack img { display: block; }
.ff-stack .ff-kept { position: absolute; inset: 0; clip-path: inset(0 0 0 var(--ff-split)); }
.ff-divider { position: absolute; top: 0; bottom: 0; left: var(--ff-split); width: 2px; margin-left: -1px;
              background: #fff; box-shadow: 0 0 0 1px rgba(0,0,0,.35); pointer-events: none; }
.ff-cells { position: absolute; inset: 0; display: grid; }
.ff-cells i { display: block; }
.ff-cells i.ff-hl { outline: 3px solid #111; outline-offset: -3px; }
.ff-legend { display: flex; gap: 18px; flex-wrap: wrap; margin: 12px 0 4px; font-size: 13px; }
.ff-legend span { display: inline-flex; align-items: center; gap: 6px; }
.ff-sw { width: 16px; height: 16px; border: 1px solid #777; border-radius: 3px; display: inline-block; }
.ff-sw.kept { background: #fff; } .ff-sw.pruned { background: rgb(150,150,150); }
.ff-sw.merged { background: linear-gradient(90deg, #e8553b, #3bb7e8, #9be83b, #c23be8); }
.ff-chart { max-width: 100%; height: auto; background: #fff; }
.ff-chart-title { font-size: 13px; font-weight: 600; fill: var(--ff-ink); }
.ff-tick { font-size: 11px; fill: var(--ff-muted); }
.ff-bar { fill: var(--ff-accent); } .ff-bar:hover { fill: #1c3aa6; }
.ff-full { stroke: #c0392b; stroke-width: 1.5; stroke-dasharray: 5 4; }
.ff-results { width: 100%; border-collapse: collapse; background: #fff; }
.ff-results th, .ff-results td { border-bottom: 1px solid var(--ff-line); padding: 6px 10px; text-align: left;
                                 vertical-align: top; }
.ff-results td.num { font-variant-numeric: tabular-nums; }
.ff-answer { white-space: pre-wrap; margin: 0; font: 14px/1.4 ui-monospace, Menlo, Consolas, monospace; }
"""


def page_js() -> str:
    """The script of the token map: the original/kept slider and group highlighting."""
    return """
(function () {
  function setup(map) {
    var slider = map.querySelector('.ff-slider');
    var out = map.querySelector('.ff-split-value');
    function update() {
      var v = slider.value + '%';
      map.querySelectorAll('.ff-stack').forEach(function (s) { s.style.setProperty('--ff-split', v); });
      if (out) { out.textContent = slider.value + '% original | ' + (100 - slider.value) + '% kept'; }
    }
    slider.addEventListener('input', update);
    update();
    map.querySelectorAll('.ff-cells i[data-group]').forEach(function (cell) {
      cell.addEventListener('mouseenter', function () {
        map.querySelectorAll('.ff-cells i[data-group="' + cell.dataset.group + '"]').forEach(function (c) {
          c.classList.add('ff-hl');
        });
      });
      cell.addEventListener('mouseleave', function () {
        map.querySelectorAll('.ff-cells i.ff-hl').forEach(function (c) { c.classList.remove('ff-hl'); });
      });
    });
  }
  function init() { document.querySelectorAll('.ff-map').forEach(setup); }
  if (document.readyState === 'loading') { document.addEventListener('DOMContentLoaded', init); } else { init(); }
})();
"""


def html_fragment(tmap: TokenMap) -> str:
    """The token map as one ``<section class="ff-map">``: slider, frames with per-token cells, legend, chart."""
    e = html.escape
    scale = _scale_for(tmap.grid, 200)
    per_frame = tmap.grid.rows * tmap.grid.cols
    tiles = []
    for k in range(tmap.grid.frames):
        orig, kept = _tile(tmap, k, scale, False), _tile(tmap, k, scale, True)
        cells = []
        for j in range(per_frame):
            cls, group, text = tmap.cell(k * per_frame + j)
            g = "" if group is None else f' data-group="{group}"'
            cells.append(f'<i data-fate="{cls}"{g} title="{e(f"token {k * per_frame + j}: {text}")}"></i>')
        tiles.append(
            f'<figure class="ff-tile" data-frame="{k}"><figcaption>{e(tmap.grid.labels[k])}</figcaption>'
            f'<div class="ff-stack" style="width:{orig.width}px;height:{orig.height}px">'
            f'<img class="ff-orig" alt="{e(tmap.grid.labels[k])}, original" src="{_data_uri(orig)}" '
            f'width="{orig.width}" height="{orig.height}">'
            f'<img class="ff-kept" alt="{e(tmap.grid.labels[k])}, kept by the model" src="{_data_uri(kept)}" '
            f'width="{orig.width}" height="{orig.height}">'
            '<div class="ff-divider"></div>'
            f'<div class="ff-cells" style="{_cells_style(tmap.grid, scale)}">{"".join(cells)}</div>'
            "</div></figure>"
        )
    c = tmap.drawn_counts()
    caption = f'<p class="ff-muted">{e(tmap.caption)}</p>' if tmap.caption else ""
    return (
        f'<section class="ff-map" data-video-tokens="{tmap.video_tokens}" data-kept-tokens="{tmap.kept_tokens}">'
        f'<p class="ff-summary"><b>{e(tmap.method)}</b>: {e(tmap.summary())}</p>{caption}'
        '<div class="ff-slider-row">'
        f'<span class="ff-badge">original: {tmap.video_tokens} tokens</span>'
        '<input type="range" class="ff-slider" min="0" max="100" value="50" '
        'aria-label="share of each frame shown as the original">'
        f'<span class="ff-badge">model keeps: {tmap.kept_tokens} tokens</span>'
        '<span class="ff-split-value ff-muted"></span></div>'
        f'<div class="ff-tiles">{"".join(tiles)}</div>'
        '<div class="ff-legend">'
        f'<span><i class="ff-sw kept"></i>kept ({c[KEPT]}; an outlined tile with a dot anchors a merge group)</span>'
        f'<span><i class="ff-sw merged"></i>merged into a token of an earlier frame, one colour per group '
        f"({c[MERGED]})</span>"
        f'<span><i class="ff-sw pruned"></i>pruned ({c[PRUNED]}{_late(c)})</span></div>'
        '<p class="ff-muted">Drag the slider: left of the line each frame as the model got it, right of it what '
        "the model keeps. Hover a coloured token to see its whole merge group.</p>"
        f"{tokens_svg(tmap.tokens_per_layer, tmap.video_tokens)}"
        "</section>"
    )


def _cells_style(grid: FrameGrid, scale: int) -> str:
    """CSS of the hover cells over a tile: one per token, covering the token's box (the boxes may leave
    a margin at the right and bottom of the frame)."""
    right, bottom = grid.box(grid.rows - 1, grid.cols - 1, scale)[2:]
    return (
        f"width:{right}px;height:{bottom}px;grid-template-columns:repeat({grid.cols},1fr);"
        f"grid-template-rows:repeat({grid.rows},1fr)"
    )


def results_table(rows: dict[str, dict[str, Any]]) -> str:
    """A small HTML table of answers and times: ``{"untouched": {...}, "framefusion": {...}}``."""
    e = html.escape
    names = list(rows)
    keys: list[str] = []
    for r in rows.values():
        keys += [k for k in r if k not in keys and k != "answer"]
    head = "".join(f"<th>{e(n)}</th>" for n in names)
    body = "".join(
        f"<tr><th>{e(k)}</th>" + "".join(f'<td class="num">{e(str(rows[n].get(k, "")))}</td>' for n in names) + "</tr>"
        for k in keys
    )
    answers = "".join(
        f'<td><pre class="ff-answer" id="answer-{e(n)}">{e(_shown(rows[n].get("answer", "")))}</pre></td>'
        for n in names
    )
    return f'<table class="ff-results"><tr><th></th>{head}</tr><tr><th>answer</th>{answers}</tr>{body}</table>'


def _shown(answer: str) -> str:
    return answer if answer.strip() else f"(blank answer: {answer!r})"


def render_html(
    tmap: TokenMap, *, title: str = "framefusion: what the model keeps", results: dict | None = None
) -> str:
    """A complete, self-contained HTML page (no network needed to open it)."""
    e = html.escape
    extra = f"<h2>Answers</h2>{results_table(results)}" if results else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{page_css()}</style></head><body><main>"
        f"<h1>{e(title)}</h1>{extra}<h2>Video tokens</h2>"
        f'<div class="ff-card">{html_fragment(tmap)}</div>'
        f"</main><script>{page_js()}</script></body></html>"
    )


def write_html(tmap: TokenMap, path: str | Path, **kwargs: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(tmap, **kwargs), encoding="utf-8")
    return path
