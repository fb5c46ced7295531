"""Tests for the offline tiny Qwen2-VL / Qwen2.5-VL builders and the video helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from framefusion.tiny_models import (
    FAMILIES,
    build_tiny,
    build_tiny_model,
    build_tiny_processor,
    demo_video_path,
    make_synthetic_video,
    read_video,
    tiny_token_ids,
    write_video,
)

TOKENS_PER_FRAME_PAIR = 16  # 112x112 -> 8x8 patches of 14 -> 2x2 merge -> 4x4


def _prompt(processor, text: str = "What is happening in this video?", video_first: bool = True) -> str:
    items = [{"type": "video"}, {"type": "text", "text": text}]
    messages = [{"role": "user", "content": items if video_first else items[::-1]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@pytest.fixture(scope="module")
def demo() -> np.ndarray:
    return read_video(demo_video_path())


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def tiny(request):
    model, processor = build_tiny(request.param)
    return request.param, model, processor


# ------------------------------------------------------------------------------------------ processor


def test_token_ids_are_distinct_and_consistent() -> None:
    ids = tiny_token_ids()
    names = ("image", "video", "vision_start", "vision_end", "pad", "eos", "im_start")
    assert len({ids[n] for n in names}) == len(names)
    assert all(0 <= ids[n] < ids["vocab_size"] for n in names)
    assert ids["pad"] == ids["endoftext"] and ids["eos"] == ids["im_end"]
    for family in FAMILIES:
        assert tiny_token_ids(build_tiny_processor(family)) == ids


def test_chat_template_format() -> None:
    processor = build_tiny_processor()
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "video"},
                {"type": "text", "text": "Compare them."},
            ],
        },
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        "<|vision_start|><|video_pad|><|vision_end|>Compare them.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert not processor.apply_chat_template(messages, tokenize=False).endswith("assistant\n")
    tok = processor.tokenizer
    plain = "Hello, World! 0123456789 ~{}[]"
    assert tok.decode(tok(plain).input_ids) == plain
    assert tok.convert_ids_to_tokens(tok("<|video_pad|>").input_ids) == ["<|video_pad|>"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_processor_save_and_auto_load_round_trip(family: str, tmp_path, demo: np.ndarray) -> None:
    processor = build_tiny_processor(family)
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is type(processor)
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.video_processor.do_sample_frames is False
    assert tiny_token_ids(loaded) == tiny_token_ids(processor)
    text = _prompt(processor)
    assert _prompt(loaded) == text
    a = processor(text=[text], videos=[demo], return_tensors="pt")
    b = loaded(text=[text], videos=[demo], return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(a["pixel_values_videos"], b["pixel_values_videos"])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_video_tokens_from_shipped_asset(family: str, demo: np.ndarray) -> None:
    assert demo.shape == (16, 112, 112, 3) and demo.dtype == np.uint8
    processor = build_tiny_processor(family)
    ids = tiny_token_ids(processor)
    text = _prompt(processor)
    for frames in (demo, demo[:8]):
        out = processor(text=[text], videos=[frames], return_tensors="pt")
        t = len(frames) // 2
        assert out["video_grid_thw"].tolist() == [[t, 8, 8]]
        assert out["pixel_values_videos"].shape == (t * 64, 3 * 2 * 14 * 14)
        input_ids = out["input_ids"][0]
        assert (input_ids == ids["video"]).sum().item() == t * TOKENS_PER_FRAME_PAIR
        assert (input_ids == ids["vision_start"]).sum().item() == 1
        assert (input_ids == ids["vision_end"]).sum().item() == 1
    # an in-memory array inside the conversation gives the same ids when tokenized by the template
    messages = [{"role": "user", "content": [{"type": "video", "video": demo}, {"type": "text", "text": "Hi"}]}]
    via_template = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    direct = processor(text=[_prompt(processor, "Hi")], videos=[demo], return_tensors="pt")
    assert torch.equal(via_template["input_ids"], direct["input_ids"])


# ------------------------------------------------------------------------------------------ models


def test_model_config_matches_tokenizer(tiny) -> None:
    family, model, processor = tiny
    ids = tiny_token_ids(processor)
    cfg = model.config
    assert type(model) is FAMILIES[family][1]
    assert (cfg.image_token_id, cfg.video_token_id) == (ids["image"], ids["video"])
    assert (cfg.vision_start_token_id, cfg.vision_end_token_id) == (ids["vision_start"], ids["vision_end"])
    assert cfg.text_config.vocab_size == ids["vocab_size"] == len(processor.tokenizer)
    assert cfg.text_config.pad_token_id == ids["pad"]
    assert ids["eos"] in model.generation_config.eos_token_id
    assert not model.training


def test_build_tiny_model_is_seeded() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = build_tiny_model(seed=7)
    assert torch.equal(torch.rand(3), expected_next), "building must not disturb the global RNG"
    b = build_tiny_model(seed=7)
    c = build_tiny_model(seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_build_options() -> None:
    model = build_tiny_model("qwen2_5_vl", num_layers=2, hidden_size=32, num_heads=2, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and model.config.text_config.num_hidden_layers == 2
    with pytest.raises(ValueError, match="unknown family"):
        build_tiny_processor("llava")


def test_generate_batch_one_and_left_padded_batch_two(tiny, demo: np.ndarray) -> None:
    _, model, processor = tiny
    prompts = [_prompt(processor), _prompt(processor, "Describe the video in detail, please.", False)]
    videos = [demo, demo[:6]]
    gen = dict(max_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True)
    singles = []
    for text, video in zip(prompts, videos):
        inputs = processor(text=[text], videos=[video], return_tensors="pt")
        out = model.generate(**inputs, **gen)
        assert out.sequences.shape == (1, inputs["input_ids"].shape[1] + 4)
        singles.append(out)
    batch = processor(text=prompts, videos=videos, return_tensors="pt", padding=True)
    mask = batch["attention_mask"]
    assert mask[:, -1].all() and not mask[1, 0], "expected left padding"
    out = model.generate(**batch, **gen)
    assert out.sequences.shape == (2, batch["input_ids"].shape[1] + 4)
    for i, single in enumerate(singles):
        assert torch.equal(out.sequences[i, -4:], single.sequences[0, -4:])
        for step, score in enumerate(single.scores):
            torch.testing.assert_close(out.scores[step][i], score[0], atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------ videos


def test_demo_asset_is_small_and_decodable(demo: np.ndarray) -> None:
    from framefusion.data.synthetic_qa import make_sample

    path = demo_video_path()
    assert path.is_file() and path.stat().st_size < 200_000
    # the shipped clip is sample 0 of the synthetic QA "demo" split (scripts/make_demo_video.py)
    reference = make_sample("demo", 0, num_frames=16, size=112, kind="turns_into").video
    assert demo.shape == reference.shape
    assert np.abs(demo.astype(int) - reference).mean() < 10  # lossy codec, same content


def test_synthetic_video_background_is_static() -> None:
    video = make_synthetic_video(num_frames=16, size=112, seed=3, num_objects=3)
    background = make_synthetic_video(num_frames=1, size=112, seed=3, num_objects=0)[0]
    assert video.shape == (16, 112, 112, 3) and video.dtype == np.uint8
    assert np.array_equal(video, make_synthetic_video(num_frames=16, size=112, seed=3, num_objects=3))
    covered = (video != background).any(-1)  # (T, H, W): pixels covered by an object
    assert covered.any(axis=(1, 2)).all() and covered.mean() < 0.3
    for t in range(len(video) - 1):
        free = ~covered[t] & ~covered[t + 1]
        assert np.array_equal(video[t][free], video[t + 1][free])
    assert not np.array_equal(covered[0], covered[-1]), "objects should move"
    assert not np.array_equal(background, make_synthetic_video(1, 112, seed=4, num_objects=0)[0])


def test_write_read_round_trip_and_sampling(tmp_path) -> None:
    frames = make_synthetic_video(num_frames=10, size=56, seed=1)
    path = write_video(frames, tmp_path / "sub" / "clip.mp4", fps=5)
    video = read_video(path)
    assert video.shape == frames.shape and video.dtype == np.uint8
    assert np.abs(video.astype(int) - frames).mean() < 10
    sampled = read_video(path, num_frames=4)
    assert np.array_equal(sampled, video[[0, 3, 6, 9]])


def test_read_video_errors_name_the_path(tmp_path) -> None:
    missing = tmp_path / "missing.mp4"
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_video(missing)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "truncated.mp4").write_bytes(demo_video_path().read_bytes()[:500])
    for name in ("empty.mp4", "garbage.mp4", "truncated.mp4"):
        with pytest.raises(ValueError, match=name):
            read_video(tmp_path / name)
    with pytest.raises(ValueError):
        read_video(demo_video_path(), num_frames=0)
