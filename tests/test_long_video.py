"""Chunked vision encoding (``framefusion.chunked_vision``): the vision tower over a few frames at a time.

Every family's tiny model (real transformers classes, seeded random weights, real processors): the
features of a chunked call are bitwise equal to one pass (``torch.equal``: every op of these towers acts
per frame / temporal patch, and on this CPU the per-row results of the matrix products do not depend on
how many rows are multiplied at once; had that not held, the comparison would have been a tolerance),
for chunk sizes that divide the frame count and that do not, for a batch of two videos (of different
lengths where the family allows); ``generate`` gives the same tokens and logits with and without chunking,
with and without ``framefusion.apply`` in either order, and with ``vision_features_reused``; removing in any
order restores the model; bad settings are refused; the vision stage's peak live tensor memory is
bounded by the chunk, and the long-clip pipeline of ``scripts/long_video.py`` holds its bound at 120 frames.
"""

import pytest
import torch
from conftest import greedy

import framefusion
from framefusion import FrameFusion
from framefusion.adapters import UnsupportedModelError
from framefusion.adapters.base import Adapter
from framefusion.tiny_models import make_synthetic_video
from framefusion.tiny_models.zoo import TINY_FAMILIES, build, video_inputs
from framefusion.tools.evaluate import vision_features_reused
from framefusion.tools.memory import LiveTensorMemory

FAMILIES = sorted(TINY_FAMILIES)  # every family that has a tiny model
GRID = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "glm4v"}  # flattened patches + video_grid_thw, temporal patch 2
LLAVA = {"llava_onevision", "llava_next_video", "video_llava"}  # one stacked tensor: equal frame counts
_MODELS: dict = {}


def tiny(family):
    if family not in _MODELS:
        _MODELS[family] = build(family, num_layers=2)
    return _MODELS[family]


def two_videos(family):
    """Two different clips: 12 and 8 frames, or 8 and 8 where the videos of a batch are one tensor."""
    first = 8 if family in LLAVA else 12
    return [
        make_synthetic_video(num_frames=first, size=112, seed=3),
        make_synthetic_video(8, 112, seed=4, num_objects=3),
    ]


def chunk_sizes(family):
    """Chunks that divide the frames of every video and chunks that do not (and cross from one video into
    the next); Qwen/GLM chunks are whole temporal patches of 2 frames."""
    return (2, 4, 6) if family in GRID else (3, 4, 5)


def towers(model):
    base = model.model
    return [getattr(base, n) for n in ("visual", "vision_tower", "video_tower", "image_tower", "vision_model")
            if hasattr(base, n)]  # fmt: skip


def features(model, inputs):
    """What the model's forward takes from the vision stage, for the inputs' frames."""
    base = model.model
    with torch.no_grad():
        if "pixel_values_videos" in inputs:
            grid = {"video_grid_thw": inputs["video_grid_thw"]} if "video_grid_thw" in inputs else {}
            return base.get_video_features(inputs["pixel_values_videos"], **grid, return_dict=True)
        mask = {"pixel_attention_mask": inputs["pixel_attention_mask"]} if "pixel_attention_mask" in inputs else {}
        return base.get_image_features(inputs["pixel_values"], **mask, return_dict=True)


def leaves(value, path="output"):
    """(path, tensor) of every tensor in a nested output, in order."""
    if isinstance(value, torch.Tensor):
        return [(path, value)]
    if isinstance(value, dict):
        return [x for k in value.keys() for x in leaves(value[k], f"{path}.{k}")]
    if isinstance(value, (tuple, list)):
        return [x for i, v in enumerate(value) for x in leaves(v, f"{path}[{i}]")]
    return []


def assert_same_output(expected, got):
    """Same structure, same type, every tensor bitwise equal, and tensors shared between two places of the
    expected output shared in the chunked one too."""
    assert type(got) is type(expected)
    a, b = leaves(expected), leaves(got)
    assert [p for p, _ in a] == [p for p, _ in b]
    for (path, x), (_, y) in zip(a, b):
        assert x.shape == y.shape and x.dtype == y.dtype, path
        assert torch.equal(x, y), (path, (x - y).abs().max())
    ids_a, ids_b = [id(x) for _, x in a], [id(y) for _, y in b]
    assert [ids_a.index(i) for i in ids_a] == [ids_b.index(i) for i in ids_b]  # the same aliasing


