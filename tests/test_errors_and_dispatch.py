"""Clear errors for bad configs and models; hooks under accelerate dispatch with offload."""

import math

import pytest
import torch
from conftest import greedy, make_inputs

import framefusion
from framefusion import FrameFusionConfig
from framefusion.tiny_models import build_tiny_model


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"cost": 0.0}, ["cost", "(0, 1]", "0.0"]),
        ({"cost": -0.2}, ["cost", "(0, 1]"]),
        ({"cost": 1.01}, ["cost", "1.01"]),
        ({"cost": math.nan}, ["cost", "NaN"]),
        ({"cost": "0.3"}, ["cost", "number", "'0.3'"]),
        ({"cost": True}, ["cost", "number"]),
        ({"similarity_threshold": math.nan}, ["similarity_threshold", "NaN"]),
        ({"similarity_threshold": -1.5}, ["similarity_threshold", "-1.5"]),
        ({"similarity_threshold": math.inf}, ["similarity_threshold", "finite"]),
        ({"ratio_threshold": 1.5}, ["ratio_threshold", "[0, 1]", "1.5"]),
        ({"ratio_threshold": -0.1}, ["ratio_threshold", "-0.1"]),
        ({"ratio_threshold": None}, ["ratio_threshold", "None"]),
    ],
)
def test_invalid_config_names_value_and_range(kwargs, words):
    with pytest.raises((ValueError, TypeError)) as err:
        FrameFusionConfig(**kwargs)
    for w in words:
        assert w in str(err.value)


def test_valid_config_edges():
    assert FrameFusionConfig(cost=1).cost == 1.0
    assert FrameFusionConfig(similarity_threshold=-1, ratio_threshold=0).ratio_threshold == 0.0
    assert FrameFusionConfig(similarity_threshold=2.0).similarity_threshold == 2.0  # merging off


def test_unsupported_model_lists_supported():
    with pytest.raises(framefusion.UnsupportedModelError) as err:
        framefusion.apply(torch.nn.Linear(2, 2))
    msg = str(err.value)
    assert "Linear" in msg
    for name in framefusion.supported_models():
        assert name in msg


def test_unsupported_config_type():
    with pytest.raises(TypeError, match="FrameFusionConfig"):
        framefusion.apply(torch.nn.Linear(2, 2), {"cost": 0.3})


def test_apply_twice_refuses_and_remove_twice_is_harmless(processors):
    model = build_tiny_model("qwen2_vl", num_layers=2, processor=processors["qwen2_vl"])
    handle = framefusion.apply(model)
    with pytest.raises(RuntimeError, match="already applied"):
        framefusion.apply(model)
    handle.remove()
    handle.remove()
    framefusion.apply(model).remove()  # after removal, applying again works


def test_remove_gives_back_the_users_own_wrappers(processors, videos):
    """A user's (or another library's) instance-level wrappers of the methods framefusion wraps survive
    apply/remove, and are still called while framefusion is applied."""
    family = "qwen2_vl"
    model = build_tiny_model(family, num_layers=2, processor=processors[family])
    base, calls = model.model, []
    user_generate, user_features = model.generate, base.get_video_features

    def generate(*args, **kwargs):
        calls.append("generate")
        return user_generate(*args, **kwargs)

    def get_video_features(*args, **kwargs):
        calls.append("features")
        return user_features(*args, **kwargs)

    model.generate, base.get_video_features = generate, get_video_features
    with framefusion.apply(model, FrameFusionConfig(cost=0.5)):
        assert model.generate is not generate and base.get_video_features is not get_video_features
        inputs = make_inputs(processors[family], ["What moves?"], [videos[8]])
        model.generate(**inputs, max_new_tokens=1, do_sample=False)
    assert calls == ["generate", "features"]
    assert vars(model)["generate"] is generate and vars(base)["get_video_features"] is get_video_features


def test_unsupported_attention_implementation(processors):
    model = build_tiny_model("qwen2_vl", num_layers=2, processor=processors["qwen2_vl"])
    model.config.text_config._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match="flex_attention.*sdpa"):
        framefusion.apply(model)


