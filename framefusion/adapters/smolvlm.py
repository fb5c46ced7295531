"""SmolVLM2 (``SmolVLMForConditionalGeneration``).

Layout (transformers 5.23): ``SmolVLMProcessor`` writes a video of ``T`` frames as an intro line, then
every frame as an image of one tile after a timestamp line, then a blank line::

    You are provided the following series of {T in words} frames from a {H:MM:SS} [H:MM:SS] video.\\n
    \\nFrame from 00:00:<fake_token_around_image><global-img> + S x <image> + <fake_token_around_image>
    \\nFrame from 00:01:<fake_token_around_image><global-img> + S x <image> + <fake_token_around_image>
    ...\\n\\n

with ``S = image_seq_len = (image_size / patch_size)^2 / scale_factor^2`` (pixel-shuffled patches of the
frame, row-major). An image is either one such tile (``<global-img>``) or a grid of tiles, each run led
by ``<row_i_col_j>``, followed by a global tile. Frames and images share the ``<image>`` token and the
model gets no other input that tells them apart, so this adapter reads the text through the
processor's tokenizer (``framefusion.apply(model, config, processor=processor)``): a run of exactly
``S`` tokens led by ``<fake_token_around_image><global-img>`` is

- the next frame of the current video when the text between the previous frame's closing
  ``<fake_token_around_image>`` and its own is exactly a ``\\nFrame from mm:ss:`` line;
- the first frame of a new video when the text before it ends with the intro line's
  ``... video.\\n`` and a ``\\nFrame from mm:ss:`` line;
- otherwise an image (or an image's global tile): text.

Timestamps, separators and images stay text; the patch key of a frame token is its index in the tile.
The LLM is Llama (SmolLM2) with 1-D RoPE: the default probe and decode positions apply.

Geometry (pictures): a frame is one tile of ``vision_config.image_size`` pixels square (the processor
resizes the longest edge to it and pads the rest); the pixel shuffle folds each ``scale_factor`` x
``scale_factor`` block of patches into one token, row-major, so a token covers ``patch_size *
scale_factor`` pixels a side.

Chunked vision encoding (``frame_encoders``): frames reach the model as images in ``pixel_values``
``(samples, images, 3, H, W)``; ``get_image_features`` drops the all-zero padding images, builds each
image's patch mask and runs ``vision_model`` once over the real images (``(n, 3, H, W)`` with a ``(n, h,
w)`` patch mask), then the connector. ``SmolVLMVisionTransformer`` encodes each image alone: patch
convolution, position ids bucketed from that image's own patch mask, self-attention within the image
(masked by its own patches), LayerNorms; so its call is cut along the image dimension, the patch mask
alike. One caveat, not a mixing of frames: ``create_bidirectional_mask`` may drop a mask that is all
true for the whole call, so where a call mixes images with and without padded patches, a chunk of
unpadded images alone runs the unmasked kernel and may differ in the last bits.
"""

from __future__ import annotations

import re
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

__all__ = ["SmolVLMAdapter"]

_NEXT_FRAME = re.compile(r"\nFrame from \d+:\d\d:")
_FIRST_FRAME = re.compile(r"frames from a [^\n]* video\.\n\nFrame from \d+:\d\d:$")
_LABEL_TOKENS = 96  # tokens decoded before a first frame: the intro's end and the label, >= 1 character each


class SmolVLMAdapter(Adapter):
    family = "SmolVLM2"
    model_classes = ("SmolVLMForConditionalGeneration", "SmolVLMModel")
    checkpoints = (
        "HuggingFaceTB/SmolVLM2-2.2B-Instruct",
        "HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
        "HuggingFaceTB/SmolVLM2-256M-Video-Instruct",
    )

    def __init__(self, model, processor: Any = None):
        super().__init__(model, processor)
        self.tokenizer = self.label_tokenizer()
        self._fake = special_token_id(self.tokenizer, "fake_image_token", "<fake_token_around_image>")
        self._global = special_token_id(self.tokenizer, "global_image_token", "<global-img>")
        if self._fake is None or self._global is None:
            raise ValueError(
                "the tokenizer given to framefusion.apply has no <fake_token_around_image> / <global-img> tokens: "
                "pass the SmolVLM model's own processor"
            )

    @classmethod
    def frame_encoders(cls, model, frames: int) -> list[FrameEncoder]:
        tower = checked_encoder(cls.family, cls.base_of(model).vision_model, ("SmolVLMVisionTransformer",))
        return [images_along_dim0(tower)]

    def decoder_layers(self):
        return self._base().text_model.layers

    def text_config(self):
        return self._base().text_model.config

    def video_layouts(self, inputs: dict[str, Any]) -> list[VideoLayout] | None:
        input_ids = inputs.get("input_ids")
        if input_ids is None:
            return None
        base = self._base()
        per_frame = int(base.image_seq_len)
        device = input_ids.device
        is_image = input_ids == base.config.image_token_id
        edge = torch.nn.functional.pad(is_image.long(), (1, 1)).diff(dim=1)  # +1 where a run starts, -1 past its end
        layouts = []
        for b in range(input_ids.shape[0]):
            starts = (edge[b] == 1).nonzero(as_tuple=True)[0].tolist()
            ends = (edge[b] == -1).nonzero(as_tuple=True)[0].tolist()
            ids = input_ids[b].tolist()
            positions, frames, patches = [], [], []
            video, frame, prev_end = -1, -1, None  # frame: index of the last frame taken, -1 outside a video
            for start, end in zip(starts, ends):
                tile = (
                    end - start == per_frame
                    and start >= 2
                    and end < len(ids)
                    and ids[start - 2] == self._fake
                    and ids[start - 1] == self._global
                    and ids[end] == self._fake
                )
                label_from = 0 if prev_end is None else prev_end + 1  # after the previous run's closing token
                if (
                    tile
                    and frame >= 0
                    and start - 2 - label_from <= _LABEL_TOKENS  # every token spells at least one character
                    and _NEXT_FRAME.fullmatch(self.decode(ids[label_from : start - 2]))
                ):
                    frame += 1  # the next frame of the current video
                elif tile and _FIRST_FRAME.search(
                    self.decode(ids[max(label_from, start - 2 - _LABEL_TOKENS) : start - 2])
                ):
                    video, frame = video + 1, 0  # the first frame of a new video
                else:
                    frame = -1  # an image, an image's tile or an unlabelled tile: stays text
                if frame >= 0:
                    positions.append(torch.arange(start, end))
                    frames.append(torch.full((per_frame,), frame))
                    patches.append(torch.arange(per_frame) + video * per_frame)  # unique key per video
                prev_end = end
            layouts.append(VideoLayout.from_parts(positions, frames, patches, device))
        return layouts

    def video_grids(self, inputs: dict[str, Any], layouts: list[VideoLayout]) -> list[list[VideoGrid]]:
        base = self._base()
        per_frame = int(base.image_seq_len)
        vision = base.config.vision_config
        size, cell = int(vision.image_size), int(vision.patch_size) * int(base.config.scale_factor)
        side = size // cell  # tokens a side after the pixel shuffle
        if side * side != per_frame:
            raise ValueError(f"{self.family}: a frame of {side}x{side} tokens is not image_seq_len={per_frame}")
        return tile_grids(layouts, side, side, (size, size), (cell, cell))
