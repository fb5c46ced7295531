"""Tiny, fully offline Qwen2-VL / Qwen2.5-VL models, processors and synthetic videos.

Everything here is built in memory (no hub downloads): a byte-level BPE tokenizer with the
Qwen special tokens and a Qwen-style chat template, the real Qwen2-VL image/video processors
configured small, randomly initialised (seeded) models, and PyAV-based video helpers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from tokenizers import pre_tokenizers
from transformers import (
    GenerationConfig,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from ..tools.video import as_uint8_video, read_video

__all__ = [
    "FAMILIES",
    "SPECIAL_TOKENS",
    "TINY_CHAT_TEMPLATE",
    "WORDS",
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

FAMILIES: dict[str, tuple[type[ProcessorMixin], type[PreTrainedModel], type]] = {
    "qwen2_vl": (Qwen2VLProcessor, Qwen2VLForConditionalGeneration, Qwen2VLConfig),
    "qwen2_5_vl": (Qwen2_5_VLProcessor, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig),
}

# Same relative order as the real Qwen2-VL vocabulary; they get the last ids of the tiny vocab.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Words whose byte-level spellings (with and without a leading space) become BPE merges.
WORDS: tuple[str, ...] = (
    "the", "a", "an", "and", "of", "in", "is", "it", "to", "on", "this", "that", "what", "video",
    "image", "frame", "describe", "happening", "moves", "object", "red", "green", "blue", "circle",
    "square", "left", "right", "up", "down", "you", "are", "assistant", "user", "system", "helpful",
)  # fmt: skip

# Qwen-style ChatML template (written for this project): text, image and video content items.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'video' or 'video' in item %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in item %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A 112x112 frame stays 112x112 (8x8 patches of 14 -> 4x4 = 16 merged tokens per temporal patch);
# larger frames are shrunk to at most 224*224 pixels.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 224 * 224
_VISION_KW: dict[str, Any] = dict(
    patch_size=14, temporal_patch_size=2, merge_size=2, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS
)


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(FAMILIES)}")


def spelled_merges(vocab: dict[str, int], spellings: Iterable[str]) -> list[tuple[str, str]]:
    """Left-to-right BPE merges that build each spelling from its characters (new tokens go into vocab)."""
    merges: list[tuple[str, str]] = []
    for spelled in spellings:
        cur = spelled[0]
        for ch in spelled[1:]:
            if cur + ch not in vocab:
                vocab[cur + ch] = len(vocab)
                merges.append((cur, ch))
            cur += ch
    return merges


def byte_level_vocab(
    words: Iterable[str], special_tokens: Iterable[str], unspaced_first: Iterable[str] = ()
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of a small byte-level BPE: the 256 byte symbols, whole-word merges for
    ``words`` (space-prefixed spellings first: "Ġ" is the byte-level space, so " word" stays one
    token), then ``special_tokens`` with the last ids. ``unspaced_first`` are merged before all of
    them, without the space (words that must stay one token at the start of a line)."""
    words = tuple(words)
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges = spelled_merges(vocab, list(unspaced_first) + [f"\u0120{w}" for w in words] + list(words))
    for tok in special_tokens:
        vocab[tok] = len(vocab)
    return vocab, merges


def build_tiny_tokenizer(words: Iterable[str] = WORDS, unspaced_first: Iterable[str] = ()) -> Qwen2Tokenizer:
    """A byte-level BPE ``Qwen2Tokenizer`` (by default 499 tokens, last 7 special) with a Qwen chat
    template, in memory; ``words`` and ``unspaced_first`` as in :func:`byte_level_vocab`."""
    vocab, merges = byte_level_vocab(words, SPECIAL_TOKENS, unspaced_first)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|im_end|>")],
        padding_side="left",
        model_max_length=32768,
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def build_tiny_processor(
    family: str = "qwen2_vl", max_pixels: int = MAX_PIXELS, tokenizer: Qwen2Tokenizer | None = None
) -> Qwen2VLProcessor | Qwen2_5_VLProcessor:
    """A real Qwen2-VL / Qwen2.5-VL processor built offline (left padding, no fps frame sampling), around
    ``tokenizer`` (default: :func:`build_tiny_tokenizer`).

    Frames larger than ``max_pixels`` pixels are shrunk to fit.
    """
    _check_family(family)
    kw = dict(_VISION_KW, max_pixels=max_pixels)
    return FAMILIES[family][0](
        image_processor=Qwen2VLImageProcessor(**kw),
        tokenizer=tokenizer or build_tiny_tokenizer(),
        video_processor=Qwen2VLVideoProcessor(**kw, do_sample_frames=False, cap_pixels_per_frame=False),
        chat_template=TINY_CHAT_TEMPLATE,
    )


