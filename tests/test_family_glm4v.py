"""GLM-4.1V / GLM-4.5V / GLM-4.6V specifics: frames written with the image token between video
start/end tokens, one block per temporal patch with timestamp text, partial-rotary attention.

The generic checks are in test_conformance.py (family "glm4v")."""

import pytest
import torch
from conftest import conversation_inputs, greedy, probe_and_eager_attention, replay_logits, user_message

import framefusion
from framefusion import FrameFusionConfig
from framefusion.adapters import adapter_for
from framefusion.adapters.glm4v import Glm4vAdapter
from framefusion.tiny_models import glm4v as tiny_glm4v
from framefusion.tiny_models.zoo import video_inputs

_MODELS: dict = {}


def tiny(variant="glm4v", attn="sdpa", num_layers=4):
    key = (variant, attn, num_layers)
    if key not in _MODELS:
        _MODELS[key] = tiny_glm4v.build(num_layers=num_layers, variant=variant, attn_implementation=attn)
    return _MODELS[key]


def derive(model, inputs, b):
    """Independent layout of sample b: (position, video, frame, row, col) of its video tokens.

    Videos and frames are counted from the start tokens; row and column come from the model's own
    M-RoPE positions (h - t, w - t)."""
    config = model.config
    position_ids, _ = model.model.get_rope_index(
        inputs["input_ids"],
        mm_token_type_ids=inputs["mm_token_type_ids"],
        video_grid_thw=inputs.get("video_grid_thw"),
        image_grid_thw=inputs.get("image_grid_thw"),
        attention_mask=inputs["attention_mask"],
    )
    t, h, w = position_ids[:, b]
    rows, video, frame, inside = [], -1, -1, False
    for i, token in enumerate(inputs["input_ids"][b].tolist()):
        if token == config.video_start_token_id:
            video, frame, inside = video + 1, -1, True
        elif token == config.video_end_token_id:
            inside = False
        elif token == config.image_start_token_id and inside:
            frame += 1
        elif token == config.image_token_id and inside:
            rows.append((i, video, frame, int(h[i] - t[i]), int(w[i] - t[i])))
    return rows


def check_layout(model, inputs):
    layouts = adapter_for(model).video_layouts(dict(inputs))
    assert len(layouts) == inputs["input_ids"].shape[0]
    for b, layout in enumerate(layouts):
        expected = derive(model, inputs, b)
        assert layout.positions.tolist() == [r[0] for r in expected]
        assert layout.frame.tolist() == [r[2] for r in expected]
        keys = {}  # (video, row, col) <-> patch key must be a bijection
        for key, (_, vid, _, row, col) in zip(layout.patch.tolist(), expected):
            assert keys.setdefault((vid, row, col), key) == key
        assert len(set(keys.values())) == len(keys)
        yield layout, expected


@pytest.mark.parametrize("variant", tiny_glm4v.VARIANTS)
def test_layout_matches_separators_and_rope_positions(videos, variant):
    model, processor = tiny(variant)
    assert isinstance(adapter_for(model), Glm4vAdapter)
    inputs = video_inputs(processor, ["What moves?", "Colour?"], [videos[16], videos[8]])
    for b, ((layout, _), frames) in enumerate(zip(check_layout(model, inputs), (16, 8))):
        assert len(layout) == frames // 2 * 16  # 4x4 tokens per temporal patch
        assert layout.frame.max() == frames // 2 - 1
        ids = inputs["input_ids"][b]
        assert (ids[layout.positions] == model.config.image_token_id).all()  # frames use the image token
        # between two blocks: <|end_of_image|> + timestamp text + <|begin_of_image|>, never video
        gaps = layout.positions.diff()
        assert (gaps[layout.frame[1:] == layout.frame[:-1]] == 1).all()
        first = int((layout.frame == 0).sum())
        between = processor.tokenizer.decode(ids[layout.positions[first - 1] + 1 : layout.positions[first]])
        stamp = between.removeprefix("<|end_of_image|>").removesuffix("<|begin_of_image|>")
        assert between.startswith("<|end_of_image|>") and between.endswith("<|begin_of_image|>")
        assert stamp in ("0", "0.0 seconds") and gaps.max() == len(processor.tokenizer(stamp).input_ids) + 3


