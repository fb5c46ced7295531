"""Qwen-specific behaviour (images, mixed prompts, one-frame videos, hand-written decode loops).

The generic checks every family passes are in test_conformance.py."""

import pytest
import torch
from conftest import FAMILIES, greedy, make_inputs

import framefusion
from framefusion import FrameFusionConfig
from framefusion.tiny_models import build_tiny_model


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def model(family, processors):
    return build_tiny_model(family, num_layers=4, processor=processors[family])


@pytest.fixture(scope="module")
def processor(family, processors):
    return processors[family]


def test_reduction_report_and_text_untouched(model, processor, videos):
    inputs = make_inputs(processor, ["What moves in the video?"], [videos[16]])
    handle = framefusion.apply(model, FrameFusionConfig(cost=0.3))
    try:
        tokens, _ = greedy(model, inputs, n=3)
        report = handle.last_report()
    finally:
        handle.remove()
    assert tokens.shape == (1, 3)
    assert report.vision_tokens == [128]
    counts = report.vision_tokens_per_layer[0]
    assert len(counts) == 4 and counts[-1] < 128
    assert report.achieved_cost[0] <= 0.3 + 1e-12
    assert report.achieved_cost[0] == pytest.approx(sum(counts) / (4 * 128))
    assert report.reduction_seconds > 0
    # every text token is still there; the kept video tokens are a subset
    ids = inputs["input_ids"][0]
    video = (ids == model.config.video_token_id).nonzero().flatten().tolist()
    kept = set(report.kept_positions[0])
    text = set(range(len(ids))) - set(video)
    assert text <= kept
    assert len(kept - text) == counts[-1]


def test_sdpa_and_eager_agree(family, processors, videos):
    processor = processors[family]
    inputs = make_inputs(processor, ["Where is the blue shape?"], [videos[16]])
    results = []
    for attn in ["sdpa", "eager"]:
        model = build_tiny_model(family, num_layers=4, processor=processor, attn_implementation=attn)
        with framefusion.apply(model, FrameFusionConfig(cost=0.4)) as handle:
            results.append((*greedy(model, inputs, n=4), handle.last_report().vision_tokens_per_layer))
    assert torch.equal(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-4, rtol=1e-4)
    assert results[0][2] == results[1][2]


def test_flash_attention_2(family, processors, videos):
    pytest.importorskip("flash_attn")
    if not torch.cuda.is_available():
        pytest.skip("flash_attention_2 needs a CUDA GPU")
    processor = processors[family]
    model = build_tiny_model(
        family, num_layers=4, processor=processor, attn_implementation="flash_attention_2", dtype=torch.bfloat16
    ).cuda()
    inputs = make_inputs(processor, ["What moves?", "Colour?"], [videos[16], videos[8]]).to("cuda")
    with framefusion.apply(model, FrameFusionConfig(cost=0.3)) as handle:
        tokens, _ = greedy(model, inputs, n=3)
    assert tokens.shape == (2, 3)
    assert all(c <= 0.3 for c in handle.last_report().achieved_cost)


def test_image_instead_of_video_is_untouched(model, processor, videos):
    image = videos[16][0]
    inputs = make_inputs(processor, ["Describe the image."], images=[image], media="image")
    base = greedy(model, inputs, n=4)
    with framefusion.apply(model, FrameFusionConfig(cost=0.1)) as handle:
        got = greedy(model, inputs, n=4)
        assert handle.last_report().vision_tokens == [0]
    assert torch.equal(got[0], base[0]) and torch.equal(got[1], base[1])


def test_single_frame_video_prunes_but_cannot_merge(model, processor, videos):
    inputs = make_inputs(processor, ["What is shown?"], [videos[2]])  # one temporal patch
    with framefusion.apply(model, FrameFusionConfig(cost=0.5, similarity_threshold=-1.0)) as handle:
        tokens, _ = greedy(model, inputs, n=3)
        report = handle.last_report()
    assert report.vision_tokens == [16]
    assert all(d.kind == "prune" for d in report.decisions[0])
    assert report.achieved_cost[0] <= 0.5
    assert tokens.shape == (1, 3)


def test_image_and_video_in_one_prompt(model, processor, videos):
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "Same?"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    inputs = processor(text=[text], images=[videos[16][0]], videos=[videos[16]], return_tensors="pt")
    with framefusion.apply(model, FrameFusionConfig(cost=0.3)) as handle:
        tokens, _ = greedy(model, inputs, n=3)
        report = handle.last_report()
    assert report.vision_tokens == [128]
    image_positions = (inputs["input_ids"][0] == model.config.image_token_id).nonzero().flatten().tolist()
    assert set(image_positions) <= set(report.kept_positions[0])


def test_multi_turn_chat_with_two_videos_compares_frames_only_within_each_video(model, processor, videos):
    from framefusion.adapters import adapter_for

    conversation = [
        {"role": "user", "content": [{"type": "video", "video": videos[16]}, {"type": "text", "text": "What moves?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red shape."}]},
        {"role": "user", "content": [{"type": "video", "video": videos[8]}, {"type": "text", "text": "And now?"}]},
    ]
    inputs = processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    layout = adapter_for(model).video_layouts(dict(inputs))[0]
    first, second = layout.patch[:128], layout.patch[128:]
    assert len(layout) == 128 + 64 and not set(first.tolist()) & set(second.tolist())
    with framefusion.apply(model, FrameFusionConfig(cost=0.3, similarity_threshold=-1.0)) as handle:
        tokens, _ = greedy(model, inputs, n=3)
        report = handle.last_report()
    assert report.vision_tokens == [192] and report.achieved_cost[0] <= 0.3
    # every merge joins a token of the same video (roots index the tokens present at that layer)
    present = torch.arange(192)
    for d in report.decisions[0]:
        if d.kind == "merge":
            video_of = (present >= 128).long()
            assert torch.equal(video_of[d.root], video_of)
        present = present[d.keep]
    assert tokens.shape == (1, 3)
