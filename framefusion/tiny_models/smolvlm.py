"""Tiny, fully offline SmolVLM2 (``SmolVLMForConditionalGeneration``).

Built in memory, no hub downloads: a byte-level BPE ``GPT2Tokenizer`` (SmolLM2's tokenizer class)
carrying SmolVLM's named special tokens (``<fake_token_around_image>``, ``<image>``, ``<global-img>``,
``<end_of_utterance>``, ``<row_i_col_j>``), the real ``SmolVLMProcessor`` with a real
``SmolVLMImageProcessor`` and ``SmolVLMVideoProcessor`` configured for 112x112 tiles and the chat
template transformers uses for SmolVLM videos, and a randomly initialised (seeded) model whose LLM
is Llama (as SmolLM2).

A 112x112 tile is 8x8 vision patches of 14, pixel-shuffled by a scale factor of 2 to 4x4 = 16 LLM
tokens (``image_seq_len``). Every video frame is one tile after a ``\\nFrame from mm:ss:`` line;
images larger than a tile are cut into a grid of tiles plus a global tile. Videos keep all their
frames (no sampling); :class:`TinySmolVLMProcessor` (the real class with one fix) gives a video in a
batch the text it gets alone. The processor needs the ``num2words`` package (the frame count is written in
words). Without video metadata the processor assumes 24 fps, so the timestamps of short clips all
read ``00:00``; pass ``video_metadata`` to the processor for real ones.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    GPT2Tokenizer,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMImageProcessor,
    SmolVLMProcessor,
    SmolVLMVideoProcessor,
)
from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

from .qwen2_vl import byte_level_vocab, model_and_processor, seeded_model

__all__ = [
    "TILE",
    "TOKENS_PER_TILE",
    "TinySmolVLMProcessor",
    "build",
    "build_model",
    "build_processor",
    "build_tokenizer",
]

TILE = 112  # frame / image tile side in pixels
PATCH = 14
SCALE = 2  # pixel shuffle
TOKENS_PER_TILE = (TILE // PATCH // SCALE) ** 2  # 16

# Named special tokens, as the SmolVLM tokenizers name them (SmolVLMProcessor reads these names).
NAMED_TOKENS: dict[str, str] = {
    "fake_image_token": "<fake_token_around_image>",
    "image_token": "<image>",
    "global_image_token": "<global-img>",
    "end_of_utterance_token": "<end_of_utterance>",
}
GRID_TOKENS: tuple[str, ...] = tuple(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7))
SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", *NAMED_TOKENS.values(), *GRID_TOKENS)

_WORDS: tuple[str, ...] = (
    "the", "a", "an", "and", "of", "in", "is", "it", "to", "on", "this", "that", "what", "which", "video",
    "image", "Frame", "frame", "frames", "from", "You", "are", "provided", "following", "series", "User",
    "Assistant", "moves", "shape", "red", "green", "blue", "left", "right", "count", "colour",
)  # fmt: skip


def build_tokenizer() -> GPT2Tokenizer:
    """A byte-level BPE ``GPT2Tokenizer`` with SmolVLM's special tokens, left padding, in memory."""
    vocab, merges = byte_level_vocab(_WORDS, SPECIAL_TOKENS)
    tokenizer = GPT2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<|endoftext|>",
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
        extra_special_tokens=dict(NAMED_TOKENS),  # also sets tokenizer.image_token(_id) etc.
        padding_side="left",
        model_max_length=32768,
    )
    tokenizer.add_tokens(list(GRID_TOKENS), special_tokens=True)
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


class TinySmolVLMProcessor(SmolVLMProcessor):
    """``SmolVLMProcessor`` whose video intro line counts each video's own frames.

    transformers 5.23 writes the frame count of the longest video of the call (the length of the
    padded ``pixel_values``) into every video's intro, so in a batch a shorter video's text differs
    from the text it gets alone ("sixteen frames" before its eight frames). This class gives every
    video the text it gets alone; nothing else changes.
    """

    def replace_video_token(self, video_inputs, video_idx: int, **kwargs) -> str:
        metadata = video_inputs["video_metadata"][video_idx]
        frames = len(metadata.frames_indices) if metadata.frames_indices is not None else metadata.total_num_frames
        own = dict(video_inputs, pixel_values=video_inputs["pixel_values"][:, :frames])
        return super().replace_video_token(own, video_idx, **kwargs)


def build_processor(max_tiles_side: int = 2) -> SmolVLMProcessor:
    """The real SmolVLM processing: 112x112 tiles of 16 tokens; images cut into at most
    ``max_tiles_side`` x ``max_tiles_side`` tiles (plus a global one); videos with all their frames."""
    tile = {"longest_edge": TILE}
    return TinySmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(
            size={"longest_edge": TILE * max_tiles_side}, max_image_size=tile, do_image_splitting=True
        ),
        tokenizer=build_tokenizer(),
        video_processor=SmolVLMVideoProcessor(size=tile, max_image_size=tile, do_sample_frames=False),
        image_seq_len=TOKENS_PER_TILE,
        chat_template=DEFAULT_CHAT_TEMPLATE,
    )


def build_model(
    processor: SmolVLMProcessor | None = None,
    num_layers: int = 4,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
) -> SmolVLMForConditionalGeneration:
    """A randomly initialised (seeded) tiny SmolVLM2 in eval mode whose token ids match the processor."""
    tokenizer = (processor or build_processor()).tokenizer
    text_config: dict[str, Any] = dict(
        model_type="llama",
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 100_000.0},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=TILE,
        patch_size=PATCH,
    )
    config = SmolVLMConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.image_token_id,
        scale_factor=SCALE,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return seeded_model(
        SmolVLMForConditionalGeneration,
        config,
        seed,
        attn_implementation,
        dtype,
        bos=tokenizer.bos_token_id,
        eos=[tokenizer.eos_token_id, tokenizer.pad_token_id],
        pad=tokenizer.pad_token_id,
    )


build = model_and_processor(build_model, build_processor)
