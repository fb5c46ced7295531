"""Tiny, fully offline Qwen3-VL (dense and MoE) models with the real Qwen3-VL processor.

The tokenizer and chat template are the tiny Qwen ones (same special tokens as the Qwen3-VL
vocabulary); the processor is the real ``Qwen3VLProcessor`` with the real Qwen3-VL video processor
(patch 16, temporal patch 2, merge 2) and the Qwen2-VL image processor, as in the checkpoints.

A 112x112 frame is resized to 128x128 (multiples of 32): 8x8 patches, 4x4 = 16 tokens per temporal
patch. The processor writes each temporal patch as ``<t seconds><|vision_start|>`` + 16 video
tokens + ``<|vision_end|>`` (frames given as arrays have no fps: it assumes 24 and warns once).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMoeConfig,
    Qwen3VLMoeForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from .qwen2_vl import TINY_CHAT_TEMPLATE, build_tiny_tokenizer, seeded_model, tiny_token_ids

__all__ = ["build", "build_model", "build_processor"]

PATCH = 16
MERGE = 2
# Video pixel budget over all frames (t * h * w); 16 frames of 128x128 fit.
VIDEO_MIN_PIXELS = 2 * 32 * 32
VIDEO_MAX_PIXELS = 16 * 128 * 128
IMAGE_MIN_PIXELS = 32 * 32
IMAGE_MAX_PIXELS = 128 * 128


def build_processor(max_pixels: int = VIDEO_MAX_PIXELS) -> Qwen3VLProcessor:
    """The real Qwen3-VL processor, small and offline (left padding, every frame kept)."""
    tokenizer = build_tiny_tokenizer()
    image_processor = Qwen2VLImageProcessor(
        patch_size=PATCH,
        temporal_patch_size=2,
        merge_size=MERGE,
        size={"shortest_edge": IMAGE_MIN_PIXELS, "longest_edge": IMAGE_MAX_PIXELS},
    )
    video_processor = Qwen3VLVideoProcessor(
        patch_size=PATCH,
        temporal_patch_size=2,
        merge_size=MERGE,
        size={"shortest_edge": VIDEO_MIN_PIXELS, "longest_edge": max_pixels},
        do_sample_frames=False,
        cap_pixels_per_frame=False,
    )
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=TINY_CHAT_TEMPLATE,
    )


def _text_config(
    ids: dict[str, int], num_layers: int, hidden_size: int, num_heads: int, num_kv_heads: int, moe: bool
) -> dict[str, Any]:
    """The language model's config (dense, or 4 experts with 2 per token when ``moe``): interleaved
    M-RoPE whose (t, h, w) shares of the rotary half-dim follow the real [24, 20, 20] of 64."""
    head_dim = hidden_size // num_heads
    half = head_dim // 2  # interleaved M-RoPE: (t, h, w) shares of the rotary half-dim, as [24, 20, 20] of 64
    mrope_section = [half - 2 * (half * 5 // 16), half * 5 // 16, half * 5 // 16]
    text_config: dict[str, Any] = dict(
        vocab_size=ids["vocab_size"],
        hidden_size=hidden_size,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,
        max_position_embeddings=4096,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": mrope_section,
            "mrope_interleaved": True,
        },
        bos_token_id=ids["endoftext"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
    )
    if moe:
        text_config.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1)
    return text_config


def _vision_config(deepstack_layers: int, hidden_size: int) -> dict[str, Any]:
    """The vision tower's config: one block per deepstack layer (at least one), each feeding its output
    to the decoder layer of the same index; 16 px patches merged 2 x 2."""
    return dict(
        depth=max(1, deepstack_layers),
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        patch_size=PATCH,
        temporal_patch_size=2,
        spatial_merge_size=MERGE,
        out_hidden_size=hidden_size,
        num_position_embeddings=64,  # an 8x8 learned grid, interpolated to each frame
        deepstack_visual_indexes=list(range(deepstack_layers)),
    )


def build_model(
    num_layers: int = 4,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
    deepstack_layers: int = 1,
    moe: bool = False,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    processor: Any = None,
) -> Qwen3VLForConditionalGeneration | Qwen3VLMoeForConditionalGeneration:
    """A seeded random tiny Qwen3-VL in eval mode. ``deepstack_layers`` vision blocks feed the first
    as many decoder layers (the real models use 3)."""
    ids = tiny_token_ids(processor)
    text_config = _text_config(ids, num_layers, hidden_size, num_heads, num_kv_heads, moe)
    vision_config = _vision_config(deepstack_layers, hidden_size)
    config_cls, model_cls = (
        (Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration)
        if moe
        else (Qwen3VLConfig, Qwen3VLForConditionalGeneration)
    )
    config = config_cls(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
        tie_word_embeddings=False,
    )
    eos = [ids["eos"], ids["endoftext"]]
    return seeded_model(
        model_cls, config, seed, attn_implementation, dtype, bos=ids["endoftext"], eos=eos, pad=ids["pad"]
    )


def build(
    num_layers: int = 4,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
    **kwargs: Any,
) -> tuple[Qwen3VLForConditionalGeneration | Qwen3VLMoeForConditionalGeneration, Qwen3VLProcessor]:
    """``(model, processor)``; ``kwargs`` go to :func:`build_model` (``deepstack_layers``, ``moe``)."""
    processor = kwargs.pop("processor", None) or build_processor()
    model = build_model(num_layers, seed, attn_implementation, dtype, processor=processor, **kwargs)
    return model, processor
