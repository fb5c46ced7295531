"""Tiny, fully offline InternVL (transformers format, ``InternVLForConditionalGeneration``).

Built in memory, no hub downloads: a byte-level BPE ``Qwen2Tokenizer`` carrying InternVL's named
special tokens (``<img>``, ``</img>``, ``<IMG_CONTEXT>``, ``<video>``) and an InternVL-style chat
template, the real ``InternVLProcessor`` with a real ``GotOcr2ImageProcessor`` and
``InternVLVideoProcessor`` configured for 112x112 tiles, and a randomly initialised (seeded) model
whose LLM is Qwen2 (InternVL3) or Qwen3 (InternVL3.5).

A 112x112 tile is 8x8 vision patches of 14, pixel-shuffled by 0.5 to 4x4 = 16 LLM tokens, so
``image_seq_length`` is 16. Video frames are tiles too: the processor writes every frame as
``Frame{i}: <img>`` + 16 ``<IMG_CONTEXT>`` + ``</img>``, frames joined by ``\\n``.

Videos keep all their frames. ``InternVLProcessor`` (transformers 5.23) stacks the videos of one
call, so it rejects a batch whose videos have different frame counts; :class:`TinyInternVLProcessor`
(the real class with one addition) processes such a batch one conversation at a time and left-pads
the result, which is what the real class returns for batches it accepts.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    BatchFeature,
    GotOcr2ImageProcessor,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    InternVLVideoProcessor,
    Qwen2Tokenizer,
)

from .qwen2_vl import byte_level_vocab, model_and_processor, seeded_model

__all__ = [
    "TILE",
    "TOKENS_PER_TILE",
    "TinyInternVLProcessor",
    "build",
    "build_model",
    "build_processor",
    "build_tokenizer",
]

TILE = 112  # tile / frame side in pixels
PATCH = 14
TOKENS_PER_TILE = (TILE // PATCH // 2) ** 2  # 16 after the 0.5 pixel shuffle

# Named special tokens, as the InternVL tokenizers name them (InternVLProcessor reads these names).
NAMED_TOKENS: dict[str, str] = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", *NAMED_TOKENS.values())

_WORDS: tuple[str, ...] = (
    "the", "a", "an", "and", "of", "in", "is", "it", "to", "on", "this", "that", "what", "which", "video",
    "image", "Frame", "frame", "describe", "moves", "object", "shape", "red", "green", "blue", "left", "right",
    "user", "assistant", "system", "count", "colour",
)  # fmt: skip

# InternVL-style ChatML template (written for this project): an image item becomes "<IMG_CONTEXT>\n" and a
# video item "<video>\n"; the processor expands both.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif item['type'] == 'video' %}<video>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer() -> Qwen2Tokenizer:
    """A byte-level BPE ``Qwen2Tokenizer`` with InternVL's special tokens, left padding, in memory."""
    vocab, merges = byte_level_vocab(_WORDS, SPECIAL_TOKENS)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=dict(NAMED_TOKENS),  # also sets tokenizer.start_image_token(_id) etc.
        padding_side="left",
        model_max_length=32768,
    )
    tokenizer.add_tokens(["<|im_start|>"], special_tokens=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


class TinyInternVLProcessor(InternVLProcessor):
    """``InternVLProcessor`` that also accepts a batch of videos with different frame counts.

    Such a batch is processed one conversation at a time, then left-padded (``input_ids``,
    ``attention_mask``, ``pixel_values``). The videos of one conversation still need equal frame counts.
    """

    def __call__(self, images=None, text=None, videos=None, **kwargs) -> BatchFeature:
        texts = [text] if isinstance(text, str) else text
        if videos is None or texts is None or len(texts) < 2 or len({len(v) for v in _flat(videos)}) < 2:
            return super().__call__(images=images, text=text, videos=videos, **kwargs)
        per_images = _per_sample(images, texts, self.image_token)
        per_videos = _per_sample(videos, texts, self.video_token)
        kwargs = {k: v for k, v in kwargs.items() if k not in ("padding", "return_tensors")}
        parts = [
            super(TinyInternVLProcessor, self).__call__(
                images=im or None, text=[t], videos=vid or None, return_tensors="pt", **kwargs
            )
            for t, im, vid in zip(texts, per_images, per_videos)
        ]
        batch = self.tokenizer.pad(
            {key: [p[key][0].tolist() for p in parts] for key in ("input_ids", "attention_mask")},
            padding=True,
            return_tensors="pt",
        )
        pixels = [p["pixel_values"] for p in parts if "pixel_values" in p]
        if pixels:
            batch["pixel_values"] = torch.cat(pixels)
        return BatchFeature(dict(batch))


def _flat(items) -> list:
    """Media of a call: a flat list, or one list per conversation (as ``apply_chat_template`` passes them)."""
    items = items if isinstance(items, (list, tuple)) else [items]
    if items and all(isinstance(x, (list, tuple)) for x in items):
        return [m for x in items for m in x]
    return list(items)


def _per_sample(items, texts: list[str], placeholder: str) -> list[list]:
    """Split media into one list per text: nested lists as given, a flat list by placeholder counts."""
    if items is None:
        return [[] for _ in texts]
    items = items if isinstance(items, (list, tuple)) else [items]
    if len(items) == len(texts) and all(isinstance(x, (list, tuple)) for x in items):
        return [list(x) for x in items]
    out, i = [], 0
    for t in texts:
        n = t.count(placeholder)
        out.append(list(items[i : i + n]))
        i += n
    return out


def build_processor(max_patches: int = 4) -> TinyInternVLProcessor:
    """The real InternVL processing (see :class:`TinyInternVLProcessor`): 112x112 tiles of 16 tokens, images
    cut into at most ``max_patches`` tiles (plus a thumbnail), videos with all their frames."""
    size = {"height": TILE, "width": TILE}
    return TinyInternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=True, max_patches=max_patches),
        tokenizer=build_tokenizer(),
        video_processor=InternVLVideoProcessor(size=size),
        image_seq_length=TOKENS_PER_TILE,
        chat_template=CHAT_TEMPLATE,
    )


def build_model(
    processor: InternVLProcessor | None = None,
    num_layers: int = 4,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    text_model: str = "qwen2",
    seed: int = 0,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
) -> InternVLForConditionalGeneration:
    """A randomly initialised (seeded) tiny InternVL in eval mode; ``text_model`` "qwen2" (InternVL3) or
    "qwen3" (InternVL3.5)."""
    if text_model not in ("qwen2", "qwen3"):
        raise ValueError(f"text_model must be 'qwen2' or 'qwen3', got {text_model!r}")
    tokenizer = (processor or build_processor()).tokenizer
    text_config: dict[str, Any] = dict(
        model_type=text_model,
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if text_model == "qwen3":
        text_config["head_dim"] = hidden_size // num_heads
    vision_config = dict(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=TILE,
        patch_size=PATCH,
    )
    config = InternVLConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.context_image_token_id,
        image_seq_length=TOKENS_PER_TILE,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )
    return seeded_model(
        InternVLForConditionalGeneration,
        config,
        seed,
        attn_implementation,
        dtype,
        bos=tokenizer.pad_token_id,
        eos=[tokenizer.eos_token_id, tokenizer.pad_token_id],
        pad=tokenizer.pad_token_id,
    )


build = model_and_processor(build_model, build_processor)
