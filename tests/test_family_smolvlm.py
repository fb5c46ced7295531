"""SmolVLM2 specifics: frames written as image tiles after "Frame from mm:ss:" lines, told apart from
images by that text.

The generic checks are in test_conformance.py (family "smolvlm"). SmolVLMProcessor (transformers 5.23)
returns images and videos of one call under the same key, ``pixel_values``, so a prompt with both gets
the right ids but the pixels of one kind only: layout tests use the ids of such prompts, and the one
test that runs such a prompt through the model builds its pixels from the image and video processors.
"""

import numpy as np
import pytest
import torch
from conftest import encode_conversations as encode
from conftest import greedy, replay_logits
from conftest import media_message as conversation
from conftest import random_image as image
from transformers.video_utils import VideoMetadata

import framefusion
from framefusion import FrameFusionConfig
from framefusion.adapters import adapter_for
from framefusion.adapters.smolvlm import SmolVLMAdapter
from framefusion.tiny_models import smolvlm as tiny_smolvlm
from framefusion.tiny_models.zoo import video_inputs

TOKENS = tiny_smolvlm.TOKENS_PER_TILE
_MODELS: dict = {}


def tiny(attn="sdpa"):
    if attn not in _MODELS:
        _MODELS[attn] = tiny_smolvlm.build(attn_implementation=attn)
    return _MODELS[attn]


def runs(ids, token):
    """(start, end) of every run of ``token`` in a row of ids."""
    flags = (ids == token).tolist() + [False]
    out, start = [], None
    for i, flag in enumerate(flags):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            out.append((start, i))
            start = None
    return out


def derive(processor, inputs, conversations, b, **kwargs):
    """Independent layout of sample b from what was sent: [(position, video, frame, index in tile)].

    The runs of image tokens follow the media in order: an image is rows x cols tiles plus a global
    one (rows and cols from the image processor; 0 x 0: the global tile alone), a video of T frames
    is T tiles; every tile is one run of TOKENS."""
    tile_runs = runs(inputs["input_ids"][b], processor.image_token_id)
    assert all(end - start == TOKENS for start, end in tile_runs)
    expected, r, video = [], 0, -1
    for item in conversations[b][0]["content"]:
        if item["type"] == "image":
            info = processor.image_processor([[item["image"]]], return_row_col_info=True, **kwargs)
            r += info["rows"][0][0] * info["cols"][0][0] + 1
        elif item["type"] == "video":
            video += 1
            for frame in range(len(item["video"])):
                start, _ = tile_runs[r]
                expected += [(start + j, video, frame, j) for j in range(TOKENS)]
                r += 1
    assert r == len(tile_runs)
    return expected


def check_layout(processor, conversations, **kwargs):
    model, _ = tiny()
    inputs = encode(processor, conversations, **kwargs)
    layouts = SmolVLMAdapter(model, processor).video_layouts(dict(inputs))
    assert len(layouts) == len(conversations)
    for b, layout in enumerate(layouts):
        expected = derive(processor, inputs, conversations, b, **kwargs)
        assert layout.positions.tolist() == [e[0] for e in expected]
        assert layout.frame.tolist() == [e[2] for e in expected]
        # equal patch keys <=> same video and same place in the tile
        pairs = set(zip(layout.patch.tolist(), [(e[1], e[3]) for e in expected]))
        assert len(pairs) == len({p for p, _ in pairs}) == len({e for _, e in pairs})
    return inputs, layouts


def test_video_frames_are_labelled_tiles(videos):
    _, processor = tiny()
    inputs, (layout,) = check_layout(processor, [conversation(("video", videos[8]), "What moves?")])
    ids, tok = inputs["input_ids"][0], processor.tokenizer
    assert len(layout) == 8 * TOKENS
    text = tok.decode(ids[: int(layout.positions[0])])
    assert text.endswith(
        "frames from a 0:00:00 [H:MM:SS] video.\n\nFrame from 00:00:<fake_token_around_image><global-img>"
    )
    for k in range(8):  # each frame: "\nFrame from mm:ss:" + <fake><global-img> + TOKENS image tokens + <fake>
        start = int(layout.positions[k * TOKENS])
        tile = tok.decode(ids[start - 2 : start + TOKENS + 1])
        assert tile == "<fake_token_around_image><global-img>" + "<image>" * TOKENS + "<fake_token_around_image>"