@pytest.mark.parametrize("family", FAMILIES)
def test_chunked_features_equal_one_pass(family):
    model, processor = tiny(family)
    inputs = video_inputs(processor, ["What moves?", "Count the shapes."], two_videos(family))
    expected = features(model, inputs)
    for frames in chunk_sizes(family):
        with framefusion.chunked_vision(model, frames=frames) as handle:
            got = features(model, inputs)
        assert handle.last_chunks > 1, frames  # it really was split
        assert_same_output(expected, got)


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_identical_with_chunking_and_apply_in_any_order(family):
    model, processor = tiny(family)
    inputs = video_inputs(processor, ["What moves?", "Count the shapes."], two_videos(family))
    frames = chunk_sizes(family)[-1]
    method = FrameFusion(cost=0.6)  # Qwen3-VL's 2-layer tiny model: the deepstack layer sees every token
    tokens, logits = greedy(model, inputs, n=3)
    with framefusion.chunked_vision(model, frames=frames) as handle:
        chunked = greedy(model, inputs, n=3)
        assert handle.last_chunks > 1
    with framefusion.apply(model, method, processor=processor):
        reduced = greedy(model, inputs, n=3)
    assert torch.equal(chunked[0], tokens) and torch.equal(chunked[1], logits)

    base = model.model
    before = {id(t): dict(vars(t)).get("forward") for t in towers(model)}, dict(vars(base)).get("get_video_features")
    for chunk_first in (True, False):
        for remove_chunks_first in (True, False):
            if chunk_first:
                chunks = framefusion.chunked_vision(model, frames=frames)
                handle = framefusion.apply(model, method, processor=processor)
            else:
                handle = framefusion.apply(model, method, processor=processor)
                chunks = framefusion.chunked_vision(model, frames=frames)
            got = greedy(model, inputs, n=3)
            assert chunks.last_chunks > 1
            assert torch.equal(got[0], reduced[0]) and torch.equal(got[1], reduced[1]), (
                chunk_first,
                remove_chunks_first,
            )
            for h in (chunks, handle) if remove_chunks_first else (handle, chunks):
                h.remove()
            after = (
                {id(t): dict(vars(t)).get("forward") for t in towers(model)},
                dict(vars(base)).get("get_video_features"),
            )
            assert after == before
            assert all("forward" not in vars(t) for t in towers(model))
    assert all(torch.equal(x, y) for x, y in zip(greedy(model, inputs, n=3), (tokens, logits)))


def test_composes_with_vision_features_reused():
    """Inside ``vision_features_reused`` (either nesting), the tower runs once per batch, in chunks, and every
    setting answers as without either."""
    model, processor = tiny("qwen2_vl")
    inputs = video_inputs(processor, ["What moves?", "Count the shapes."], two_videos("qwen2_vl"))
    untouched = greedy(model, inputs, n=3)
    with framefusion.apply(model, FrameFusion(cost=0.3)):
        reduced = greedy(model, inputs, n=3)
    calls = []
    hook = model.model.visual.patch_embed.register_forward_hook(lambda *a: calls.append(1))  # once per chunk
    try:
        for reused_outside in (True, False):
            calls.clear()
            if reused_outside:
                outer, inner = vision_features_reused(model), framefusion.chunked_vision(model, frames=4)
            else:
                outer, inner = framefusion.chunked_vision(model, frames=4), vision_features_reused(model)
            with outer, inner:
                first = greedy(model, inputs, n=3)
                with framefusion.apply(model, FrameFusion(cost=0.3)):
                    second = greedy(model, inputs, n=3)
            assert len(calls) == 5  # 10 temporal patches in chunks of 2, once for both settings
            assert all(torch.equal(x, y) for x, y in zip(first, untouched))
            assert all(torch.equal(x, y) for x, y in zip(second, reduced))
            assert "forward" not in vars(model.model.visual) and "get_video_features" not in vars(model.model)
    finally:
        hook.remove()


