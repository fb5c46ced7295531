"""Tiny, fully offline LLaVA video models: LLaVA-OneVision / LLaVA-Video, LLaVA-NeXT-Video, Video-LLaVA.

Everything is built in memory (no hub downloads): a small tokenizer of the family's real class
(``Qwen2Tokenizer`` for OneVision, ``LlamaTokenizer`` for the Llama-based two) with the ``<image>`` /
``<video>`` placeholders, a chat template written for this project in the family's prompt style, the
family's real image and video processors configured for small frames, and randomly initialised
(seeded) models.

The video processors sample a fixed number of frames (8, like the real Video-LLaVA and LLaVA-NeXT-Video
setups): these models stack all videos of a batch into one ``(videos, frames, 3, H, W)`` tensor, so
clips of different lengths can only share a batch once sampled to the same length.

Video tokens per frame with the defaults (14-pixel patches): OneVision, 112x112 frames, 8x8 patches
pooled bilinearly to 4x4 = 16, plus one newline token per video; NeXT-Video, 112x112 frames, 8x8
patches average-pooled to 4x4 = 16; Video-LLaVA, 56x56 frames, 1 + 4x4 = 17 (a CLS token, then the
patches).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlamaTokenizer,
    LlavaNextImageProcessor,
    LlavaNextVideoConfig,
    LlavaNextVideoForConditionalGeneration,
    LlavaNextVideoProcessor,
    LlavaNextVideoVideoProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2Config,
    Qwen2Tokenizer,
    SiglipVisionConfig,
    VideoLlavaConfig,
    VideoLlavaForConditionalGeneration,
    VideoLlavaImageProcessor,
    VideoLlavaProcessor,
    VideoLlavaVideoProcessor,
)

from .qwen2_vl import byte_level_vocab, seeded_model, spelled_merges

__all__ = [
    "FAMILIES",
    "FRAME_SIZES",
    "NUM_FRAMES",
    "build_tiny_llava_video",
    "build_tiny_llava_video_model",
    "build_tiny_llava_video_processor",
]

FAMILIES = ("llava_onevision", "llava_next_video", "video_llava")

# Frame side in pixels: 8x8 patches of 14 pooled to 4x4, and for Video-LLaVA (no pooling) 4x4 patches.
FRAME_SIZES = {"llava_onevision": 112, "llava_next_video": 112, "video_llava": 56}
PATCH_SIZE = 14
NUM_FRAMES = 8  # frames sampled from every video

# Words whose spellings become BPE merges (with and without a leading space marker).
_WORDS = (
    "the", "a", "and", "of", "in", "is", "it", "to", "this", "that", "what", "which", "where", "video",
    "image", "frame", "shape", "red", "green", "blue", "moves", "move", "left", "right", "count", "colour",
    "one", "first", "user", "assistant", "system", "does", "go", "object", "fastest", "just", "text",
)  # fmt: skip

# ChatML in the OneVision style: media placeholders, then the text, inside each turn.
_ONEVISION_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'video' %}<video>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Vicuna style ("USER: <video>\nquestion ASSISTANT:"), as the Llama-based LLaVA video models use.
_VICUNA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'video' %}<video>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% else %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {list(FAMILIES)}")


def _qwen_tokenizer() -> Qwen2Tokenizer:
    """Byte-level BPE ``Qwen2Tokenizer`` with ChatML tokens and the ``<image>`` / ``<video>`` placeholders."""
    vocab, merges = byte_level_vocab(_WORDS, ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"))
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=["<|im_start|>", "<image>", "<video>"],
        padding_side="left",
        model_max_length=32768,
    )
    tokenizer.chat_template = _ONEVISION_TEMPLATE
    return tokenizer


def _llama_tokenizer() -> LlamaTokenizer:
    """SentencePiece-style ``LlamaTokenizer`` (byte fallback, "▁" word marker) with ``<image>``, ``<video>``, ``<pad>``."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for ch in "\u2581" + "".join(chr(c) for c in range(33, 127)):
        vocab.setdefault(ch, len(vocab))
    merges = spelled_merges(vocab, [f"\u2581{w}" for w in _WORDS + ("USER", "ASSISTANT")] + list(_WORDS))
    tokenizer = LlamaTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        add_bos_token=True,
        extra_special_tokens=["<image>", "<video>"],
        padding_side="left",
        model_max_length=32768,
    )
    tokenizer.chat_template = _VICUNA_TEMPLATE
    return tokenizer


