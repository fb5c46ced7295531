"""InternVL (transformers format) specifics: frames written as image tiles, told apart by their labels.

The generic checks are in test_conformance.py (family "internvl").
"""

import pytest
import torch
from conftest import encode_conversations as encode
from conftest import greedy, replay_logits
from conftest import media_message as conversation
from conftest import random_image as image

import framefusion
from framefusion import FrameFusionConfig
from framefusion.adapters.internvl import InternVLAdapter
from framefusion.tiny_models import internvl as tiny_internvl

TOKENS = tiny_internvl.TOKENS_PER_TILE
_MODELS: dict = {}


def tiny(text_model="qwen2", attn="sdpa"):
    key = (text_model, attn)
    if key not in _MODELS:
        _MODELS[key] = tiny_internvl.build(text_model=text_model, attn_implementation=attn)
    return _MODELS[key]


def derive(processor, inputs, conversations, b):
    """Independent layout of sample b from what was sent: [(position, video, frame, index in tile)].

    The context-token runs of the row follow the media in order: an image is one run of
    ``tiles x TOKENS`` (tiles from the image processor), a video of T frames is T runs of TOKENS."""
    ids = inputs["input_ids"][b]
    is_ctx = (ids == processor.image_token_id).tolist()
    runs, i = [], 0
    while i < len(is_ctx):
        if is_ctx[i]:
            j = i
            while j < len(is_ctx) and is_ctx[j]:
                j += 1
            runs.append((i, j))
            i = j
        else:
            i += 1
    expected, r, video = [], 0, -1
    for item in conversations[b][0]["content"]:
        if item["type"] == "image":
            tiles = int(processor.image_processor([item["image"]], crop_to_patches=True)["num_patches"][0])
            assert runs[r][1] - runs[r][0] == tiles * TOKENS
            r += 1
        elif item["type"] == "video":
            video += 1
            for frame in range(len(item["video"])):
                start, end = runs[r]
                assert end - start == TOKENS
                expected += [(start + j, video, frame, j) for j in range(TOKENS)]
                r += 1
    assert r == len(runs)
    return expected


def check_layout(model, processor, conversations):
    inputs = encode(processor, conversations)
    layouts = InternVLAdapter(model, processor).video_layouts(dict(inputs))
    assert len(layouts) == len(conversations)
    for b, layout in enumerate(layouts):
        expected = derive(processor, inputs, conversations, b)
        assert layout.positions.tolist() == [e[0] for e in expected]
        assert layout.frame.tolist() == [e[2] for e in expected]
        # equal patch keys <=> same video and same place in the tile
        pairs = set(zip(layout.patch.tolist(), [(e[1], e[3]) for e in expected]))
        assert len(pairs) == len({p for p, _ in pairs}) == len({e for _, e in pairs})
    return inputs, layouts


def test_video_frames_are_labelled_tiles(videos):
    model, processor = tiny()
    inputs, (layout,) = check_layout(model, processor, [conversation(("video", videos[8]), "What moves?")])
    ids = inputs["input_ids"][0]
    tok = processor.tokenizer
    assert len(layout) == 8 * TOKENS
    for k in range(8):  # each frame: "Frame{k+1}: <img>" + TOKENS context tokens + "</img>"
        start = int(layout.positions[k * TOKENS])
        assert tok.decode(ids[start - 1 : start + TOKENS + 1]) == "<img>" + "<IMG_CONTEXT>" * TOKENS + "</img>"
        assert tok.decode(ids[: start - 1]).endswith(f"Frame{k + 1}: ")


def test_frames_follow_pixel_order(videos):
    """Run k of a video is filled from the video's frame k: the processor puts the frames in order."""
    model, processor = tiny()
    clip = videos[8]
    conv = [conversation(("image", image(200, 100)), ("video", clip), "Hi")]
    inputs = encode(processor, conv)
    tiles = int(inputs["pixel_values"].shape[0]) - len(clip)
    frames = processor.video_processor([clip], return_tensors="pt")["pixel_values_videos"][0]
    assert torch.equal(inputs["pixel_values"][tiles:], frames)


def test_images_are_not_video(videos):
    """Single-tile images (as long as a frame) and tiled images between videos stay text.

    (InternVLProcessor stacks the videos of one conversation: they need equal frame counts.)"""
    model, processor = tiny()
    convs = [
        conversation(
            ("image", image()), ("video", videos[2]), ("image", image(300, 100, 1)), ("video", videos[2]), "?"
        ),
        conversation(("image", image(seed=2)), ("image", image(seed=3)), "Two images."),
        conversation("Image1: ", ("image", image(seed=4)), "\nImage2: ", ("image", image(seed=5)), "?"),
        conversation(("video", videos[2]), "Just a video."),
    ]
    _, layouts = check_layout(model, processor, convs)
    assert [len(x) for x in layouts] == [4 * TOKENS, 0, 0, 2 * TOKENS]


