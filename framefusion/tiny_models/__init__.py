"""Model helpers: tiny offline Qwen2-VL / Qwen2.5-VL models, processors and synthetic videos."""

from .qwen2_vl import (
    FAMILIES,
    SPECIAL_TOKENS,
    TINY_CHAT_TEMPLATE,
    build_tiny,
    build_tiny_model,
    build_tiny_processor,
    build_tiny_tokenizer,
    demo_video_path,
    make_synthetic_video,
    read_video,
    tiny_token_ids,
    write_video,
)

__all__ = [
    "FAMILIES",
    "SPECIAL_TOKENS",
    "TINY_CHAT_TEMPLATE",
    "build_tiny",
    "build_tiny_model",
    "build_tiny_processor",
    "build_tiny_tokenizer",
    "demo_video_path",
    "make_synthetic_video",
    "read_video",
    "tiny_token_ids",
    "write_video",
]