def test_real_timestamps_past_a_minute():
    """With video metadata the labels carry real times (here 0:00 to 1:10): every frame is found."""
    _, processor = tiny()
    clip = np.stack([image(seed=s) for s in range(8)])
    text = processor.apply_chat_template(
        [conversation(("video", clip), "When?")], add_generation_prompt=True, tokenize=False
    )
    meta = VideoMetadata(total_num_frames=8, fps=0.1, frames_indices=list(range(8)))
    inputs = processor(text=text, videos=[clip], video_metadata=[meta], return_tensors="pt")
    decoded = processor.tokenizer.decode(inputs["input_ids"][0])
    assert "Frame from 00:50:" in decoded and "Frame from 01:10:" in decoded
    (layout,) = SmolVLMAdapter(tiny()[0], processor).video_layouts(dict(inputs))
    assert layout.positions.tolist() == [
        p for s, e in runs(inputs["input_ids"][0], processor.image_token_id) for p in range(s, e)
    ]
    assert layout.frame.tolist() == [k for k in range(8) for _ in range(TOKENS)]


def test_images_are_not_video(videos):
    """Tiled images, single-tile images (exactly like a frame but without a frame label) and a
    user-written "Frame from" label stay text; frames of videos between images are found."""
    _, processor = tiny()
    convs = [
        conversation(
            ("image", image(200, 100)), ("video", videos[2]), ("image", image(seed=1)), ("video", videos[2]), "?"
        ),
        conversation(("image", image(seed=2)), ("image", image(300, 300, 3)), "Two images."),
        conversation("Frame from 00:00:", ("image", image(seed=4)), "\nFrame from 00:01:", ("image", image(seed=5))),
        conversation(("video", videos[2]), "Just a video."),
    ]
    _, layouts = check_layout(processor, convs)
    assert [len(x) for x in layouts] == [4 * TOKENS, 0, 0, 2 * TOKENS]
    single_tiles = [
        conversation(("image", image(seed=6)), ("video", videos[2]), ("image", image(seed=7)), "?"),
        conversation("Frame from 00:00:", ("image", image(seed=8)), "\nFrame from 00:00:", ("image", image(seed=9))),
    ]
    _, layouts = check_layout(processor, single_tiles, do_image_splitting=False)
    assert [len(x) for x in layouts] == [2 * TOKENS, 0]


def test_two_videos_never_share_keys(videos):
    _, processor = tiny()
    _, (layout,) = check_layout(processor, [conversation(("video", videos[8]), "and", ("video", videos[8]), "Same?")])
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
    inputs, layouts = check_layout(processor, convs)
    assert (inputs["attention_mask"] == 0).any()
    width = inputs["input_ids"].shape[1]
    for b, conv in enumerate(convs):
        single = encode(processor, [conv])
        shift = width - single["input_ids"].shape[1]
        assert torch.equal(inputs["input_ids"][b, shift:], single["input_ids"][0])  # the tiny processor's fix
        (alone,) = SmolVLMAdapter(model, processor).video_layouts(dict(single))
        assert (alone.positions + shift).tolist() == layouts[b].positions.tolist()
        assert alone.frame.tolist() == layouts[b].frame.tolist()


def test_adapter_needs_the_processor():
    model, _ = tiny()
    with pytest.raises(ValueError, match="processor"):
        SmolVLMAdapter(model)
    with pytest.raises(ValueError, match="processor=processor"):
        framefusion.apply(model, FrameFusionConfig(cost=0.3))
    from framefusion.tiny_models import build_tiny_tokenizer  # a tokenizer without SmolVLM's image tokens

    with pytest.raises(ValueError, match="global-img"):
        adapter_for(model, build_tiny_tokenizer())
    assert not hasattr(model, "_framefusion_handle")