def test_two_videos_in_one_sample(videos):
    model, processor = tiny()
    inputs = conversation_inputs(
        processor,
        [user_message("video", "and", "video", "Same?"), user_message("video", "Colour?")],
        videos=[videos[8], videos[16], videos[2]],
    )
    (first, expected), (second, _) = check_layout(model, inputs)
    assert {r[1] for r in expected} == {0, 1}
    per_video = [[k for k, r in zip(first.patch.tolist(), expected) if r[1] == v] for v in (0, 1)]
    assert not set(per_video[0]) & set(per_video[1])
    assert len(first) == (4 + 8) * 16 and len(second) == 16


def test_video_mask_without_token_types_matches_the_processor(videos):
    """Without mm_token_type_ids the adapter finds frames as image tokens inside a video."""
    model, processor = tiny()
    adapter = adapter_for(model)
    batch = conversation_inputs(
        processor,
        [user_message("video", "and", "video", "Same?"), user_message("video", "Colour?")],
        videos=[videos[8], videos[16], videos[2]],
    )
    image = conversation_inputs(processor, [user_message("image", "What is it?")], images=[videos[8][0]])
    for inputs in (batch, image):
        expected = inputs["mm_token_type_ids"] == 2
        assert torch.equal(adapter._video_mask({"input_ids": inputs["input_ids"]}), expected)
    assert not (image["mm_token_type_ids"] == 2).any() and (image["input_ids"] == model.config.image_token_id).any()


def test_image_prompt_is_untouched(videos):
    """Images share the token id of video frames but are never reduced."""
    model, processor = tiny()
    inputs = conversation_inputs(processor, [user_message("image", "Describe the image.")], images=[videos[16][0]])
    base = greedy(model, inputs, n=3)
    with framefusion.apply(model, FrameFusionConfig(cost=0.1)) as handle:
        got = greedy(model, inputs, n=3)
        assert handle.last_report().vision_tokens == [0]
    assert torch.equal(got[0], base[0]) and torch.equal(got[1], base[1])


def test_every_layer_is_reducible_and_merges_cross_the_timestamps(videos):
    model, processor = tiny()
    inputs = video_inputs(processor, ["What moves?"], [videos[16]])
    assert adapter_for(model).first_reducible_layer(dict(inputs)) == 0
    layout = adapter_for(model).video_layouts(dict(inputs))[0]
    with framefusion.apply(model, FrameFusionConfig(cost=0.5, similarity_threshold=-1.0)) as handle:
        with torch.no_grad():
            model(**inputs)
        report = handle.last_report()
    merge = report.decisions[0][0]
    assert merge.kind == "merge" and merge.layer == 0
    joined = (merge.root != torch.arange(len(layout))).nonzero().flatten()
    assert len(joined)
    root = merge.root[joined]
    assert (layout.patch[root] == layout.patch[joined]).all()
    assert (layout.frame[root] < layout.frame[joined]).all()  # an earlier block of the same video


@pytest.mark.parametrize("variant", tiny_glm4v.VARIANTS)
def test_probe_matches_the_eager_attention(videos, variant):
    """Partial rotary, interleaved pairs (GLM-4.1V) or halves (GLM-4.5V): as the layer computes."""
    model, processor = tiny(variant, attn="eager")
    inputs = video_inputs(processor, ["What moves?"], [videos[8]])
    for cos, probs, eager in probe_and_eager_attention(model, adapter_for(model), inputs):
        assert cos.shape[-1] < model.config.text_config.hidden_size // model.config.text_config.num_attention_heads
        torch.testing.assert_close(probs, eager, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("variant", ["glm4v_moe", "glm46v"])
def test_variants_batch_and_exact_decoding(videos, variant):
    model, processor = tiny(variant)
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
        decisions = handle.last_report().decisions
    assert all(c[-1] < n for c, n in zip(report.vision_tokens_per_layer, report.vision_tokens))
    torch.testing.assert_close(replay_logits(model, single, t1, decisions), l1, atol=2e-5, rtol=1e-5)
