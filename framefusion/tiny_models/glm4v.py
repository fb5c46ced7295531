"""Tiny, fully offline GLM-4.1V (dense) and GLM-4.5V (MoE) models with the real GLM-4V processor.

Built in memory: a byte-level BPE ``TokenizersBackend`` (the class GLM-4V checkpoints load as)
with the GLM special tokens and a GLM-style chat template written for this project, the real
``Glm4vProcessor`` with its image and video processors configured small (patch 14, temporal patch
2, merge 2), and seeded random models.

A 112x112 frame stays 112x112: 8x8 patches, 4x4 = 16 tokens per temporal patch. The processor
writes a video as ``<|begin_of_video|>`` + per temporal patch ``<|begin_of_image|>`` + 16
``<|image|>`` tokens + ``<|end_of_image|>`` + the whole second of its timestamp as text +
``<|end_of_video|>``: video frames use the image token; ``mm_token_type_ids`` marks them 2.
"""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    Glm4vConfig,
    Glm4vForConditionalGeneration,
    Glm4vImageProcessor,
    Glm4vMoeConfig,
    Glm4vMoeForConditionalGeneration,
    Glm4vProcessor,
    Glm4vVideoProcessor,
    Glm46VConfig,
    Glm46VForConditionalGeneration,
    Glm46VImageProcessor,
    Glm46VProcessor,
    Glm46VVideoProcessor,
    TokenizersBackend,
)

from .qwen2_vl import byte_level_vocab, seeded_model

__all__ = ["SPECIAL_TOKENS", "VARIANTS", "build", "build_model", "build_processor", "build_tokenizer", "token_ids"]

#: "glm4v": GLM-4.1V (dense); "glm4v_moe": GLM-4.5V (MoE text model); "glm46v": GLM-4.6V classes (dense text model)
VARIANTS = ("glm4v", "glm4v_moe", "glm46v")

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "[gMASK]",
    "<sop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
)

_WORDS: tuple[str, ...] = (
    "the", "a", "what", "video", "image", "frame", "moves", "object", "red", "blue", "shape", "left", "right",
    "which", "way", "colour", "count", "and", "is", "this", "one", "same",
)  # fmt: skip

# GLM-style template (written for this project): text, image and video content items.
CHAT_TEMPLATE = (
    "[gMASK]<sop>"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item %}<|begin_of_image|><|image|><|end_of_image|>"
    "{% elif item['type'] == 'video' or 'video' in item %}<|begin_of_video|><|video|><|end_of_video|>"
    "{% elif 'text' in item %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_VISION_KW: dict[str, Any] = dict(patch_size=14, temporal_patch_size=2, merge_size=2)
# pixel budgets (video: over all frames); 16 frames of 112x112 fit
VIDEO_SIZE = {"shortest_edge": 2 * 56 * 56, "longest_edge": 16 * 112 * 112}
IMAGE_SIZE = {"shortest_edge": 2 * 56 * 56, "longest_edge": 2 * 112 * 112}  # counts the image twice (t = 2)