def test_accelerate_dispatch_with_cpu_and_disk_offload(processors, videos, tmp_path):
    from transformers import Qwen2VLForConditionalGeneration

    processor = processors["qwen2_vl"]
    reference = build_tiny_model("qwen2_vl", num_layers=4, processor=processor)
    reference.save_pretrained(tmp_path / "model")
    device_map = {
        "model.visual": "cpu",
        "model.language_model.embed_tokens": "cpu",
        "model.language_model.layers.0": "cpu",
        "model.language_model.layers.1": "disk",
        "model.language_model.layers.2": "disk",
        "model.language_model.layers.3": "cpu",
        "model.language_model.norm": "cpu",
        "model.language_model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }
    offloaded = Qwen2VLForConditionalGeneration.from_pretrained(
        tmp_path / "model", device_map=device_map, offload_folder=str(tmp_path / "offload")
    ).eval()
    assert hasattr(offloaded.model.language_model.layers[1], "_hf_hook")
    inputs = make_inputs(processor, ["What moves?"], [videos[16]])
    config = FrameFusionConfig(cost=0.3, similarity_threshold=0.95, ratio_threshold=0.5)
    results = []
    for m in (reference, offloaded):
        with framefusion.apply(m, config) as handle:
            results.append((*greedy(m, inputs, n=4), handle.last_report()))
    (t0, l0, r0), (t1, l1, r1) = results
    assert any(d.kind == "prune" for d in r0.decisions[0]), "the case must exercise pruning"
    assert r0.vision_tokens_per_layer == r1.vision_tokens_per_layer
    assert torch.equal(t0, t1)
    torch.testing.assert_close(l0, l1, atol=1e-5, rtol=1e-5)


def test_static_cache_is_refused_clearly(processors, videos):
    model = build_tiny_model("qwen2_vl", num_layers=2, processor=processors["qwen2_vl"])
    inputs = make_inputs(processors["qwen2_vl"], ["What moves?"], [videos[8]])
    with framefusion.apply(model, FrameFusionConfig(cost=0.3)):
        with pytest.raises(ValueError, match="dynamic KV cache.*StaticCache"):
            model.generate(**inputs, max_new_tokens=2, cache_implementation="static")
        tokens, _ = greedy(model, inputs, n=2)  # still usable afterwards
    assert tokens.shape == (1, 2)



def test_inputs_embeds_without_ids_warns_and_reduces_nothing(processors, videos, caplog):
    processor = processors["qwen2_vl"]
    model = build_tiny_model("qwen2_vl", num_layers=2, processor=processor)
    inputs = make_inputs(processor, ["What moves?"], [videos[8]])
    with torch.no_grad():
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        base = model.model.language_model(inputs_embeds=embeds).last_hidden_state
        with framefusion.apply(model, FrameFusionConfig(cost=0.3)), caplog.at_level("WARNING", logger="framefusion"):
            got = model.model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).last_hidden_state
    assert "without input_ids" in caplog.text
    assert got.shape == base.shape


def test_apply_inside_an_applied_model_and_the_reverse_are_refused(processors):
    model = build_tiny_model("qwen2_vl", processor=processors["qwen2_vl"])
    with framefusion.apply(model, FrameFusionConfig()):
        with pytest.raises(RuntimeError, match="already applied to this model's decoder"):
            framefusion.apply(model.model, FrameFusionConfig())
    with framefusion.apply(model.model, FrameFusionConfig()):
        with pytest.raises(RuntimeError, match="already applied"):
            framefusion.apply(model, FrameFusionConfig())
    framefusion.apply(model, FrameFusionConfig()).remove()  # nothing left behind


def test_copying_or_pickling_an_applied_model_says_to_remove_first(processors, tmp_path):
    import copy
    import pickle

    model = build_tiny_model("qwen2_vl", processor=processors["qwen2_vl"])
    with framefusion.apply(model, FrameFusionConfig()):
        for attempt in (lambda: copy.deepcopy(model), lambda: pickle.dumps(model), lambda: torch.save(model, tmp_path / "m.pt")):
            with pytest.raises(TypeError, match=r"remove\(\) first"):
                attempt()
        torch.save(model.state_dict(), tmp_path / "state.pt")  # weights can be saved at any time
    clone = copy.deepcopy(model)  # after remove(): an ordinary model
    assert all(not m._forward_pre_hooks for m in clone.modules())
