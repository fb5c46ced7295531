"""Qwen3-VL specifics: per-temporal-patch blocks with timestamp text, deepstack layers, the probe.

The generic checks are in test_conformance.py (family "qwen3_vl")."""

import re

import pytest
import torch
from conftest import conversation_inputs, greedy, replay_logits, user_message

import framefusion
from framefusion import FrameFusionConfig
from framefusion.adapters import adapter_for
from framefusion.adapters.qwen3_vl import Qwen3VLAdapter
from framefusion.tiny_models import qwen3_vl as tiny_qwen3_vl
from framefusion.tiny_models.zoo import video_inputs

_MODELS: dict = {}


def tiny(num_layers=4, deepstack_layers=1, attn="sdpa", moe=False):
    key = (num_layers, deepstack_layers, attn, moe)
    if key not in _MODELS:
        _MODELS[key] = tiny_qwen3_vl.build(
            num_layers=num_layers, deepstack_layers=deepstack_layers, attn_implementation=attn, moe=moe
        )
    return _MODELS[key]


def derive(model, processor, inputs, b):
    """Independent layout of sample b: (positions, video, frame, row, col) of its video tokens.

    Blocks are maximal runs of video tokens; a block whose timestamp text reads 0.0 seconds starts a
    new video; row and column come from the model's own M-RoPE positions (h - t, w - t)."""
    ids = inputs["input_ids"][b]
    position_ids, _ = model.model.get_rope_index(
        inputs["input_ids"],
        mm_token_type_ids=inputs["mm_token_type_ids"],
        image_grid_thw=inputs.get("image_grid_thw"),
        video_grid_thw=inputs.get("video_grid_thw"),
        attention_mask=inputs["attention_mask"],
    )
    t, h, w = position_ids[:, b]
    is_video = (ids == model.config.video_token_id).tolist()
    rows, video, frame, text_start = [], -1, -1, 0
    for i, v in enumerate(is_video):
        if not v:
            continue
        if i == 0 or not is_video[i - 1]:  # a new block: read the text before it
            before = processor.tokenizer.decode(ids[text_start:i])
            stamps = re.findall(r"<(\d+\.\d) seconds>", before)
            assert stamps, f"no timestamp before the block at {i}: {before!r}"
            if float(stamps[-1]) == 0.0:
                video, frame = video + 1, 0
            else:
                frame += 1
        rows.append((i, video, frame, int(h[i] - t[i]), int(w[i] - t[i])))
        text_start = i + 1
    return rows


def check_layout(model, processor, inputs):
    layouts = adapter_for(model).video_layouts(dict(inputs))
    assert len(layouts) == inputs["input_ids"].shape[0]
    for b, layout in enumerate(layouts):
        expected = derive(model, processor, inputs, b)
        assert layout.positions.tolist() == [r[0] for r in expected]
        assert layout.frame.tolist() == [r[2] for r in expected]
        keys = {}  # (video, row, col) <-> patch key must be a bijection
        for key, (_, vid, _, row, col) in zip(layout.patch.tolist(), expected):
            assert keys.setdefault((vid, row, col), key) == key
        assert len(set(keys.values())) == len(keys)
        yield layout, expected


def test_layout_matches_timestamps_and_rope_positions(videos):
    model, processor = tiny()
    inputs = video_inputs(processor, ["What moves?", "Colour?"], [videos[16], videos[8]])
    layouts = list(check_layout(model, processor, inputs))
    for b, ((layout, _), frames) in enumerate(zip(layouts, (16, 8))):
        assert len(layout) == frames // 2 * 16  # 4x4 tokens per temporal patch
        assert layout.frame.max() == frames // 2 - 1
        # blocks are separated by text: <|vision_end|><t seconds><|vision_start|> is never video
        ids = inputs["input_ids"][b]
        gaps = layout.positions.diff()
        assert (gaps[layout.frame[1:] == layout.frame[:-1]] == 1).all()
        between = gaps[layout.frame[1:] != layout.frame[:-1]]
        assert (between > 3).all()
        first_gap = int((layout.frame == 0).sum())
        text = processor.tokenizer.decode(ids[layout.positions[first_gap - 1] + 1 : layout.positions[first_gap]])
        assert re.fullmatch(r"<\|vision_end\|><0\.1 seconds><\|vision_start\|>", text)


def test_two_videos_in_one_sample_and_an_image(videos):
    model, processor = tiny()
    inputs = conversation_inputs(
        processor,
        [user_message("image", "video", "and", "video", "Same?"), user_message("video", "Colour?")],
        videos=[videos[8], videos[16], videos[2]],
        images=[videos[16][0]],
    )
    (first, expected), (second, _) = check_layout(model, processor, inputs)
    assert {r[1] for r in expected} == {0, 1}  # two videos in the first sample
    per_video = [[k for k, r in zip(first.patch.tolist(), expected) if r[1] == v] for v in (0, 1)]
    assert not set(per_video[0]) & set(per_video[1])
    assert len(first) == (4 + 8) * 16 and len(second) == 16
    image = (inputs["input_ids"][0] == model.config.image_token_id).nonzero().flatten()
    assert len(image) and not set(image.tolist()) & set(first.positions.tolist())


