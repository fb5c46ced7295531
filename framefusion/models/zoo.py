"""Tiny offline models of every supported family (random, seeded weights; real processors).

Used by the conformance suite, the demo and the benchmarks. Every builder has the signature
``build(num_layers=4, seed=0, attn_implementation="sdpa", dtype=torch.float32) -> (model, processor)``
and returns a processor that pads on the left and whose chat template accepts
``{"type": "video", "video": frames}`` items, frames being a ``(T, H, W, 3)`` uint8 array.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import numpy as np

from . import tiny_glm4v, tiny_internvl, tiny_qwen3_vl
from .tiny import build_tiny
from .tiny_llava_video import build_tiny_llava_video

__all__ = ["TINY_FAMILIES", "build", "video_inputs", "video_message"]

TINY_FAMILIES: dict[str, Callable[..., tuple[Any, Any]]] = {
    "qwen2_vl": partial(build_tiny, "qwen2_vl"),
    "qwen2_5_vl": partial(build_tiny, "qwen2_5_vl"),
    "qwen3_vl": tiny_qwen3_vl.build,
    "glm4v": tiny_glm4v.build,
    "internvl": tiny_internvl.build,
    "llava_onevision": partial(build_tiny_llava_video, "llava_onevision"),
    "llava_next_video": partial(build_tiny_llava_video, "llava_next_video"),
    "video_llava": partial(build_tiny_llava_video, "video_llava"),
}


def build(family: str, **kwargs: Any) -> tuple[Any, Any]:
    """``(model, processor)`` of the tiny model of ``family`` (see ``TINY_FAMILIES``)."""
    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; available: {sorted(TINY_FAMILIES)}")
    return TINY_FAMILIES[family](**kwargs)


def video_message(question: str, video: np.ndarray | None) -> list[dict]:
    content = ([{"type": "video", "video": video}] if video is not None else []) + [{"type": "text", "text": question}]
    return [{"role": "user", "content": content}]


def video_inputs(processor: Any, questions: Sequence[str], videos: Sequence[np.ndarray | None]):
    """A left-padded batch (one conversation per question) through the processor's chat template."""
    conversations = [video_message(q, v) for q, v in zip(questions, videos)]
    return processor.apply_chat_template(
        conversations,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
    )
