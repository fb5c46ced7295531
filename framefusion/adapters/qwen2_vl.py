"""Qwen2-VL and Qwen2.5-VL.

Layout (transformers 5): each video is ``<|vision_start|>`` + a contiguous block of
``t * (h/m) * (w/m)`` video tokens + ``<|vision_end|>``, with ``(t, h, w) = video_grid_thw[i]`` in
patches and ``m`` the spatial merge size. Tokens are ordered temporal patch (2 frames), row,
column, so the frame of token ``j`` in its block is ``j // (h/m * w/m)`` and its patch is the rest.
Videos appear in ``video_grid_thw`` in sequence order, sample after sample.

Geometry (pictures): the processor resizes each frame to ``(h * p, w * p)`` pixels (``p`` the patch
size) and a token merges ``m x m`` patches, so token (row, col) of a frame covers the ``p*m`` pixel
square at (row, col); a frame is a temporal patch of ``temporal_patch_size`` (2) input frames.

Chunked vision encoding (:meth:`Qwen2VLAdapter.frame_encoders`): the vision tower encodes each temporal
patch on its own, so a long video can go through it a few temporal patches at a time.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import (
    Adapter,
    FrameEncoder,
    InstanceAttribute,
    VideoGrid,
    VideoLayout,
    grid_positions,
    split_videos,
    temporal_patches,
)

__all__ = ["Qwen2VLAdapter"]


class Qwen2VLAdapter(Adapter):
    family = "Qwen2-VL / Qwen2.5-VL"
    model_classes = (
        "Qwen2VLForConditionalGeneration",
        "Qwen2VLModel",
        "Qwen2_5_VLForConditionalGeneration",
        "Qwen2_5_VLModel",
    )
    checkpoints = (
        "Qwen/Qwen2-VL-7B-Instruct",
        "Qwen/Qwen2.5-VL-3B-Instruct",
        "Qwen/Qwen2.5-VL-7B-Instruct",
    )

    def install(self, record) -> list:
        # generate() runs the vision tower before the first forward and then passes
        # video_grid_thw=None to it; keep the grids from get_video_features.
        base = self._base()
        original = base.get_video_features

        def get_video_features(pixel_values_videos, video_grid_thw=None, *args, **kwargs):
            record("video_grid_thw", video_grid_thw)
            return original(pixel_values_videos, video_grid_thw, *args, **kwargs)

        return [InstanceAttribute(base, "get_video_features", get_video_features)]

    @classmethod
    def frame_encoders(cls, model, frames: int) -> list[FrameEncoder]:
        """``model.model.visual``, ``forward(hidden_states, grid_thw)``, cut into whole temporal patches.

        Read in transformers 5.23/5.24 (``get_video_features`` -> ``visual(pixel_values_videos,
        grid_thw=video_grid_thw)`` -> pooled features split per video; Qwen3-VL and GLM-4V: see their
        adapters): the flattened patches hold ``t * h * w`` rows per grid row, temporal patch after temporal
        patch; ``PatchEmbed`` is a Conv3d whose kernel and stride are one temporal patch
        (``temporal_patch_size`` frames x patch x patch), so it never reaches across temporal patches; the
        rotary positions are (h, w) only, the same for every t (``get_vision_position_ids`` repeats them t
        times); every block's attention is segmented per temporal patch (``get_vision_cu_seqlens`` with
        ``merge_temporal=False``: ``h * w`` per segment, ``t`` segments per row; sdpa/eager run each segment
        alone, flash attention takes the same boundaries); Qwen2.5-VL's window attention builds its windows
        inside each temporal patch (``get_vision_window_index`` reshapes to ``(t, h, w)`` and windows h and w
        only) and its full-attention blocks use the same per-temporal-patch segments; the norms, MLPs and the
        ``PatchMerger`` (``m x m`` neighbouring patches of one temporal patch) act per row. So a chunk of
        whole temporal patches gives exactly its rows of the one call's output.
        ``frames`` must be a multiple of ``temporal_patch_size`` (the tower encodes that many frames
        together); an image (t = 1) counts as one temporal patch."""
        base = cls.base_of(model)
        temporal = int(getattr(base.config.vision_config, "temporal_patch_size", 1) or 1)
        if frames % temporal:
            raise ValueError(
                f"frames={frames} is not a multiple of temporal_patch_size={temporal}: {cls.family}'s vision tower "
                f"encodes {temporal} frames together; pass a multiple of {temporal} "
                f"(e.g. {max(temporal, frames - frames % temporal)})"
            )
        return [temporal_patches(base.visual, temporal)]

    def _video_mask(self, inputs: dict[str, Any]) -> torch.Tensor:
        """(b, L) bool: the video tokens (frame content only)."""
        type_ids = inputs.get("mm_token_type_ids")
        if type_ids is not None:
            return type_ids == 2
        return inputs["input_ids"] == self._base().config.video_token_id

    def _check_video(self, sample: int, video: int, block: torch.Tensor, t: int, per_frame: int) -> None:
        """Check the positions of one video's tokens against its grid (families with stricter layouts)."""

    def video_layouts(self, inputs: dict[str, Any]) -> list[VideoLayout] | None:
        input_ids = inputs.get("input_ids")
        if input_ids is None:
            return None
        config = self._base().config
        grids = inputs.get("video_grid_thw")
        batch = input_ids.shape[0]
        device = input_ids.device
        if grids is None or len(grids) == 0:
            return [VideoLayout.empty(device) for _ in range(batch)]
        is_video = self._video_mask(inputs)
        merge = config.vision_config.spatial_merge_size
        grids = [tuple(int(v) for v in g) for g in grids.tolist()]
        layouts, video = [], 0
        for b in range(batch):
            positions = is_video[b].nonzero(as_tuple=True)[0]
            frames, patches, start = [], [], 0
            while start < positions.numel():
                if video >= len(grids):
                    raise ValueError(
                        f"sample {b} has more video tokens than video_grid_thw describes ({len(grids)} videos)"
                    )
                t, h, w = grids[video]
                per_frame = (h // merge) * (w // merge)
                count = t * per_frame
                self._check_video(b, video, positions[start : start + count], t, per_frame)
                local = torch.arange(count, device=device)
                frames.append(local // per_frame)
                patches.append(local % per_frame + video * (1 << 24))  # unique key per video
                start += count
                video += 1
            if start != positions.numel():
                raise ValueError(f"sample {b}: video tokens do not match video_grid_thw")
            if frames:
                layouts.append(VideoLayout(positions, torch.cat(frames), torch.cat(patches)))
            else:
                layouts.append(VideoLayout.empty(device))
        return layouts

    def video_grids(self, inputs: dict[str, Any], layouts: list[VideoLayout]) -> list[list[VideoGrid]]:
        grids = inputs.get("video_grid_thw")
        if grids is None:
            raise ValueError(f"{self.family}: the inputs carry no video_grid_thw, which the frame geometry needs")
        vision = self._base().config.vision_config
        patch, merge = int(vision.patch_size), int(vision.spatial_merge_size)
        temporal = int(getattr(vision, "temporal_patch_size", 1) or 1)
        thw = [tuple(int(v) for v in g) for g in grids.tolist()]  # per video: (t, h, w) in patches
        per_sample = []
        for layout in layouts:
            videos = []
            for video, tokens in split_videos(layout, lambda key: key >> 24):  # keys: cell + video << 24
                t, h, w = thw[video]
                rows, cols = h // merge, w // merge
                within = layout.patch[tokens] & ((1 << 24) - 1)  # (n,) cell index in the frame, row-major
                positions = grid_positions(layout, tokens, within, rows * cols)
                videos.append(
                    VideoGrid(t, rows, cols, (h * patch, w * patch), (patch * merge, patch * merge),
                              positions, positions[:0], temporal)
                )  # fmt: skip
            per_sample.append(videos)
        return per_sample
