"""LLaVA video models: LLaVA-OneVision / LLaVA-Video, LLaVA-NeXT-Video and Video-LLaVA.

All three put each video in the LLM input as one contiguous run of ``<video>`` tokens (token id
``config.video_token_id``), frame after frame, each frame's tokens in row-major patch order, with a
fixed number of tokens per frame that follows from the vision config (``g = image_size // patch_size``
patches a side):

- LLaVA-OneVision / LLaVA-Video: the g x g grid is pooled bilinearly to ``ceil(g/2)`` a side; ONE
  extra token (the learned ``image_newline``) ends the whole video, after the last frame.
- LLaVA-NeXT-Video: the grid is pooled with stride ``spatial_pool_stride`` (``g // stride`` a side);
  nothing else.
- Video-LLaVA: each frame is the CLIP CLS token followed by all g x g patches.

The newline and CLS tokens carry no spatial patch, so they are left out of the layout and stay text.
A frame's patch key is its index within the frame, offset per video. Runs are split into videos with
the frames per video (all videos of a batch share it: the models take one stacked
``(videos, frames, 3, H, W)`` tensor); ``generate`` encodes the videos before the first forward and
passes ``pixel_values_videos=None``, so :meth:`install` records the shape from ``get_video_features``.
The language models (Qwen2, Llama) use 1-D RoPE: the default decode positions and attention probe fit.

Geometry (pictures): a processed frame is ``image_size`` pixels square (resized, or, for NeXT-Video and
Video-LLaVA, resized and centre-cropped); the vision tower's ``g x g`` patches of ``patch_size`` pixels
cover its top-left ``g * patch_size`` pixels, and a pooled token covers ``g * patch_size / side`` of
them a side (``side`` tokens a side: 28 px for OneVision's 27 -> 14 in 384 px, 28 px for NeXT-Video's
stride 2, 14 px for Video-LLaVA). The newline and CLS tokens are the video's non-grid tokens.

Chunked vision encoding (``frame_encoders``): ``get_video_features(pixel_values_videos)`` takes
``(videos, frames, 3, H, W)``, flattens it to ``videos * frames`` images and runs the vision tower once
(``vision_tower``, Video-LLaVA's ``video_tower``), then selects a layer's hidden states, projects and
pools (OneVision: bilinear to ceil(g/2), then ONE ``image_newline`` per video appended; NeXT-Video:
average pooling; Video-LLaVA: none). The towers of these checkpoints are SigLIP (OneVision, LLaVA-Video)
and CLIP (NeXT-Video, Video-LLaVA): plain ViTs over a batch of images, each image its own sequence
(patch convolution, learned position embedding of the fixed grid, unmasked self-attention within the
image, LayerNorms; SigLIP's optional pooling head attends within its image), so frames are independent
and the tower's call is cut along its batch dimension; projection, pooling and the newline stay in
``get_video_features``, after the tower, once per call. A tower of another class is refused.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from .base import (
    Adapter,
    FrameEncoder,
    InstanceAttribute,
    VideoGrid,
    VideoLayout,
    checked_encoder,
    grid_positions,
    images_along_dim0,
    split_videos,
)

__all__ = ["LlavaNextVideoAdapter", "LlavaOnevisionAdapter", "VideoLlavaAdapter"]

_RECORD = "llava_video_shape"  # (videos, frames per video) of the last get_video_features call


class _LlavaVideoAdapter(Adapter):
    """Shared logic; subclasses say how many tokens a frame has and which ones are not patches."""

    #: tokens before the patches of every frame (Video-LLaVA's CLS)
    frame_prefix = 0
    #: tokens after the last frame of every video (OneVision's newline)
    video_suffix = 0

    def _grid(self) -> int:
        vision = self._base().config.vision_config
        return vision.image_size // vision.patch_size

    #: the base model's vision encoders that frames go through
    frame_towers: tuple[str, ...] = ("vision_tower",)
    #: encoder classes read and tested to encode each image of a batch alone
    frame_tower_classes: tuple[str, ...] = ("SiglipVisionModel", "CLIPVisionModel")

    @classmethod
    def frame_encoders(cls, model, frames: int) -> list[FrameEncoder]:
        base = cls.base_of(model)
        return [images_along_dim0(checked_encoder(cls.family, getattr(base, name), cls.frame_tower_classes))
                for name in cls.frame_towers]  # fmt: skip

    def patches_per_frame(self) -> int:
        """Spatial patches (video tokens that are frame content) per frame."""
        raise NotImplementedError

    def install(self, record) -> list:
        # generate() runs get_video_features before the first forward and then passes the pixels as
        # None; keep (videos, frames) to split runs of adjacent videos. functools.wraps keeps the
        # signature generate() inspects to pick the encoder's arguments.
        base = self._base()
        original = base.get_video_features

        @functools.wraps(original)
        def get_video_features(pixel_values_videos, *args, **kwargs):
            if isinstance(pixel_values_videos, torch.Tensor) and pixel_values_videos.ndim == 5:
                record(_RECORD, tuple(pixel_values_videos.shape[:2]))
            return original(pixel_values_videos, *args, **kwargs)

        return [InstanceAttribute(base, "get_video_features", get_video_features)]

    def tokens_per_side(self) -> int:
        """Rows (= columns) of a frame's token grid."""
        return math.isqrt(self.patches_per_frame())

    def video_grids(self, inputs: dict[str, Any], layouts: list[VideoLayout]) -> list[list[VideoGrid]]:
        vision = self._base().config.vision_config
        size, side = int(vision.image_size), self.tokens_per_side()
        cell = self._grid() * int(vision.patch_size) / side  # pixels a side of one token's box
        is_video = inputs["input_ids"] == self._base().config.video_token_id  # (b, L)
        per_sample = []
        for b, layout in enumerate(layouts):
            videos = []
            for _, tokens in split_videos(layout, lambda key: key >> 24):  # keys: cell + video << 24
                within = layout.patch[tokens] & ((1 << 24) - 1)  # (n,) cell index in the frame, row-major
                positions = grid_positions(layout, tokens, within, side * side)
                videos.append(
                    VideoGrid(int(layout.frame[tokens].max()) + 1, side, side, (size, size), (cell, cell),
                              positions, self._non_grid(is_video[b], positions), 1)
                )  # fmt: skip
            per_sample.append(videos)
        return per_sample

    def _non_grid(self, is_video: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Positions of the video's placeholders that are no cell: CLS before each frame, the newline after
        the video. ``is_video`` (L,) marks the row's placeholders; ``positions`` are the video's cells."""
        first = int(positions.min()) - self.frame_prefix
        last = int(positions.max()) + self.video_suffix
        span = torch.arange(first, last + 1, device=positions.device)
        span = span[is_video[first : last + 1]]
        return span[~torch.isin(span, positions)]

    def _frames_per_video(self, inputs: dict[str, Any], total: int) -> int | None:
        """Frames of each video: from the pixels of a plain forward, else from the recorded shape if it
        accounts for all ``total`` video tokens of the batch; None if unknown."""
        pixels = inputs.get("pixel_values_videos")
        if isinstance(pixels, torch.Tensor) and pixels.ndim == 5:
            return int(pixels.shape[1])
        shape = inputs.get(_RECORD)
        if shape is not None:
            videos, frames = shape
            if videos * self._video_length(frames) == total:
                return frames
        return None

    def _video_length(self, frames: int) -> int:
        return frames * (self.frame_prefix + self.patches_per_frame()) + self.video_suffix

    def video_layouts(self, inputs: dict[str, Any]) -> list[VideoLayout] | None:
        input_ids = inputs.get("input_ids")
        if input_ids is None:
            return None
        device = input_ids.device
        is_video = input_ids == self._base().config.video_token_id
        frames = self._frames_per_video(inputs, int(is_video.sum()))
        per_frame = self.frame_prefix + self.patches_per_frame()
        layouts, video = [], 0
        for b in range(input_ids.shape[0]):
            positions = is_video[b].nonzero(as_tuple=True)[0]
            if positions.numel() == 0:
                layouts.append(VideoLayout.empty(device))
                continue
            # contiguous runs of video tokens; one run holds one or more whole videos
            breaks = (positions.diff() != 1).nonzero(as_tuple=True)[0] + 1
            bounds = [0, *breaks.tolist(), positions.numel()]
            keep, frame_of, patch_of = [], [], []
            for start, end in zip(bounds, bounds[1:]):
                run = end - start
                size = self._video_length(frames) if frames is not None else run
                n_frames = (size - self.video_suffix) // per_frame
                if run % size or self._video_length(n_frames) != size or n_frames < 1:
                    raise ValueError(
                        f"sample {b}: a run of {run} video tokens is not a whole number of videos of "
                        f"{per_frame} tokens per frame"
                        + ("" if self.video_suffix == 0 else f" plus {self.video_suffix} per video")
                    )
                local = torch.arange(size, device=device)
                within = local % per_frame
                content = (local < n_frames * per_frame) & (within >= self.frame_prefix)
                for first in range(start, end, size):
                    keep.append(positions[first : first + size][content])
                    frame_of.append((local // per_frame)[content])
                    patch_of.append((within - self.frame_prefix)[content] + video * (1 << 24))  # unique per video
                    video += 1
            layouts.append(VideoLayout(torch.cat(keep), torch.cat(frame_of), torch.cat(patch_of)))
        return layouts


class LlavaOnevisionAdapter(_LlavaVideoAdapter):
    family = "LLaVA-OneVision / LLaVA-Video"
    model_classes = ("LlavaOnevisionForConditionalGeneration", "LlavaOnevisionModel")
    checkpoints = (
        "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
        "llava-hf/llava-onevision-qwen2-7b-ov-hf",
        "llava-hf/LLaVA-Video-7B-Qwen2-hf",
    )
    video_suffix = 1  # image_newline after the whole video

    def patches_per_frame(self) -> int:
        return math.ceil(self._grid() / 2) ** 2  # bilinear pooling to ceil(g/2) a side


class LlavaNextVideoAdapter(_LlavaVideoAdapter):
    family = "LLaVA-NeXT-Video"
    model_classes = ("LlavaNextVideoForConditionalGeneration", "LlavaNextVideoModel")
    checkpoints = ("llava-hf/LLaVA-NeXT-Video-7B-hf", "llava-hf/LLaVA-NeXT-Video-7B-DPO-hf")

    def patches_per_frame(self) -> int:
        return (self._grid() // self._base().config.spatial_pool_stride) ** 2  # pooling, kernel = stride


class VideoLlavaAdapter(_LlavaVideoAdapter):
    family = "Video-LLaVA"
    model_classes = ("VideoLlavaForConditionalGeneration", "VideoLlavaModel")
    checkpoints = ("LanguageBind/Video-LLaVA-7B-hf",)
    frame_prefix = 1  # the CLIP CLS token opens every frame
    frame_towers = ("video_tower", "image_tower")

    def patches_per_frame(self) -> int:
        return self._grid() ** 2

