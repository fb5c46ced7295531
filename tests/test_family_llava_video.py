"""LLaVA video families: LLaVA-OneVision / LLaVA-Video, LLaVA-NeXT-Video, Video-LLaVA.

The layout is checked against the model itself: every video token's input embedding is compared with
the features the model computes for ONE frame of ONE video, so the frame, the patch and the tokens that
are not frame content (OneVision's newline, Video-LLaVA's CLS) are identified independently of the
adapter. The generic checks are in test_conformance.py.
"""

import pytest
import torch
from conftest import greedy, replay_logits

import framefusion
from framefusion import FrameFusionConfig
from framefusion.adapters import adapter_for
from framefusion.tiny_models import make_synthetic_video
from framefusion.tiny_models.llava_video import (
    NUM_FRAMES,
    build_tiny_llava_video,
    build_tiny_llava_video_model,
    build_tiny_llava_video_processor,
)
from framefusion.tiny_models.zoo import video_inputs
from framefusion.report import Decision

FAMILIES = ["llava_onevision", "llava_next_video", "video_llava"]
# (content tokens per frame, non-content tokens per frame, non-content tokens per video), default frames
TOKENS = {"llava_onevision": (16, 0, 1), "llava_next_video": (16, 0, 0), "video_llava": (16, 1, 0)}
_CACHE: dict = {}


def tiny(family, attn="sdpa"):
    if (family, attn) not in _CACHE:
        _CACHE[family, attn] = build_tiny_llava_video(family, attn_implementation=attn)
    return _CACHE[family, attn]


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