def build_tokenizer() -> TokenizersBackend:
    """A byte-level BPE tokenizer with the GLM-4V special tokens (padding on the left), in memory."""
    vocab, merges = byte_level_vocab(_WORDS, SPECIAL_TOKENS)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = TokenizersBackend(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t != "<|endoftext|>"],
        padding_side="left",
        model_max_length=32768,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_processor(variant: str = "glm4v") -> Glm4vProcessor | Glm46VProcessor:
    """The real GLM-4V (or GLM-4.6V) processor, small and offline (left padding, every frame kept)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown GLM-4V variant {variant!r}; expected one of {VARIANTS}")
    processor, image, video = (
        (Glm46VProcessor, Glm46VImageProcessor, Glm46VVideoProcessor)
        if variant == "glm46v"
        else (Glm4vProcessor, Glm4vImageProcessor, Glm4vVideoProcessor)
    )
    return processor(
        image_processor=image(**_VISION_KW, size=IMAGE_SIZE),
        tokenizer=build_tokenizer(),
        video_processor=video(**_VISION_KW, size=VIDEO_SIZE, do_sample_frames=False),
        chat_template=CHAT_TEMPLATE,
    )


def token_ids(processor: Any = None) -> dict[str, int]:
    tok = build_tokenizer() if processor is None else getattr(processor, "tokenizer", processor)
    ids = {t.strip("<|>[]"): tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    ids.update(pad=tok.pad_token_id, eos=tok.eos_token_id, vocab_size=len(tok))
    return ids


def _text_config(
    ids: dict[str, int], variant: str, num_layers: int, hidden_size: int, num_heads: int, num_kv_heads: int
) -> dict[str, Any]:
    """The language model's config: partial rotary over half the head dim (as in the checkpoints), M-RoPE
    (t, h, w) in ratio 8:12:12; GLM-4.5V's (``glm4v_moe``) with 4 routed experts and a shared one, its
    first layer dense."""
    head_dim = hidden_size // num_heads
    # partial rotary (half the head dim, as in the checkpoints); M-RoPE (t, h, w) in ratio 8:12:12
    rotary_half = head_dim // 4
    mrope_section = [rotary_half - 2 * (rotary_half * 3 // 8), rotary_half * 3 // 8, rotary_half * 3 // 8]
    text_config: dict[str, Any] = dict(
        vocab_size=ids["vocab_size"],
        hidden_size=hidden_size,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10_000.0,
            "mrope_section": mrope_section,
            "partial_rotary_factor": 0.5,
        },
        pad_token_id=ids["pad"],
    )
    if variant == "glm4v_moe":
        text_config.update(
            attention_bias=True,
            n_routed_experts=4,
            num_experts_per_tok=2,
            n_shared_experts=1,
            moe_intermediate_size=32,
            first_k_dense_replace=1,
            n_group=1,
            topk_group=1,
        )
    return text_config


def build_model(
    num_layers: int = 4,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
    variant: str = "glm4v",
    hidden_size: int = 64,
    num_heads: int = 2,
    num_kv_heads: int = 1,
    processor: Any = None,
) -> Glm4vForConditionalGeneration | Glm4vMoeForConditionalGeneration:
    """A seeded random tiny GLM-4.1V / GLM-4.5V / GLM-4.6V (see ``VARIANTS``) in eval mode."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown GLM-4V variant {variant!r}; expected one of {VARIANTS}")
    ids = token_ids(processor)
    text_config = _text_config(ids, variant, num_layers, hidden_size, num_heads, num_kv_heads)
    vision_config = dict(
        depth=1,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        image_size=112,
        out_hidden_size=hidden_size,
        **{k: v for k, v in _VISION_KW.items() if k != "merge_size"},
        spatial_merge_size=2,
    )
    config_cls, model_cls = {
        "glm4v": (Glm4vConfig, Glm4vForConditionalGeneration),
        "glm4v_moe": (Glm4vMoeConfig, Glm4vMoeForConditionalGeneration),
        "glm46v": (Glm46VConfig, Glm46VForConditionalGeneration),
    }[variant]
    if variant == "glm46v":  # sub-configs chosen by model type
        text_config["model_type"], vision_config["model_type"] = "glm4v_text", "glm4v_vision"
    config = config_cls(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        image_start_token_id=ids["begin_of_image"],
        image_end_token_id=ids["end_of_image"],
        video_start_token_id=ids["begin_of_video"],
        video_end_token_id=ids["end_of_video"],
        tie_word_embeddings=False,
    )
    eos = [ids["endoftext"], ids["user"], ids["observation"]]
    return seeded_model(model_cls, config, seed, attn_implementation, dtype, eos=eos, pad=ids["pad"])


def build(
    num_layers: int = 4,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
    **kwargs: Any,
) -> tuple[Glm4vForConditionalGeneration | Glm4vMoeForConditionalGeneration, Glm4vProcessor]:
    """``(model, processor)``; ``kwargs`` go to :func:`build_model` (``variant``)."""
    processor = kwargs.pop("processor", None) or build_processor(kwargs.get("variant", "glm4v"))
    model = build_model(num_layers, seed, attn_implementation, dtype, processor=processor, **kwargs)
    return model, processor