def test_two_videos_never_share_keys(videos):
    model, processor = tiny()
    _, (layout,) = check_layout(
        model, processor, [conversation(("video", videos[8]), "and", ("video", videos[8]), "Same?")]
    )
    first, second = layout.patch[: 8 * TOKENS], layout.patch[8 * TOKENS :]
    assert not set(first.tolist()) & set(second.tolist())
    assert layout.frame[8 * TOKENS :].tolist() == layout.frame[: 8 * TOKENS].tolist()  # frames restart at 0


def test_padded_batch_rows_match_single_rows(videos):
    model, processor = tiny()
    convs = [
        conversation(("video", videos[2]), "Which way does it go?"),
        conversation(("image", image()), ("video", videos[16]), "?"),
        conversation("No media."),
    ]
    inputs, layouts = check_layout(model, processor, convs)
    assert (inputs["attention_mask"] == 0).any()
    width = inputs["input_ids"].shape[1]
    for b, conv in enumerate(convs):
        single = encode(processor, [conv])
        (alone,) = InternVLAdapter(model, processor).video_layouts(dict(single))
        shift = width - single["input_ids"].shape[1]
        assert (alone.positions + shift).tolist() == layouts[b].positions.tolist()
        assert alone.frame.tolist() == layouts[b].frame.tolist()


def test_adapter_needs_the_processor():
    model, _ = tiny()
    with pytest.raises(ValueError, match="processor"):
        InternVLAdapter(model)


def test_tiny_processor_ragged_batch_equals_single_calls(videos):
    """The tiny processor's one addition: videos with different frame counts in one batch."""
    _, processor = tiny()
    convs = [conversation(("video", videos[8]), "A long question here?"), conversation(("video", videos[16]), "B")]
    batch = encode(processor, convs)
    pixels = []
    for b, conv in enumerate(convs):
        single = encode(processor, [conv])
        length = single["input_ids"].shape[1]
        assert torch.equal(batch["input_ids"][b, -length:], single["input_ids"][0])
        assert int(batch["attention_mask"][b].sum()) == length
        pixels.append(single["pixel_values"])
    assert torch.equal(batch["pixel_values"], torch.cat(pixels))


def test_generate_sees_frames_and_keeps_images(videos):
    """generate() hands the model pre-encoded features and pixel_values=None: the layout comes from the ids."""
    model, processor = tiny()
    conv = [conversation(("image", image()), ("video", videos[8]), "What changes?")]
    inputs = encode(processor, conv)
    frames = {e[0] for e in derive(processor, inputs, conv, 0)}
    context = (inputs["input_ids"][0] == processor.image_token_id).nonzero().flatten().tolist()
    image_tokens = set(context) - frames
    assert len(image_tokens) == TOKENS
    with framefusion.apply(model, FrameFusionConfig(cost=0.2), processor=processor) as handle:
        greedy(model, inputs, n=2)
        report = handle.last_report()
    assert report.vision_tokens == [8 * TOKENS]
    assert report.vision_tokens_per_layer[0][-1] < 8 * TOKENS
    kept = set(report.kept_positions[0])
    assert image_tokens <= kept and len(kept & frames) == report.vision_tokens_per_layer[0][-1]


@pytest.mark.parametrize("text_model", ["qwen2", "qwen3"])
def test_exact_decoding_with_image_and_video(videos, text_model):
    """InternVL3 (Qwen2 LLM) and InternVL3.5 (Qwen3 LLM, q/k norms in the probe)."""
    model, processor = tiny(text_model)
    conv = [conversation(("image", image(200, 100)), ("video", videos[8]), "Which object moves first?")]
    inputs = encode(processor, conv)
    with framefusion.apply(model, FrameFusionConfig(cost=0.3, similarity_threshold=0.9), processor=processor) as h:
        tokens, step_logits = greedy(model, inputs, n=3)
        report = h.last_report()
    assert report.vision_tokens_per_layer[0][-1] < report.vision_tokens[0] == 8 * TOKENS
    replayed = replay_logits(model, inputs, tokens, report.decisions, processor)  # exact decoding
    torch.testing.assert_close(replayed, step_logits, atol=2e-5, rtol=1e-5)
