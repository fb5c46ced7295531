"""Adapters: one small class per model family saying where the video tokens are."""

from __future__ import annotations

from torch import nn

from .base import Adapter, VideoGrid, VideoLayout
from .glm4v import Glm4vAdapter
from .internvl import InternVLAdapter
from .llava_video import LlavaNextVideoAdapter, LlavaOnevisionAdapter, VideoLlavaAdapter
from .qwen2_vl import Qwen2VLAdapter
from .qwen3_vl import Qwen3VLAdapter
from .smolvlm import SmolVLMAdapter

__all__ = ["ADAPTERS", "Adapter", "UnsupportedModelError", "VideoGrid", "VideoLayout", "adapter_for", "supported_models"]

ADAPTERS: list[type[Adapter]] = [
    Qwen2VLAdapter,
    Qwen3VLAdapter,
    Glm4vAdapter,
    LlavaOnevisionAdapter,
    LlavaNextVideoAdapter,
    VideoLlavaAdapter,
    InternVLAdapter,
    SmolVLMAdapter,
]


class UnsupportedModelError(TypeError):
    pass


def supported_models() -> list[str]:
    return [name for a in ADAPTERS for name in a.model_classes]


def adapter_for(model: nn.Module, processor=None) -> Adapter:
    for cls in ADAPTERS:
        if cls.matches(model):
            return cls(model, processor)
    supported = ", ".join(f"{a.family} ({', '.join(a.model_classes)})" for a in ADAPTERS)
    raise UnsupportedModelError(
        f"framefusion does not support {type(model).__name__}. Supported: {supported}. "
        "To add a family, write an Adapter: see docs/adding_a_family.md "
        "(worked example: framefusion/adapters/qwen2_vl.py)."
    )