def test_images_beside_the_video_are_chunked_too():
    """Qwen2-VL encodes images with the same tower (one temporal patch each): a prompt with an image and a
    video generates the same with chunking."""
    from conftest import encode_conversations, media_message, random_image

    model, processor = tiny("qwen2_vl")
    conversation = media_message(("image", random_image(seed=1)), ("video", two_videos("qwen2_vl")[0]), "Same?")
    inputs = encode_conversations(processor, [conversation])
    expected = greedy(model, inputs, n=3)
    with framefusion.chunked_vision(model, frames=4):
        got = greedy(model, inputs, n=3)
    assert all(torch.equal(x, y) for x, y in zip(got, expected))


# ------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("frames", [0, -4, 2.5, True, "4", None])
def test_bad_frames_are_refused(frames):
    model, _ = tiny("qwen2_vl")
    with pytest.raises(ValueError, match="frames="):
        framefusion.chunked_vision(model, frames=frames)
    assert "forward" not in vars(model.model.visual)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "glm4v"])
def test_a_chunk_that_splits_a_temporal_patch_is_refused(family):
    model, _ = tiny(family)
    with pytest.raises(ValueError, match=r"frames=3 is not a multiple of temporal_patch_size=2.*multiple of 2"):
        framefusion.chunked_vision(model, frames=3)


