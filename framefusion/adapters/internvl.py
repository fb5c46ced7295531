"""InternVL in transformers format (InternVL3, InternVL3.5 ``-hf`` checkpoints).

Layout (transformers 5.23): ``InternVLProcessor`` writes a video as its frames, each an image tile,

    Frame1: <img> + S x <IMG_CONTEXT> + </img>\\nFrame2: <img> + S x <IMG_CONTEXT> + </img> ...

with ``S = config.image_seq_length`` (pixel-shuffled patches of the tile, row-major), and an image as
``<img>`` + ``n * S`` ``<IMG_CONTEXT>`` + ``</img>`` (``n`` tiles, one run). Frames and images use the
same context token, and ``mm_token_type_ids`` marks both as images (type 1), so what makes a run a
video frame is only the ``Frame{k}: `` text before it. The model's forward gets nothing else that tells
them apart (``generate`` even replaces ``pixel_values`` by pre-encoded features), so this adapter reads
the label through the tokenizer: a run of exactly ``S`` tokens is frame ``k`` of a video when the text
before its ``<img>`` ends with ``Frame1: `` (k = 1, a new video) or is exactly ``\\nFrame{k}: `` right
after frame ``k - 1`` (the processor joins frames with a newline). Labels, ``<img>``/``</img>`` and
images stay text; the patch key of a frame token is its index within the tile.

The LLM is Qwen2 (InternVL3) or Qwen3 (InternVL3.5) with 1-D RoPE: the default probe and decode
positions apply.

Geometry (pictures): a frame is one tile of ``vision_config.image_size`` pixels (the processor resizes
it); the pixel shuffle (``downsample_ratio`` 0.5) folds each 2 x 2 block of ``patch_size`` patches into
one token, row-major, so a token covers ``patch_size / downsample_ratio`` (28) pixels a side.

Chunked vision encoding (``frame_encoders``): frames reach the model as image tiles in ``pixel_values``
``(tiles, 3, H, W)`` and ``get_image_features`` runs ``vision_tower`` once over all of them, then selects
a layer, pixel-shuffles and projects each tile. ``InternVLVisionModel`` is a ViT over a batch of tiles,
each its own sequence: patch convolution, CLS token, the position embedding of the fixed tile grid, unmasked
self-attention within the tile, per-token norms and layer scales; nothing mixes tiles, so its call is cut
along the tile dimension (images' tiles included). Another encoder class is refused.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import (
    Adapter,
    FrameEncoder,
    VideoGrid,
    VideoLayout,
    checked_encoder,
    images_along_dim0,
    special_token_id,
    tile_grids,
)

__all__ = ["InternVLAdapter"]

_LABEL_TOKENS = 12  # tokens decoded before a run: enough for "Frame{k}: " in any tokenizer (>= 1 char per token)


class InternVLAdapter(Adapter):
    family = "InternVL (transformers format)"
    model_classes = ("InternVLForConditionalGeneration", "InternVLModel")
    checkpoints = (
        "OpenGVLab/InternVL3-1B-hf",
        "OpenGVLab/InternVL3-8B-hf",
        "OpenGVLab/InternVL3_5-8B-HF",
    )

    def __init__(self, model, processor: Any = None):
        super().__init__(model, processor)
        # The frame labels, decoded by the tokenizer, are the only way to tell frames from images.
        self.tokenizer = self.label_tokenizer()
        self._img = special_token_id(self.tokenizer, "start_image_token", "<img>")
        self._end = special_token_id(self.tokenizer, "end_image_token", "</img>")

    @classmethod
    def frame_encoders(cls, model, frames: int) -> list[FrameEncoder]:
        tower = checked_encoder(cls.family, cls.base_of(model).vision_tower, ("InternVLVisionModel",))
        return [images_along_dim0(tower)]

    def video_layouts(self, inputs: dict[str, Any]) -> list[VideoLayout] | None:
        input_ids = inputs.get("input_ids")
        if input_ids is None:
            return None
        config = self._base().config
        per_tile = int(config.image_seq_length)
        device = input_ids.device
        is_image = input_ids == config.image_token_id
        # Runs of context tokens: starts where a token is one and its left neighbour is not, ends likewise.
        edge = torch.nn.functional.pad(is_image.long(), (1, 1)).diff(dim=1)
        layouts = []
        for b in range(input_ids.shape[0]):
            starts = (edge[b] == 1).nonzero(as_tuple=True)[0].tolist()
            ends = (edge[b] == -1).nonzero(as_tuple=True)[0].tolist()  # exclusive
            ids = input_ids[b].tolist()
            positions, frames, patches = [], [], []
            video, frame, prev_end = -1, -1, None  # frame: index of the last frame taken, -1 outside a video
            for start, end in zip(starts, ends):
                tile = (
                    end - start == per_tile
                    and start >= 1
                    and end < len(ids)
                    and (self._img is None or ids[start - 1] == self._img)
                    and (self._end is None or ids[end] == self._end)
                )
                label_from = 0 if prev_end is None else prev_end + 1  # after the previous run's </img>
                label = f"\nFrame{frame + 2}: "  # what joins frame k + 1 to frame k
                if (
                    tile
                    and frame >= 0
                    and start - 1 - label_from <= len(label)  # every token spells at least one character
                    and self.decode(ids[label_from : start - 1]) == label
                ):
                    frame += 1  # the next frame of the current video
                elif tile and self.decode(ids[max(label_from, start - 1 - _LABEL_TOKENS) : start - 1]).endswith(
                    "Frame1: "
                ):
                    video, frame = video + 1, 0  # the first frame of a new video
                else:
                    frame = -1  # an image (or an unlabelled tile): stays text
                if frame >= 0:
                    positions.append(torch.arange(start, end))
                    frames.append(torch.full((per_tile,), frame))
                    patches.append(torch.arange(per_tile) + video * per_tile)  # unique key per video
                prev_end = end
            layouts.append(VideoLayout.from_parts(positions, frames, patches, device))
        return layouts

    def video_grids(self, inputs: dict[str, Any], layouts: list[VideoLayout]) -> list[list[VideoGrid]]:
        config = self._base().config
        per_tile = int(config.image_seq_length)
        height, width = _pair(config.vision_config.image_size)
        patch_h, patch_w = _pair(config.vision_config.patch_size)
        ratio = float(config.downsample_ratio)
        rows, cols = round(height / patch_h * ratio), round(width / patch_w * ratio)  # after the pixel shuffle
        if rows * cols != per_tile:
            raise ValueError(f"{self.family}: a tile of {rows}x{cols} tokens is not image_seq_length={per_tile}")
        cell = (patch_h / ratio, patch_w / ratio)  # pixels a side of one token's box
        return tile_grids(layouts, rows, cols, (height, width), cell)


def _pair(value: Any) -> tuple[int, int]:
    """(height, width) from a size given as one int or a pair."""
    return (int(value), int(value)) if isinstance(value, (int, float)) else (int(value[0]), int(value[1]))