def build_tiny_llava_video_processor(
    family: str = "llava_onevision", num_frames: int = NUM_FRAMES, frame_size: int | None = None
) -> ProcessorMixin:
    """The family's real processor built offline: ``frame_size`` square frames (a multiple of the 14-pixel
    patch; default ``FRAME_SIZES[family]``), ``num_frames`` sampled per video, left padding."""
    _check_family(family)
    frame_size = frame_size or FRAME_SIZES[family]
    square = {"height": frame_size, "width": frame_size}
    sampling: dict[str, Any] = dict(do_sample_frames=True, num_frames=num_frames)
    if family == "llava_onevision":
        tokenizer = _qwen_tokenizer()
        pinpoints = [[frame_size * i, frame_size * j] for i in (1, 2) for j in (1, 2)]
        return LlavaOnevisionProcessor(
            image_processor=LlavaOnevisionImageProcessor(size=square, image_grid_pinpoints=pinpoints),
            tokenizer=tokenizer,
            video_processor=LlavaOnevisionVideoProcessor(size=square, **sampling),
            num_image_tokens=(frame_size // PATCH_SIZE) ** 2,
            vision_feature_select_strategy="full",
            chat_template=_ONEVISION_TEMPLATE,
        )
    tokenizer = _llama_tokenizer()
    clip = dict(size={"shortest_edge": frame_size}, crop_size=square)
    if family == "llava_next_video":
        pinpoints = [[frame_size, frame_size * 2], [frame_size * 2, frame_size], [frame_size * 2, frame_size * 2]]
        return LlavaNextVideoProcessor(
            video_processor=LlavaNextVideoVideoProcessor(**clip, **sampling),
            image_processor=LlavaNextImageProcessor(**clip, image_grid_pinpoints=pinpoints),
            tokenizer=tokenizer,
            chat_template=_VICUNA_TEMPLATE,
            patch_size=PATCH_SIZE,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
        )
    return VideoLlavaProcessor(
        image_processor=VideoLlavaImageProcessor(**clip),
        video_processor=VideoLlavaVideoProcessor(**clip, **sampling),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_VICUNA_TEMPLATE,
    )


def _text_config(
    tokenizer: Any, num_layers: int, hidden_size: int, num_heads: int, num_kv_heads: int, intermediate_size: int
) -> dict[str, Any]:
    """Keyword arguments of the language model's config (Qwen2 or Llama), its special ids from ``tokenizer``."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def _family_config(
    family: str, text: dict[str, Any], frame_size: int, tokenizer: Any, pinpoints: Any
) -> tuple[Any, type]:
    """``(config, model class)`` of ``family``: a 2-layer vision tower (SigLIP for OneVision, CLIP
    otherwise) on ``frame_size`` px frames of ``PATCH_SIZE`` px patches, and the family's own text model;
    ``pinpoints`` are the image processor's tiling resolutions (None without a processor)."""
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=frame_size,
        patch_size=PATCH_SIZE,
    )
    grid = frame_size // PATCH_SIZE  # patches a side
    image_id, video_id = tokenizer.convert_tokens_to_ids("<image>"), tokenizer.convert_tokens_to_ids("<video>")
    ids = dict(image_token_id=image_id, video_token_id=video_id, tie_word_embeddings=False)
    if family == "llava_onevision":
        config = LlavaOnevisionConfig(
            text_config=Qwen2Config(**text, rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0}),
            vision_config=SiglipVisionConfig(**vision, vision_use_head=False),
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            image_grid_pinpoints=pinpoints,
            **ids,
        )
        return config, LlavaOnevisionForConditionalGeneration
    if family == "llava_next_video":
        config = LlavaNextVideoConfig(
            text_config=LlamaConfig(**text),
            vision_config=CLIPVisionConfig(**vision),
            image_grid_pinpoints=pinpoints,
            image_seq_length=grid * grid,
            video_seq_length=(grid // 2) ** 2 * NUM_FRAMES,  # pooled 2 x 2 per frame
            **ids,
        )
        return config, LlavaNextVideoForConditionalGeneration
    config = VideoLlavaConfig(
        text_config=LlamaConfig(**text),
        vision_config=CLIPVisionConfig(**vision),
        image_seq_length=grid * grid,
        video_seq_length=(grid * grid + 1) * NUM_FRAMES,  # every frame's patches and its CLS token
        **ids,
    )
    return config, VideoLlavaForConditionalGeneration


def build_tiny_llava_video_model(
    family: str = "llava_onevision",
    num_layers: int = 4,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    frame_size: int | None = None,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
    processor: ProcessorMixin | None = None,
) -> PreTrainedModel:
    """A randomly initialised (seeded) tiny model in eval mode whose token ids match ``processor``.

    ``frame_size`` is the vision tower's image size (the processor's frame size; default ``FRAME_SIZES[family]``).
    """
    _check_family(family)
    frame_size = frame_size or FRAME_SIZES[family]
    tokenizer = (processor or build_tiny_llava_video_processor(family)).tokenizer
    text = _text_config(tokenizer, num_layers, hidden_size, num_heads, num_kv_heads, intermediate_size)
    pinpoints = getattr(processor.image_processor, "image_grid_pinpoints", None) if processor else None  # image tiling
    config, model_cls = _family_config(family, text, frame_size, tokenizer, pinpoints)
    eos = [tokenizer.eos_token_id] + ([tokenizer.pad_token_id] if family == "llava_onevision" else [])
    return seeded_model(
        model_cls,
        config,
        seed,
        attn_implementation,
        dtype,
        bos=tokenizer.bos_token_id,
        eos=eos,
        pad=tokenizer.pad_token_id,
    )


def build_tiny_llava_video(
    family: str = "llava_onevision",
    num_layers: int = 4,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
    **kwargs: Any,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """``(model, processor)`` of the tiny ``family`` model (the zoo's builder signature)."""
    processor = kwargs.pop("processor", None) or build_tiny_llava_video_processor(family)
    model = build_tiny_llava_video_model(
        family,
        num_layers=num_layers,
        seed=seed,
        attn_implementation=attn_implementation,
        dtype=dtype,
        processor=processor,
        **kwargs,
    )
    return model, processor