def test_an_encoder_not_checked_is_refused():
    """LLaVA-OneVision is built with ``AutoModel.from_config(vision_config)``: with a ViT tower (not one of
    the classes whose frame independence was read) it is refused, naming the class and what is allowed."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, Qwen2Config, ViTConfig

    config = LlavaOnevisionConfig(
        text_config=Qwen2Config(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        ),  # fmt: skip
        vision_config=ViTConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),  # fmt: skip
        image_token_id=60,
        video_token_id=61,
    )
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    with pytest.raises(ValueError, match="ViTModel vision encoder: only SiglipVisionModel, CLIPVisionModel"):
        framefusion.chunked_vision(model, frames=4)
    assert "forward" not in vars(model.model.vision_tower)


def test_a_family_without_chunking_knowledge_is_refused_and_unknown_models_too():
    model, _ = tiny("qwen2_vl")
    with pytest.raises(ValueError, match="not available for Adapter"):
        Adapter.frame_encoders(model, 4)  # the default a new family's adapter gets
    with pytest.raises(UnsupportedModelError, match="chunked_vision does not know Linear"):
        framefusion.chunked_vision(torch.nn.Linear(2, 2), frames=4)


def test_chunking_twice_and_precomputed_encoder_inputs_are_refused():
    model, processor = tiny("qwen2_vl")
    inputs = video_inputs(processor, ["What moves?"], two_videos("qwen2_vl")[:1])
    visual = model.model.visual
    with framefusion.chunked_vision(model, frames=4):
        with pytest.raises(ValueError, match="already chunked"):
            framefusion.chunked_vision(model, frames=2)
        cu_seqlens = torch.arange(0, inputs["pixel_values_videos"].shape[0] + 1, 64, dtype=torch.int32)
        with pytest.raises(ValueError, match="precomputed cu_seqlens"), torch.no_grad():
            visual(inputs["pixel_values_videos"], grid_thw=inputs["video_grid_thw"], cu_seqlens=cu_seqlens)
        with pytest.raises(ValueError, match="hidden_states has 10 patch rows"), torch.no_grad():
            visual(inputs["pixel_values_videos"][:10], grid_thw=inputs["video_grid_thw"])


def test_remove_restores_the_attribute_found():
    """A forward the user had set on the tower instance comes back, and removing twice is harmless."""
    model, processor = tiny("internvl")
    tower = model.model.vision_tower
    own = tower.forward  # a bound method: set as the instance's own attribute
    tower.forward = own
    try:
        handle = framefusion.chunked_vision(model, frames=4)
        assert vars(tower)["forward"] is not own
        handle.remove()
        handle.remove()
        assert vars(tower)["forward"] is own
    finally:
        del tower.forward
    assert "forward" not in vars(tower)
    assert "removed" in repr(handle) and "frames=4" in repr(handle)


# ------------------------------------------------------------------------------------------- memory


def test_live_tensor_memory_counts_storages_once_and_frees_them():
    before = torch.ones(1000)
    with LiveTensorMemory() as mem:
        a = torch.zeros(1000)  # 4000 bytes
        view = a[10:]  # shares a's storage
        b = a + 1  # 4000 more
        before.add_(1)  # made before the block: not counted
        del b
        c = torch.empty(250)  # 1000
    assert (mem.live, mem.peak) == (5000, 8000)
    del a, view
    assert mem.live == 1000
    del c
    assert mem.live == 0


def _vision_peak(model, inputs):
    with torch.no_grad(), LiveTensorMemory() as mem:
        out = features(model, inputs)
    return out, mem.peak


@pytest.mark.parametrize("family, frames, chunk", [("qwen2_vl", 96, 8), ("internvl", 64, 8)])
def test_chunked_vision_peak_is_bounded_by_the_chunk(family, frames, chunk):
    """On a long clip the vision stage's peak live tensor memory in chunks is below one chunk's own peak plus
    twice the output (the join), and far below the one-pass peak (measured: qwen2_vl 96 frames, 4.17 MiB
    one pass, 0.94 MiB in chunks of 8; internvl 64 frames, 4.06 against 1.76)."""
    model, processor = tiny(family)
    clip = make_synthetic_video(num_frames=frames, size=112, seed=5)
    inputs = video_inputs(processor, ["What moves?"], [clip])
    one, one_peak = _vision_peak(model, inputs)
    output = sum({t.untyped_storage()._cdata: t.untyped_storage().nbytes() for _, t in leaves(one)}.values())
    with framefusion.chunked_vision(model, frames=chunk) as handle:
        chunked, chunked_peak = _vision_peak(model, inputs)
    assert handle.last_chunks == frames // chunk
    assert_same_output(one, chunked)
    _, chunk_peak = _vision_peak(model, video_inputs(processor, ["What moves?"], [clip[:chunk]]))
    bound = chunk_peak + 2 * output
    print(f"{family} {frames} frames: one pass {one_peak / 2**20:.2f} MiB, chunks of {chunk}: "
          f"{chunked_peak / 2**20:.2f} MiB (bound {bound / 2**20:.2f}: one chunk {chunk_peak / 2**20:.2f} "
          f"+ 2 x output {output / 2**20:.2f})")  # fmt: skip
    assert chunked_peak <= bound
    assert one_peak >= 2 * chunked_peak


def test_the_long_clip_pipeline_at_120_frames():
    """``scripts/long_video.py``'s measurements at 120 frames (2160 video tokens) on the shipped synthetic-v2
    model: chunked features equal, the chunked vision peak within its bound and at least 3x below one pass
    (measured 22.3 against 5.5 MiB), the same answer untouched with and without chunking, and a KV cache
    whose bytes follow the tokens each layer keeps (FrameFusion at cost 0.3: about 0.3 of them)."""
    from framefusion.tools.long_video import measure_long_video

    r = measure_long_video(frames=120, chunk=16, new_tokens=2)
    v = r["vision"]
    assert v["equal"] and v["chunks"] == 8
    assert v["peak_chunked"] <= v["bound_chunked"]
    assert v["peak_one_pass"] >= 3 * v["peak_chunked"]
    one_pass, chunked, reduced = r["generate"]
    assert chunked["tokens"] == one_pass["tokens"] and all(g["counted_run_same_tokens"] for g in r["generate"])
    assert chunked["kv_cache_bytes"] == one_pass["kv_cache_bytes"]
    per_token = {layer["bytes"] // layer["tokens"] for g in r["generate"] for layer in g["kv_cache"]}
    assert len(per_token) == 1  # every layer's cache is proportional to the tokens it holds
    assert reduced["achieved_cost"] <= 0.3
    assert reduced["kv_cache_bytes"] <= 0.35 * one_pass["kv_cache_bytes"]
    assert reduced["peak_tensor_bytes"] < one_pass["peak_tensor_bytes"]