def tiny_token_ids(processor: Any = None) -> dict[str, int]:
    """Special-token ids (image, video, vision_start/end, im_start/end, endoftext, pad, eos) + vocab_size.

    ``processor`` may be a processor or a tokenizer; by default the tiny tokenizer is used.
    """
    tok = build_tiny_tokenizer() if processor is None else getattr(processor, "tokenizer", processor)
    ids = {
        name: tok.convert_tokens_to_ids(f"<|{name}|>")
        for name in ("vision_start", "vision_end", "im_start", "im_end", "endoftext")
    }
    ids.update(
        image=tok.convert_tokens_to_ids("<|image_pad|>"),
        video=tok.convert_tokens_to_ids("<|video_pad|>"),
        pad=tok.pad_token_id,
        eos=tok.eos_token_id,
        vocab_size=len(tok),
    )
    return ids


def _text_config(
    ids: dict[str, int],
    num_layers: int,
    hidden_size: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_size: int,
    rope_theta: float,
) -> dict[str, Any]:
    """The language model's config: its token ids from the tiny tokenizer (``ids``), M-RoPE sections
    splitting the rotary half of each head dim into (temporal, height, width)."""
    head_dim = hidden_size // num_heads
    if head_dim % 2 or hidden_size % num_heads:
        raise ValueError(f"hidden_size={hidden_size} / num_heads={num_heads} must give an even head_dim")
    half = head_dim // 2  # M-RoPE splits the rotary half-dim into (temporal, height, width)
    mrope_section = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    return dict(
        vocab_size=ids["vocab_size"],
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta, "mrope_section": mrope_section},
        bos_token_id=ids["endoftext"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
    )


def _vision_config(family: str, depth: int, hidden_size: int, embed_dim: int, heads: int) -> dict[str, Any]:
    """The vision tower's config: 14 px patches, temporal patches of 2 frames, 2 x 2 merging; Qwen2-VL's
    sized by ``embed_dim`` / ``heads``, Qwen2.5-VL's (windowed attention, last block full) fixed small."""
    vision_config: dict[str, Any] = dict(depth=depth, patch_size=14, temporal_patch_size=2, spatial_merge_size=2)
    if family == "qwen2_vl":
        vision_config.update(embed_dim=embed_dim, num_heads=heads, hidden_size=hidden_size, mlp_ratio=2)
    else:
        vision_config.update(
            num_heads=2,
            hidden_size=32,
            intermediate_size=64,
            out_hidden_size=hidden_size,
            window_size=112,
            fullatt_block_indexes=[depth - 1],
            tokens_per_second=2,
        )
    return vision_config


def build_tiny_model(
    family: str = "qwen2_vl",
    num_layers: int = 4,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    vision_depth: int = 1,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
    processor: ProcessorMixin | None = None,
    vision_embed_dim: int = 32,
    vision_heads: int = 2,
    rope_theta: float = 1_000_000.0,
) -> Qwen2VLForConditionalGeneration | Qwen2_5_VLForConditionalGeneration:
    """A randomly initialised (seeded) tiny VLM in eval mode whose token ids match the tiny processor.

    ``vision_embed_dim`` / ``vision_heads`` size the Qwen2-VL vision tower (Qwen2.5-VL keeps its own)."""
    _check_family(family)
    _, model_cls, config_cls = FAMILIES[family]
    ids = tiny_token_ids(processor)
    text_config = _text_config(ids, num_layers, hidden_size, num_heads, num_kv_heads, intermediate_size, rope_theta)
    vision_config = _vision_config(family, vision_depth, hidden_size, vision_embed_dim, vision_heads)
    config = config_cls(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
        tie_word_embeddings=False,
    )
    return seeded_model(
        model_cls,
        config,
        seed,
        attn_implementation,
        dtype,
        bos=ids["endoftext"],
        eos=[ids["eos"], ids["endoftext"]],
        pad=ids["pad"],
    )