def _image_and_video_inputs(processor, img, clip, question):
    """One prompt with an image then a video, with the pixels of both (see the module docstring)."""
    conv = [conversation(("image", img), ("video", clip), question)]
    inputs = dict(encode(processor, conv))
    pixels = processor.image_processor([[img]], return_tensors="pt")
    frames = processor.video_processor([clip], return_tensors="pt")
    inputs["pixel_values"] = torch.cat([pixels["pixel_values"], frames["pixel_values"]], dim=1)
    inputs["pixel_attention_mask"] = torch.cat([pixels["pixel_attention_mask"], frames["pixel_attention_mask"]], dim=1)
    return conv, inputs


def test_generate_with_image_and_video_reduces_frames_only(videos):
    model, processor = tiny()
    conv, inputs = _image_and_video_inputs(processor, image(200, 100), videos[8], "What changes?")
    frames = {e[0] for e in derive(processor, inputs, conv, 0)}
    context = (inputs["input_ids"][0] == processor.image_token_id).nonzero().flatten().tolist()
    image_tokens = set(context) - frames
    assert len(image_tokens) == 3 * TOKENS  # 1 x 2 tiles + the global tile
    with torch.no_grad():
        model(**inputs)  # the pixels match the tokens
    with framefusion.apply(model, FrameFusionConfig(cost=0.2), processor=processor) as handle:
        tokens, step_logits = greedy(model, inputs, n=3)
        report = handle.last_report()
    assert report.vision_tokens == [8 * TOKENS]
    assert report.vision_tokens_per_layer[0][-1] < 8 * TOKENS and report.achieved_cost[0] <= 0.2
    kept = set(report.kept_positions[0])
    assert image_tokens <= kept and len(kept & frames) == report.vision_tokens_per_layer[0][-1]
    replayed = replay_logits(model, inputs, tokens, report.decisions, processor)  # exact decoding
    torch.testing.assert_close(replayed, step_logits, atol=2e-5, rtol=1e-5)


def test_frames_follow_pixel_order(videos):
    """Tile k of a video is filled from the video's frame k: the processor keeps the frames in order."""
    _, processor = tiny()
    clip = videos[8]
    inputs = video_inputs(processor, ["?"], [clip])
    frames = processor.video_processor([clip], return_tensors="pt")["pixel_values"][0]
    assert torch.equal(inputs["pixel_values"][0], frames)


def test_tiny_processor_ragged_batch_equals_single_calls(videos):
    """The tiny processor's one fix: a shorter video in a batch says its own frame count."""
    _, processor = tiny()
    batch = video_inputs(processor, ["A", "B"], [videos[8], videos[16]])
    tok = processor.tokenizer
    assert "series of eight frames" in tok.decode(batch["input_ids"][0])
    assert "series of sixteen frames" in tok.decode(batch["input_ids"][1])
    for b, clip in enumerate([videos[8], videos[16]]):
        single = video_inputs(processor, ["AB"[b]], [clip])
        length = single["input_ids"].shape[1]
        assert torch.equal(batch["input_ids"][b, -length:], single["input_ids"][0])
        assert int(batch["attention_mask"][b].sum()) == length
        assert torch.equal(batch["pixel_values"][b, : len(clip)], single["pixel_values"][0])


def test_unsupported_model_points_to_the_guide():
    with pytest.raises(framefusion.UnsupportedModelError) as exc:
        framefusion.apply(torch.nn.Linear(2, 2))
    assert "docs/adding_a_family.md" in str(exc.value) and "SmolVLMForConditionalGeneration" in str(exc.value)
    from pathlib import Path

    guide = (Path(framefusion.__file__).resolve().parent.parent / "docs" / "adding_a_family.md").read_text()
    for name in ("video_layouts", "first_reducible_layer", "install", "attention_probe", "TINY_FAMILIES", "FAMILIES"):
        assert name in guide