def chat(processor, conversations, videos=None, images=None):
    texts = [processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
    return processor(text=texts, videos=videos, images=images, padding=True, return_tensors="pt")


def message(*items):
    content = [{"type": i} if i in ("video", "image") else {"type": "text", "text": i} for i in items]
    return [{"role": "user", "content": content}]


def input_embeds(model, inputs):
    """The LLM's input embeddings of a forward (video features already scattered in)."""
    seen = {}

    def capture(module, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"]

    hook = model.model.language_model.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        hook.remove()
    return seen["embeds"]


def single_frame_features(model, pixels):
    """[video][frame] -> (tokens, d): what the model makes of that frame as a one-frame video."""
    with torch.no_grad():
        return [
            [
                model.model.get_video_features(pixels[v : v + 1, f : f + 1]).pooler_output[0]
                for f in range(pixels.shape[1])
            ]
            for v in range(pixels.shape[0])
        ]


def check_layout(model, inputs, family):
    """Layout == independent derivation from the model's own per-frame features; returns the layouts."""
    content, per_frame_extra, per_video_extra = TOKENS[family]
    layouts = adapter_for(model).video_layouts(dict(inputs))
    embeds = input_embeds(model, inputs)
    pixels = inputs["pixel_values_videos"]
    frames = pixels.shape[1]
    single = single_frame_features(model, pixels)
    video = 0
    all_keys: list[set] = []
    for b, layout in enumerate(layouts):
        ids = inputs["input_ids"][b]
        video_pos = (ids == model.config.video_token_id).nonzero().flatten().tolist()
        pos, frame, patch = layout.positions.tolist(), layout.frame.tolist(), layout.patch.tolist()
        assert pos == sorted(pos) and set(pos) <= set(video_pos)
        n_videos = len(video_pos) // (frames * (content + per_frame_extra) + per_video_extra)
        assert len(pos) == n_videos * frames * content
        for k in range(n_videos):  # videos in sequence order; frames in order; patches in order
            chunk = slice(k * frames * content, (k + 1) * frames * content)
            assert frame[chunk] == [f for f in range(frames) for _ in range(content)]
            keys = patch[chunk][:content]
            assert len(set(keys)) == content
            assert patch[chunk] == keys * frames  # same spatial patch <=> same key
            all_keys.append(set(keys))
            for i, p in enumerate(pos[chunk]):
                f, j = divmod(i, content)
                # the token holds patch j of frame f of this video (CLS first in Video-LLaVA's frames)
                torch.testing.assert_close(embeds[b, p], single[video][f][per_frame_extra + j], atol=1e-5, rtol=1e-5)
            video += 1
        # the video tokens left out are exactly the non-content ones
        others = sorted(set(video_pos) - set(pos))
        assert len(others) == n_videos * (frames * per_frame_extra + per_video_extra)
        cls = torch.stack([frame[0] for vid in single for frame in vid])
        for p in others:
            if family == "llava_onevision":  # the newline right after the last patch of each video
                assert p - 1 in pos
                torch.testing.assert_close(embeds[b, p], model.model.image_newline.detach(), atol=1e-6, rtol=1e-6)
            else:  # Video-LLaVA: the CLS token right before the first patch of each frame
                assert p + 1 in pos
                assert (cls - embeds[b, p]).abs().amax(-1).min() < 1e-5
    assert video == pixels.shape[0]
    for i, keys in enumerate(all_keys):  # different videos never share keys
        assert all(not keys & other for other in all_keys[i + 1 :])
    return layouts


def test_layout_matches_model_features(family, videos):
    model, processor = tiny(family)
    inputs = video_inputs(processor, ["What moves in the video?", "Count."], [videos[16], videos[8]])
    assert inputs["pixel_values_videos"].shape[1] == NUM_FRAMES
    layouts = check_layout(model, inputs, family)
    content, per_frame_extra, per_video_extra = TOKENS[family]
    ids = inputs["input_ids"]
    n = (ids == model.config.video_token_id).sum(1)
    assert n.tolist() == [NUM_FRAMES * (content + per_frame_extra) + per_video_extra] * 2
    assert [len(lay) for lay in layouts] == [NUM_FRAMES * content] * 2


def test_features_tell_frames_and_patches_apart(family, videos):
    """The embedding check above is discriminative: patches differ within a frame and across frames."""
    model, processor = tiny(family)
    inputs = video_inputs(processor, ["Where?"], [videos[16]])
    single = single_frame_features(model, inputs["pixel_values_videos"])[0]
    extra = TOKENS[family][1]
    a, b = single[0][extra:], single[-1][extra:]
    assert torch.cdist(a, a).fill_diagonal_(1).min() > 1e-3
    assert (a - b).abs().amax() > 1e-3


def test_several_videos_in_one_prompt(family, videos):
    model, processor = tiny(family)
    conversations = [message("video", "First.", "video", "Which one moves?"), message("Count.", "video")]
    inputs = chat(processor, conversations, videos=[videos[16], videos[8], videos[8]])
    layouts = check_layout(model, inputs, family)
    assert len(set(layouts[0].frame.tolist())) == NUM_FRAMES


def test_adjacent_videos_split_by_frame_count(family, videos):
    """Two videos with no text between: one run of video tokens, split by the recorded frame count,
    also in generate (which passes the pixels as None and pre-encoded features instead)."""
    model, processor = tiny(family)
    token = processor.video_token
    texts = [f"{token}{token} Same?"]
    inputs = processor(text=texts, videos=[videos[16], videos[8]], padding=True, return_tensors="pt")
    check_layout(model, inputs, family)
    expected = [lay.positions for lay in adapter_for(model).video_layouts(dict(inputs))]
    with framefusion.apply(model, FrameFusionConfig(cost=0.5)) as handle:
        seen = []
        original = handle.adapter.video_layouts

        def spy(kw):  # what the engine gets from the adapter at prefill
            seen.append((kw.get("pixel_values_videos"), original(kw)))
            return seen[-1][1]

        handle.adapter.video_layouts = spy
        greedy(model, inputs, n=2)
        report = handle.last_report()
    pixels, layouts = seen[0]
    assert pixels is None  # generate encoded the videos first
    assert [lay.positions.tolist() for lay in layouts] == [e.tolist() for e in expected]
    assert len({k >> 24 for k in layouts[0].patch.tolist()}) == 2
    assert report.vision_tokens == [2 * NUM_FRAMES * TOKENS[family][0]]


def test_images_are_not_reduced(family, videos):
    model, processor = tiny(family)
    image = make_synthetic_video(num_frames=1, size=112, seed=5)[0]
    inputs = chat(processor, [message("image", "video", "Same scene?")], videos=[videos[8]], images=[image])
    layouts = check_layout(model, inputs, family)
    image_pos = set((inputs["input_ids"][0] == model.config.image_token_id).nonzero().flatten().tolist())
    assert image_pos and not image_pos & set(layouts[0].positions.tolist())
    base = greedy(model, inputs, n=3)
    with framefusion.apply(model, FrameFusionConfig(cost=0.3, similarity_threshold=0.8)) as handle:
        tokens, _ = greedy(model, inputs, n=3)
        report = handle.last_report()
    assert image_pos <= set(report.kept_positions[0])  # every image token survives
    assert report.vision_tokens == [len(layouts[0])]
    assert report.vision_tokens_per_layer[0][-1] < len(layouts[0])
    assert tokens.shape == base[0].shape


@pytest.mark.parametrize(
    "family, frame_size, per_frame",
    [
        ("llava_onevision", 384, 14 * 14),  # llava-onevision-qwen2-*-ov-hf, LLaVA-Video-7B-Qwen2-hf
        ("llava_next_video", 336, 12 * 12),  # LLaVA-NeXT-Video-7B-hf
        ("video_llava", 224, 16 * 16),  # Video-LLaVA-7B-hf (+1 CLS per frame)
    ],
)
def test_real_checkpoint_geometry(family, frame_size, per_frame):
    """Tokens per frame with the released checkpoints' vision geometry, checked against the real
    processor's placeholder count and a forward pass (the model rejects a mismatch)."""
    if family not in FAMILIES:
        pytest.skip(f"{family} not enabled")
    processor = build_tiny_llava_video_processor(family, num_frames=2, frame_size=frame_size)
    model = build_tiny_llava_video_model(family, num_layers=1, frame_size=frame_size, processor=processor)
    assert model.config.vision_config.image_size == frame_size and model.config.vision_config.patch_size == 14
    adapter = adapter_for(model)
    assert adapter.patches_per_frame() == per_frame
    clip = make_synthetic_video(num_frames=2, size=frame_size, seed=3)
    inputs = video_inputs(processor, ["What?"], [clip])
    layout = adapter.video_layouts(dict(inputs))[0]
    assert len(layout) == 2 * per_frame
    assert layout.frame.tolist() == [0] * per_frame + [1] * per_frame
    with torch.no_grad():
        model(**inputs)


def test_layout_from_token_ids_alone(family, videos):
    """Without pixels or a recorded shape (e.g. features passed in by the caller), each run of video
    tokens is one video; adjacent videos then cannot be told apart and OneVision's layout refuses them."""
    model, processor = tiny(family)
    adapter = adapter_for(model)
    inputs = chat(processor, [message("video", "First.", "video", "Which?")], videos=[videos[16], videos[8]])
    full = adapter.video_layouts(dict(inputs))[0]
    alone = adapter.video_layouts({"input_ids": inputs["input_ids"]})[0]
    assert torch.equal(full.positions, alone.positions) and torch.equal(full.frame, alone.frame)
    assert torch.equal(full.patch, alone.patch)
    token = processor.video_token
    adjacent = processor(text=[f"{token}{token} Same?"], videos=[videos[16], videos[8]], return_tensors="pt")
    if family == "llava_onevision":  # the newline makes a run of two videos an invalid single video
        with pytest.raises(ValueError, match="not a whole number of videos"):
            adapter.video_layouts({"input_ids": adjacent["input_ids"]})


def _combined(first, second, first_tokens, second_tokens):
    """Two videos' merge decisions (each over its own tokens) as one list over both videos' tokens
    in sequence order, for a Replay: at each layer, a video without a decision keeps every token."""
    by_layer = [{d.layer: d for d in ds} for ds in (first, second)]
    present = [first_tokens, second_tokens]
    combined = []
    for layer in sorted(set(by_layer[0]) | set(by_layer[1])):
        keeps, roots, offset = [], [], 0
        for v in range(2):
            d = by_layer[v].get(layer)
            n = present[v]
            assert d is None or d.kind == "merge"
            keeps.append(torch.ones(n, dtype=torch.bool) if d is None else d.keep)
            roots.append((torch.arange(n) if d is None else d.root) + offset)
            offset += n
            present[v] = int(keeps[-1].sum())
        combined.append(Decision(layer, "merge", torch.cat(keeps), torch.cat(roots)))
    return combined


def test_a_video_in_a_later_turn_is_reduced_on_its_own(family, videos):
    """Turn two passes turn one's (reduced) cache, the conversation's ids and the NEW video's pixels
    only (transformers supports this for these families): the new video is reduced on its own
    budget, and every step equals a cache-free forward over the whole conversation with both
    turns' decisions replayed."""
    from framefusion.tools.bench import output_cache

    model, processor = tiny(family)
    new_video = make_synthetic_video(num_frames=NUM_FRAMES, size=112, seed=5)
    first = [{"role": "user", "content": [{"type": "video", "video": videos[8]}, {"type": "text", "text": "What moves?"}]}]
    later = [{"role": "user", "content": [{"type": "video", "video": new_video}, {"type": "text", "text": "And now?"}]}]
    answer = [{"role": "assistant", "content": [{"type": "text", "text": "A red shape."}]}]

    def encode(conversation):
        return processor.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )

    turn1, whole, new_pixels = encode(first), encode(first + answer + later), encode(later)
    turn2 = {k: v for k, v in whole.items() if not k.startswith("pixel_values")}
    turn2.update({k: v for k, v in new_pixels.items() if k.startswith("pixel_values")})
    config = FrameFusionConfig(cost=0.3, prune=False)
    with framefusion.apply(model, config, processor=processor) as handle, torch.no_grad():
        cache = output_cache(model(**turn1, use_cache=True))
        report1 = handle.last_report()
        out = model.generate(
            **turn2, past_key_values=cache, max_new_tokens=2, min_new_tokens=2, do_sample=False,
            output_logits=True, return_dict_in_generate=True,
        )
        report2 = handle.last_report()
    for report in (report1, report2):
        assert report.vision_tokens_per_layer[0][-1] < report.vision_tokens[0] and report.achieved_cost[0] <= 0.3
    assert report1.vision_tokens[0] + report2.vision_tokens[0] == len(adapter_for(model, processor).video_layouts(dict(whole))[0])
    assert min(report2.kept_positions[0]) >= turn1["input_ids"].shape[1]  # positions in the whole conversation
    decisions = _combined(report1.decisions[0], report2.decisions[0], report1.vision_tokens[0], report2.vision_tokens[0])
    generated = out.sequences[:, whole["input_ids"].shape[1] :]
    replayed = replay_logits(model, whole, generated, [decisions], processor)
    torch.testing.assert_close(torch.stack(out.logits, dim=1), replayed, atol=2e-5, rtol=1e-5)
    with framefusion.apply(model, FrameFusionConfig(cost=0.1), processor=processor) as handle, torch.no_grad():
        cache = output_cache(model(**turn1, use_cache=True))  # pruning: importance over both turns' keys
        model.generate(**turn2, past_key_values=cache, max_new_tokens=2, do_sample=False)
        pruned = handle.last_report()
    assert pruned.achieved_cost[0] <= 0.1 and any(d.kind == "prune" for d in pruned.decisions[0])
