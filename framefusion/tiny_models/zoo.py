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

from . import glm4v, internvl, qwen3_vl, smolvlm
from ..tools.video import as_uint8_video
from .qwen2_vl import build_tiny
from .llava_video import build_tiny_llava_video

__all__ = ["TINY_FAMILIES", "build", "video_inputs", "video_message"]

TINY_FAMILIES: dict[str, Callable[..., tuple[Any, Any]]] = {
    "qwen2_vl": partial(build_tiny, "qwen2_vl"),
    "qwen2_5_vl": partial(build_tiny, "qwen2_5_vl"),
    "qwen3_vl": qwen3_vl.build,
    "glm4v": glm4v.build,
    "internvl": internvl.build,
    "llava_onevision": partial(build_tiny_llava_video, "llava_onevision"),
    "llava_next_video": partial(build_tiny_llava_video, "llava_next_video"),
    "video_llava": partial(build_tiny_llava_video, "video_llava"),
    "smolvlm": smolvlm.build,
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
    """A left-padded batch (one conversation per question) through the processor's chat template.

    Raises ``ValueError`` naming the video and what is accepted for a video that is not ``(T, H, W, 3)``
    frames with ``T >= 1``, whose values are not uint8 RGB (floats in [0, 1] are converted, see
    :func:`framefusion.tools.video.as_uint8_video`), or that the processor rejects (too few frames, extreme
    aspect ratio, ...).
    """
    if len(questions) != len(videos):
        raise ValueError(
            f"got {len(questions)} questions and {len(videos)} videos; pass one video (or None) per question"
        )
    for i, video in enumerate(videos):
        shape = tuple(getattr(video, "shape", ()))
        if video is not None and (len(shape) != 4 or shape[-1] != 3 or min(shape) < 1):
            raise ValueError(
                f"video {i} has shape {shape}; expected (T, H, W, 3) RGB frames with T >= 1 frames and H, W >= 1 "
                "pixels (a single frame is video[None])"
            )
    videos = [None if v is None else as_uint8_video(v, f"video {i}") for i, v in enumerate(videos)]
    conversations = [video_message(q, v) for q, v in zip(questions, videos)]
    try:
        return processor.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
        )
    except (ValueError, RuntimeError, IndexError, ZeroDivisionError) as err:
        shapes = [tuple(v.shape) for v in videos if v is not None]
        if not shapes:
            raise
        raise ValueError(
            f"{type(processor).__name__} rejected videos of shape {shapes} (T, H, W, 3): {str(err).rstrip('.')}. "
            f"Its video settings: {_video_settings(processor)}"
        ) from err


def _video_settings(processor: Any) -> str:
    """The video processor settings that bound frame counts and sizes, as ``name=value`` pairs."""
    vp = getattr(processor, "video_processor", None)
    if vp is None:
        return "unknown (no video_processor)"
    parts = []
    if getattr(vp, "do_sample_frames", False):
        parts += [
            f"samples num_frames={vp.num_frames} (needs at least that many)" if vp.num_frames else f"fps={vp.fps}"
        ]
    for name in ("temporal_patch_size", "patch_size", "merge_size", "size", "crop_size", "max_image_size"):
        value = getattr(vp, name, None)
        if value is not None:
            if hasattr(value, "__dataclass_fields__") or isinstance(value, dict):
                items = value.items() if isinstance(value, dict) else vars(value).items()
                value = "{" + ", ".join(f"{k}={v}" for k, v in items if v is not None) + "}"
            parts.append(f"{name}={value}")
    return ", ".join(parts) or "none recorded"