def test_merges_cross_the_timestamp_text(videos):
    model, processor = tiny()
    inputs = video_inputs(processor, ["What moves?"], [videos[16]])
    layout = adapter_for(model).video_layouts(dict(inputs))[0]
    with framefusion.apply(model, FrameFusionConfig(cost=0.5, similarity_threshold=-1.0)) as handle:
        with torch.no_grad():
            model(**inputs)
        report = handle.last_report()
    merge = report.decisions[0][0]
    assert merge.kind == "merge" and merge.layer == 1  # the first layer after the deepstack layer
    joined = (merge.root != torch.arange(len(layout))).nonzero().flatten()
    assert len(joined)
    root = merge.root[joined]
    assert (layout.patch[root] == layout.patch[joined]).all()
    assert (layout.frame[root] < layout.frame[joined]).all()  # an earlier block of the same video


@pytest.mark.parametrize("deepstack_layers", [1, 2])
def test_deepstack_layers_run_unreduced(videos, deepstack_layers):
    model, processor = tiny(num_layers=6, deepstack_layers=deepstack_layers)
    inputs = video_inputs(processor, ["What moves?", "Count."], [videos[16], videos[8]])
    assert adapter_for(model).first_reducible_layer(dict(inputs)) == deepstack_layers
    with framefusion.apply(model, FrameFusionConfig(cost=0.5, similarity_threshold=0.9)) as handle:
        with torch.no_grad():
            model(**inputs)
        report = handle.last_report()
    for n, counts, decisions, achieved in zip(
        report.vision_tokens, report.vision_tokens_per_layer, report.decisions, report.achieved_cost
    ):
        assert counts[:deepstack_layers] == [n] * deepstack_layers and counts[-1] < n
        assert decisions and min(d.layer for d in decisions) == deepstack_layers
        assert achieved <= 0.5 + 1e-12


def test_first_reducible_layer_follows_the_config():
    for deepstack_layers, num_layers, expected in [(0, 2, 0), (3, 4, 3), (3, 2, 2)]:
        model, processor = tiny_qwen3_vl.build(num_layers=num_layers, deepstack_layers=deepstack_layers)
        assert Qwen3VLAdapter(model).first_reducible_layer({}) == expected


def test_reducing_inside_the_deepstack_layers_breaks(videos, monkeypatch):
    """Why first_reducible_layer matters: deepstack indexes the full-length hidden states."""
    model, processor = tiny()
    inputs = video_inputs(processor, ["What moves?"], [videos[8]])
    monkeypatch.setattr(Qwen3VLAdapter, "first_reducible_layer", lambda self, inputs: 0)
    with framefusion.apply(model, FrameFusionConfig(cost=0.3)), torch.no_grad():
        with pytest.raises(IndexError):
            model(**inputs)


def test_image_and_video_decoding_is_exact(videos):
    """Deepstack adds image and video features through one joint mask; image tokens stay."""
    model, processor = tiny()
    inputs = conversation_inputs(
        processor, [user_message("image", "video", "Same?")], videos=[videos[16]], images=[videos[8][0]]
    )
    with framefusion.apply(model, FrameFusionConfig(cost=0.3, similarity_threshold=0.9)) as handle:
        tokens, step_logits = greedy(model, inputs, n=3)
        report = handle.last_report()
    image = (inputs["input_ids"][0] == model.config.image_token_id).nonzero().flatten().tolist()
    assert report.vision_tokens == [128] and set(image) <= set(report.kept_positions[0])
    assert report.vision_tokens_per_layer[0][-1] < 128
    torch.testing.assert_close(
        replay_logits(model, inputs, tokens, report.decisions), step_logits, atol=2e-5, rtol=1e-5
    )


def test_moe_variant(videos):
    model, processor = tiny(moe=True)
    assert type(model).__name__ == "Qwen3VLMoeForConditionalGeneration"
    assert isinstance(adapter_for(model), Qwen3VLAdapter)
    questions, clips = ["Which way does it move?", "Colour?"], [videos[8], videos[16]]
    with framefusion.apply(model, FrameFusionConfig(cost=0.3, similarity_threshold=0.8)) as handle:
        batch = video_inputs(processor, questions, clips)
        tokens, logits = greedy(model, batch, n=3)
        report = handle.last_report()
        for b in range(2):
            single = video_inputs(processor, [questions[b]], [clips[b]])
            t1, l1 = greedy(model, single, n=3)
            assert handle.last_report().vision_tokens_per_layer[0] == report.vision_tokens_per_layer[b]
            assert torch.equal(tokens[b : b + 1], t1)
            torch.testing.assert_close(logits[b : b + 1], l1, atol=1e-4, rtol=1e-4)
    assert all(c[-1] < n for c, n in zip(report.vision_tokens_per_layer, report.vision_tokens))
    single = video_inputs(processor, [questions[1]], [clips[1]])
    with framefusion.apply(model, FrameFusionConfig(cost=0.3, similarity_threshold=0.8)) as handle:
        t1, l1 = greedy(model, single, n=3)
        decisions = handle.last_report().decisions
    torch.testing.assert_close(replay_logits(model, single, t1, decisions), l1, atol=2e-5, rtol=1e-5)
