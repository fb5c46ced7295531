"""Qwen3-VL (dense and MoE).

Layout (transformers 5): a video of ``t`` temporal patches (2 frames each) is written as ``t``
blocks ``<x.y seconds><|vision_start|>`` + ``(h/m) * (w/m)`` video tokens + ``<|vision_end|>``,
with ``(t, h, w) = video_grid_thw[i]`` in patches and ``m`` the spatial merge size; tokens in a
block are ordered row, column. Block ``f`` of a video is its frame ``f``; the timestamp text and
vision start/end tokens between blocks stay text. Videos appear in ``video_grid_thw`` in sequence
order, sample after sample.

Deepstack: the outputs of some vision blocks are added to the video (and image) tokens after each
of the first ``len(vision_config.deepstack_visual_indexes)`` decoder layers, through a mask of the
full sequence length, so no token may be removed before the layer after them.

Positions (interleaved 3-D M-RoPE, ``get_rope_index`` with one grid per block), the decode
positions without position_ids (cache length + ``rope_deltas``), and generate() passing
``video_grid_thw=None`` to the forward once it has run the vision tower are as in Qwen2-VL.
The attention is Qwen3's (q_norm/k_norm per head before RoPE, rotate-half RoPE with cos/sin of the
full head dim, scaling head_dim**-0.5): the default probe.

Chunked vision encoding (``frame_encoders``, inherited): ``get_video_features`` is
``get_image_features(pixel_values_videos, video_grid_thw)``, which runs ``visual`` once and returns the
pooled features and the deepstack features (one ``(tokens, dim)`` tensor per deepstack layer, from the
blocks listed in ``deepstack_visual_indexes``), both split per video. The tower is Qwen2-VL's in what
matters: Conv3d patch embedding over one temporal patch, rotary (h, w) positions repeated over t, attention
segmented per temporal patch by ``cu_seqlens``; its learned position embedding is resampled from the
(h, w) of the grid only (``get_vision_interpolation_indices_and_weights``: a patch's taps depend on its
place within its frame, the same for every t), and the deepstack mergers, like the final merger, act on
``m x m`` patches of one temporal patch. Every output row therefore depends on its own temporal patch
only, and a chunk of whole temporal patches gives its rows of every output, deepstack included.
"""

from __future__ import annotations

from typing import Any

import torch

from .qwen2_vl import Qwen2VLAdapter

__all__ = ["Qwen3VLAdapter"]


class Qwen3VLAdapter(Qwen2VLAdapter):
    family = "Qwen3-VL"
    model_classes = (
        "Qwen3VLForConditionalGeneration",
        "Qwen3VLModel",
        "Qwen3VLMoeForConditionalGeneration",
        "Qwen3VLMoeModel",
    )
    checkpoints = (
        "Qwen/Qwen3-VL-2B-Instruct",
        "Qwen/Qwen3-VL-4B-Instruct",
        "Qwen/Qwen3-VL-8B-Instruct",
        "Qwen/Qwen3-VL-32B-Instruct",
        "Qwen/Qwen3-VL-30B-A3B-Instruct",
        "Qwen/Qwen3-VL-235B-A22B-Instruct",
    )

    def first_reducible_layer(self, inputs: dict[str, Any]) -> int:
        # The language model adds deepstack feature i after decoder layer i.
        config = self._base().config
        deepstack = len(getattr(config.vision_config, "deepstack_visual_indexes", None) or ())
        return min(deepstack, config.get_text_config().num_hidden_layers)

    def _check_video(self, sample: int, video: int, block: torch.Tensor, t: int, per_frame: int) -> None:
        # one contiguous run of tokens per temporal patch, timestamp text between the runs
        if block.numel() < t * per_frame:
            raise ValueError(f"sample {sample}: video tokens do not match video_grid_thw")
        block = block.view(t, per_frame)
        if bool((block[:, -1] - block[:, 0] != per_frame - 1).any()):
            raise ValueError(f"sample {sample}: a temporal patch of video {video} is not one block of tokens")