def model_and_processor(build_model: Any, build_processor: Any) -> Any:
    """A ``build(num_layers, seed, attn_implementation, dtype, processor=None, **kwargs) -> (model, processor)``
    from a family's ``build_model(processor, ...)`` and ``build_processor()``."""

    def build(
        num_layers: int = 4,
        seed: int = 0,
        attn_implementation: str = "sdpa",
        dtype: torch.dtype = torch.float32,
        processor: Any = None,
        **kwargs: Any,
    ) -> tuple[Any, Any]:
        processor = processor or build_processor()
        model = build_model(
            processor, num_layers=num_layers, seed=seed, attn_implementation=attn_implementation, dtype=dtype, **kwargs
        )
        return model, processor

    build.__doc__ = f"``(model, processor)``; ``kwargs`` go to ``{build_model.__module__}.build_model``."
    return build


def seeded_model(
    model_cls: type,
    config: Any,
    seed: int,
    attn_implementation: str,
    dtype: torch.dtype,
    *,
    eos: list[int],
    pad: int,
    bos: int | None = None,
) -> PreTrainedModel:
    """``model_cls`` from ``config`` with weights drawn from ``seed`` (the global random state is left
    as it was), greedy generation stopping at ``eos``, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls._from_config(config, attn_implementation=attn_implementation, dtype=dtype)
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, do_sample=False)
    return model.eval()


def build_tiny(family: str = "qwen2_vl", **kwargs: Any) -> tuple[PreTrainedModel, ProcessorMixin]:
    """``(model, processor)`` for ``family``; ``kwargs`` go to :func:`build_tiny_model`."""
    processor = kwargs.pop("processor", None) or build_tiny_processor(family)
    return build_tiny_model(family, processor=processor, **kwargs), processor


# --------------------------------------------------------------------------------------------- videos


_PALETTE = ((230, 40, 40), (40, 200, 60), (40, 90, 240), (245, 220, 40), (240, 60, 220), (40, 220, 230))


def make_synthetic_video(num_frames: int = 16, size: int = 112, seed: int = 0, num_objects: int = 2) -> np.ndarray:
    """``(T, size, size, 3)`` uint8 frames: a still textured background plus smoothly moving shapes.

    The background is bit-identical in every frame, so pixels that no object covers are truly redundant.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    background = np.empty((size, size, 3), np.float32)
    for c in range(3):  # smooth stripes + a checkerboard of random tints
        fx, fy, phase = rng.uniform(1, 4), rng.uniform(1, 4), rng.uniform(0, 2 * np.pi)
        background[..., c] = 90 + 40 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
    cells = rng.integers(-25, 26, size=(8, 8, 3)).astype(np.float32)
    background += np.kron(cells, np.ones((size // 8 + 1, size // 8 + 1, 1)))[:size, :size]
    background = background.clip(0, 255).astype(np.uint8)

    frames = np.repeat(background[None], num_frames, axis=0)
    flip = rng.integers(0, 2, 2)
    for k in range(num_objects):
        color = np.array(_PALETTE[k % len(_PALETTE)], np.uint8)
        radius = rng.uniform(0.08, 0.14) * size
        start = rng.uniform(radius, 0.35 * size, 2)  # near a corner (a different one per object) ...
        start = np.where((np.array([k, k >> 1]) ^ flip) & 1, size - start, start)
        end = size - start  # ... moving to the opposite one
        is_square = k % 2 == 1
        for t in range(num_frames):
            cy, cx = start + (end - start) * (t / max(num_frames - 1, 1))
            dy, dx = np.abs(yy * size - cy), np.abs(xx * size - cx)
            mask = np.maximum(dy, dx) <= radius if is_square else dy**2 + dx**2 <= radius**2
            frames[t][mask] = color
    return frames


def write_video(frames: np.ndarray, path: str | Path, fps: int = 8) -> Path:
    """Encode ``(T, H, W, 3)`` frames to an H.264 (or MPEG-4 part 2) ``.mp4`` with PyAV (uint8, or
    any type :func:`framefusion.tools.video.as_uint8_video` accepts)."""
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"expected non-empty (T, H, W, 3) frames, got shape {frames.shape}")
    frames = as_uint8_video(frames, "frames")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        try:
            stream = container.add_stream("libx264", rate=fps)
            stream.options = {"crf": "18", "preset": "veryslow", "threads": "1"}
        except (ValueError, av.FFmpegError):  # no x264 in this PyAV build
            stream = container.add_stream("mpeg4", rate=fps)
            stream.bit_rate = 400_000
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def demo_video_path() -> Path:
    """Path of the shipped 16-frame 112x112 demo video (regenerate with ``scripts/make_demo_video.py``)."""
    return Path(__file__).resolve().parent.parent / "assets" / "demo.mp4"
