import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

from framefusion.tiny_models import build_tiny_processor, make_synthetic_video  # noqa: E402

FAMILIES = ["qwen2_vl", "qwen2_5_vl"]


@pytest.fixture(scope="session")
def processors():
    return {f: build_tiny_processor(f) for f in FAMILIES}


@pytest.fixture(scope="session")
def videos():
    """Synthetic videos: still background, moving shapes (real adjacent-frame redundancy)."""
    return {
        16: make_synthetic_video(num_frames=16, size=112, seed=0),
        8: make_synthetic_video(num_frames=8, size=112, seed=1, num_objects=3),
        2: make_synthetic_video(num_frames=2, size=112, seed=2),
    }


def chat(processor, question: str, media: str | None = "video") -> str:
    content = ([{"type": media}] if media else []) + [{"type": "text", "text": question}]
    return processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )


def make_inputs(processor, questions, videos=None, images=None, media="video"):
    texts = [chat(processor, q, media) for q in questions]
    kwargs = {}
    if videos is not None:
        kwargs["videos"] = videos
    if images is not None:
        kwargs["images"] = images
    return processor(text=texts, padding=True, return_tensors="pt", **kwargs)


def greedy(model, inputs, n=4):
    """Greedy generation of exactly n tokens; returns (tokens, per-step logits (b, n, vocab))."""
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    prompt = inputs["input_ids"].shape[1]
    return out.sequences[:, prompt:], torch.stack(out.logits, dim=1)


def batch_equals_alone(model, handle, processor, questions, clips, n=3):
    """Greedy-decode the batch of (question, clip) pairs, then each alone, with ``handle``'s method
    applied; asserts every sample alone gets its batch row's tokens-per-layer, tokens and logits.
    Returns (batch report, last sample's inputs, its tokens, its logits, its report)."""
    batch_tokens, batch_logits = greedy(model, make_inputs(processor, questions, videos=clips), n=n)
    batch = handle.last_report()
    for b in range(len(questions)):
        single = make_inputs(processor, questions[b : b + 1], videos=clips[b : b + 1])
        tokens, logits = greedy(model, single, n=n)
        report = handle.last_report()
        assert report.vision_tokens_per_layer[0] == batch.vision_tokens_per_layer[b]
        assert torch.equal(tokens, batch_tokens[b : b + 1])
        torch.testing.assert_close(logits, batch_logits[b : b + 1], atol=1e-4, rtol=1e-4)
    return batch, single, tokens, logits, report


def extend_inputs(inputs, generated):
    """Prompt + generated tokens as one cache-free input (per-token tensors padded with zeros)."""
    out = dict(inputs)
    length = inputs["input_ids"].shape[1]
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.ndim == 2 and value.shape[1] == length:
            fill = torch.ones_like(generated) if key == "attention_mask" else torch.zeros_like(generated)
            out[key] = torch.cat([value, generated if key == "input_ids" else fill.to(value.dtype)], dim=1)
    return out


def replay_logits(model, inputs, tokens, decisions, processor=None, counts=None):
    """Cache-free last-position logits of prompt + tokens[:, :i] for each i, with the recorded
    decisions replayed (b, n, vocab). ``counts``, when given, must equal every replay's tokens per layer."""
    import framefusion
    from framefusion import Replay

    logits = []
    with framefusion.apply(model, Replay(decisions), processor=processor) as replay, torch.no_grad():
        for i in range(tokens.shape[1]):
            logits.append(model(**extend_inputs(inputs, tokens[:, :i]), use_cache=False).logits[:, -1])
            if counts is not None:
                assert replay.last_report().vision_tokens_per_layer == counts
    return torch.stack(logits, dim=1)


def conversation_inputs(processor, conversations, videos=None, images=None):
    """A left-padded batch of chat-template conversations (see :func:`user_message`)."""
    texts = [processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
    kwargs = {"videos": videos} if videos else {}
    if images:
        kwargs["images"] = images
    return processor(text=texts, padding=True, return_tensors="pt", **kwargs)


def user_message(*items):
    """One user turn: "video" and "image" are media placeholders, anything else is text."""
    content = [{"type": i} if i in ("video", "image") else {"type": "text", "text": i} for i in items]
    return [{"role": "user", "content": content}]


def probe_and_eager_attention(model, adapter, inputs):
    """Per decoder layer ``(cos, probs, eager)``: the last query's attention over all keys from the
    adapter's probe, and from the layer's own eager attention weights (the model must use eager)."""
    layers = adapter.decoder_layers()
    captured = {}

    def capture(module, args, kwargs):
        captured[module] = (args[0] if args else kwargs["hidden_states"], kwargs["position_embeddings"])

    hooks = [layer.register_forward_pre_hook(capture, with_kwargs=True) for layer in layers]
    try:
        with torch.no_grad():
            attentions = model(**inputs, output_attentions=True).attentions
    finally:
        for hook in hooks:
            hook.remove()
    assert len(attentions) == len(layers)
    out = []
    for layer, attention in zip(layers, attentions):
        hidden, (cos, sin) = captured[layer]
        last = torch.full((hidden.shape[0],), hidden.shape[1] - 1)
        with torch.no_grad():
            q, k, scaling = adapter.attention_probe(layer, hidden, cos, sin, last)
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        out.append((cos, (torch.einsum("bhd,bhld->bhl", q, k) * scaling).softmax(-1), attention[:, :, -1]))
    return out


def random_image(width=112, height=112, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def media_message(*items):
    """One user turn from text strings and ("video", frames) / ("image", pixels) pairs, in order."""
    content = [{"type": "text", "text": i} if isinstance(i, str) else {"type": i[0], i[0]: i[1]} for i in items]
    return [{"role": "user", "content": content}]


def encode_conversations(processor, conversations, **processor_kwargs):
    """Conversations with their media inside, through the processor's chat template (left padded)."""
    return processor.apply_chat_template(
        conversations,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True, **processor_kwargs},
    )
