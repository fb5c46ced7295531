"""GLM-4.1V (dense), GLM-4.5V (MoE) and GLM-4.6V.

Layout (transformers 5): a video of ``t`` temporal patches (2 frames each) is written as
``<|begin_of_video|>`` + per temporal patch ``<|begin_of_image|>`` + ``(h/m) * (w/m)`` tokens +
``<|end_of_image|>`` + its timestamp as text + ``<|end_of_video|>``, with ``(t, h, w) =
video_grid_thw[i]``. Video frames use the *image* token; only their place between the video start
and end tokens (``mm_token_type_ids == 2``) tells them from image tokens. Block ``f`` is frame ``f``
and tokens in a block are ordered row, column: the Qwen3-VL layout with other separators.

Positions (3-D M-RoPE with one grid per block), decode positions (cache length + ``rope_deltas``)
and generate() passing ``video_grid_thw=None`` are as in Qwen2-VL. No deepstack: every layer is
reducible. The attention differs from Llama's: RoPE covers only part of the head dim
(``partial_rotary_factor``), and GLM-4.1V rotates interleaved pairs while GLM-4.5V rotates halves;
the probe applies the layer's own RoPE function.

Chunked vision encoding (``frame_encoders``, inherited): ``get_video_features`` turns each video's grid
row ``(t, h, w)`` into ``t`` rows ``(1, h, w)`` and runs ``visual`` once over all of them, so the tower
sees every temporal patch as an image: Conv3d patch embedding over one temporal patch, rotary (h, w)
positions, attention segmented per row by ``cu_seqlens``, the learned position embedding resampled
(bicubic ``grid_sample``) from each row's own (h, w) and patch coordinates, and RMS norms, the 2x2
``downsample`` convolution and the merger on patches of one row. Rows are independent; the chunks pack
whole rows (GLM-4.1V, GLM-4.5V and GLM-4.6V share this tower).
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from .qwen3_vl import Qwen3VLAdapter

__all__ = ["Glm4vAdapter"]


class Glm4vAdapter(Qwen3VLAdapter):
    family = "GLM-4.1V / GLM-4.5V / GLM-4.6V"
    model_classes = (
        "Glm4vForConditionalGeneration",
        "Glm4vModel",
        "Glm4vMoeForConditionalGeneration",
        "Glm4vMoeModel",
        "Glm46VForConditionalGeneration",
        "Glm46VModel",
    )
    checkpoints = (
        "zai-org/GLM-4.1V-9B-Thinking",
        "zai-org/GLM-4.1V-9B-Base",
        "zai-org/GLM-4.5V",
        "zai-org/GLM-4.6V",
        "zai-org/GLM-4.6V-Flash",
    )

    def first_reducible_layer(self, inputs: dict[str, Any]) -> int:
        return 0

    def _video_mask(self, inputs: dict[str, Any]) -> torch.Tensor:
        type_ids = inputs.get("mm_token_type_ids")
        if type_ids is not None:
            return type_ids == 2
        # as the processor marks them: image tokens between a video start and a video end
        config = self._base().config
        ids = inputs["input_ids"]
        inside = (ids == config.video_start_token_id).cumsum(1) > (ids == config.video_end_token_id).cumsum(1)
        return inside & (ids == config.image_token_id)

    def attention_probe(
        self, layer: nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, last: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        attn = layer.self_attn
        rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb  # (q, k, cos, sin) -> (q, k)
        x = layer.input_layernorm(hidden)
        b, length, _ = x.shape
        rows = torch.arange(b, device=x.device)
        q = attn.q_proj(x[rows, last][:, None]).view(b, 1, -1, attn.head_dim).transpose(1, 2)  # (b, h, 1, d)
        k = attn.k_proj(x).view(b, length, -1, attn.head_dim).transpose(1, 2)  # (b, kv, L, d)
        q, _ = rope(q, q, cos[rows, last][:, None], sin[rows, last][:, None])
        _, k = rope(k, k, cos, sin)
        return q[:, :, 0], k, float(attn.scaling)
