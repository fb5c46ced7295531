"""Equal-compute planning (issue 17): FLOP-priced budgets, the planned cost, and what runs spend.

The references are independent of the books: the FLOPs of a schedule are summed layer by layer with
``layer_flops`` and the vision tower's are counted by torch's flop counter on the tower itself.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

import framefusion as ff
from framefusion.algorithm import TokenBudget
from framefusion.flops import FlopPrice, layer_flops
from framefusion.ledger import BudgetExceededError, Ledger
from framefusion.planning import PromptCompute, measure_prompt, plan_cost, plan_frames
from framefusion.tools.video import spread_frames

SETTINGS = dict(deadline=None, derandomize=True, max_examples=60)


@st.composite
def llm_configs(draw):
    heads = draw(st.sampled_from([2, 4, 8]))
    head_dim = draw(st.sampled_from([8, 16, 64, 128]))
    return SimpleNamespace(
        hidden_size=heads * head_dim,
        num_attention_heads=heads,
        num_key_value_heads=draw(st.sampled_from([1, 2, heads])),
        head_dim=head_dim,
        intermediate_size=draw(st.sampled_from([32, 256, 4096])),
        num_hidden_layers=draw(st.integers(1, 40)),
    )


# ------------------------------------------------------------------------------------- priced books
@settings(**SETTINGS)
@given(llm_configs(), st.integers(0, 300), st.integers(1, 2000), st.floats(0.01, 1.0), st.data())
def test_priced_max_constant_is_the_largest_count_whose_flops_fit(config, text, n, cost, data):
    """After any charged prefix, max_constant() is the largest k that, kept to the last layer, spends no
    more FLOPs than cost x the unreduced vision FLOPs (found here by scanning every k)."""
    layers = config.num_hidden_layers
    price = FlopPrice(config, text, n)
    books = TokenBudget(cost, layers, n, price)
    prefix = data.draw(st.lists(st.integers(0, n), max_size=layers - 1))
    for c in prefix:
        books.charge(c)
    added = lambda k: layer_flops(config, text + k) - layer_flops(config, text)  # noqa: E731
    allowed = cost * layers * added(n) - sum(added(c) for c in prefix)
    left = layers - len(prefix)
    fits = [k for k in range(0, (layers + 1) * n + 1) if left * added(k) <= allowed * (1 + 1e-12)]
    expected = max(fits) if fits else 0
    assert books.max_constant() == expected
    assert math.isclose(price(n), n)


def test_a_priced_ledger_refuses_a_layer_that_would_overspend_flops():
    config = SimpleNamespace(hidden_size=64, num_attention_heads=4, num_key_value_heads=4, head_dim=16,
                             intermediate_size=128, num_hidden_layers=4)  # fmt: skip
    ledger = Ledger(ff.FrameFusion(cost=0.3), 400, 4, price=FlopPrice(config, 20, 400))
    assert ledger.view.max_constant() > 0.3 * 400  # attention is convex in the count: a FLOP budget affords more tokens
    ledger.charge(400)  # the first layer whole: 400 of 480 token-layer equivalents
    k = ledger.view.max_constant()
    ledger.charge(k)
    ledger.charge(k)
    last = ledger.view.max_constant()  # one layer left: the most its remaining FLOPs pay for
    assert last >= k
    with pytest.raises(BudgetExceededError, match=r"left \d+ video tokens \(price [\d.]+\) at layer 3.*priced token-layers"):
        ledger.charge(last + 1)
    ledger.charge(last)


def test_apply_names_the_budget_units(v2):
    model = v2[0]
    with pytest.raises(ValueError, match=r"budget='joules' is not a budget unit; allowed: 'token-layers', 'flops'"):
        ff.apply(model, ff.FrameFusion(cost=0.3), budget="joules")


# ------------------------------------------------------------------------------------- the plan
@settings(**SETTINGS)
@example(SimpleNamespace(hidden_size=16, num_attention_heads=2, num_key_value_heads=1, head_dim=8, intermediate_size=32,
                         num_hidden_layers=1), 1, 291, 2, 0.0, 0)  # a plan at exactly the matched count: rounding
@given(llm_configs(), st.integers(1, 200), st.integers(1, 400), st.integers(2, 4), st.floats(0.0, 3.0), st.integers(0, 30))
def test_the_planned_cost_affords_exactly_the_counts_whose_total_fits(config, text, per_frame_tokens, multiple,
                                                                       vision_per_token, extra_text):  # fmt: skip
    """At the planned cost, the FLOP-priced books afford from the first layer on the largest constant
    count k with vision(mF) + L f(T + k) <= vision(F) + L f(T + N_F), found by scanning every k."""
    layers = config.num_hidden_layers
    frames = 4
    unit = layer_flops(config, 1)  # the vision tower priced per token relative to an LLM layer
    matched = PromptCompute(frames, text, frames * per_frame_tokens, vision_per_token * unit * frames * per_frame_tokens)
    n = multiple * frames * per_frame_tokens
    wanted = PromptCompute(multiple * frames, text + extra_text, n, vision_per_token * unit * n)
    target = matched.vision_flops + layers * layer_flops(config, text + matched.vision_tokens)
    fits = [k for k in range(n + 1) if wanted.vision_flops + layers * layer_flops(config, wanted.text_tokens + k) <= target * (1 + 1e-12)]
    try:
        plan = plan_cost(config, wanted, matched)
    except ValueError as err:
        assert "cannot cost as little as" in str(err)
        assert max(fits, default=0) == 0  # not even one vision token fits: no cost > 0 can plan it
        return
    books = TokenBudget(plan.cost, layers, n, FlopPrice(config, wanted.text_tokens, n))
    assert books.max_constant() == max(fits)
    assert plan.flops([max(fits)] * layers) <= target * (1 + 1e-12)
    assert math.isclose(plan.target_flops, target)


def test_plans_that_cannot_be_met_say_why_and_what_to_change():
    config = SimpleNamespace(hidden_size=64, num_attention_heads=4, num_key_value_heads=4, head_dim=16,
                             intermediate_size=128, num_hidden_layers=4)  # fmt: skip
    matched = PromptCompute(16, 20, 160, 1e9)
    wanted = PromptCompute(64, 20, 640, 4e9)  # the tower alone at 64 frames costs 4x the tower at 16
    with pytest.raises(ValueError, match=r"64 frames cannot cost as little as 16 untouched .* the vision tower and the text "
                                         r"at 64 frames already cost .*scope='llm'"):  # fmt: skip
        plan_cost(config, wanted, matched)
    assert 0 < plan_cost(config, wanted, matched, scope="llm").cost < 0.25
    with pytest.raises(ValueError, match=r"wanted frame count \(16\) is below the matched one \(64\)"):
        plan_cost(config, matched, wanted)
    with pytest.raises(ValueError, match=r"scope='gpu' is not a planning scope; allowed: 'total', 'llm'"):
        plan_cost(config, wanted, matched, scope="gpu")
    assert plan_cost(config, matched, matched).cost == 1.0  # the same frames: nothing to reduce


# ------------------------------------------------------------------------------------- on a model
@pytest.fixture(scope="module")
def v2():
    from framefusion.data.synthetic_qa import chat_text
    from framefusion.data.synthetic_qa_v2 import make_sample
    from framefusion.tools.loading import load_model

    model, processor, _ = load_model("synthetic-v2", device="cpu")
    sample = make_sample("test", 3, num_frames=64)

    def make_inputs(n):
        return processor(text=[chat_text(processor, sample.question)], videos=[spread_frames(sample.video, n)],
                         return_tensors="pt")  # fmt: skip

    return model, processor, make_inputs


def test_the_vision_flops_are_the_towers_own(v2):
    """measure_prompt's vision FLOPs (the whole forward minus the language model and its head) equal
    the flop counter run on the vision tower alone, and double with the frames."""
    model, processor, make_inputs = v2
    inputs = make_inputs(32)
    measured = measure_prompt(model, inputs, 32, processor)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model.model.visual(inputs["pixel_values_videos"], grid_thw=inputs["video_grid_thw"])
    assert measured.vision_flops == counter.get_total_flops() > 0
    assert measured.vision_tokens == 576 and measured.frames == 32
    assert measure_prompt(model, make_inputs(16), 16, processor).vision_flops * 2 == measured.vision_flops


@pytest.mark.parametrize("wanted,scope", [(32, "total"), (64, "llm")])
@pytest.mark.parametrize("method", [ff.FrameFusion, ff.VidCom2, ff.FastV, ff.EVS])
def test_a_planned_run_costs_no_more_than_the_matched_one_and_within_one_percent(v2, wanted, scope, method):
    model, processor, make_inputs = v2
    plan = plan_frames(model, make_inputs, wanted, 16, processor=processor, scope=scope)
    with ff.apply(model, method(cost=plan.cost), processor=processor, budget="flops") as handle, torch.inference_mode():
        model.generate(**make_inputs(wanted), max_new_tokens=2, do_sample=False)
    report = handle.last_report()
    counts = report.vision_tokens_per_layer[0]
    assert report.budget == "flops" and "achieved cost" in report.summary() and "(of the video tokens' FLOPs)" in report.summary()
    spent = plan.flops(counts)
    assert spent <= plan.target_flops * (1 + 1e-12)
    assert spent >= 0.99 * plan.target_flops, (counts, spent / plan.target_flops)
    assert plan.untouched_flops() > 1.5 * plan.target_flops  # the plan did have something to cut
    assert math.isclose(plan.spent(counts), spent / plan.target_flops)


def test_a_plan_the_vision_tower_alone_breaks_is_refused(v2):
    model, processor, make_inputs = v2
    with pytest.raises(ValueError, match=r"64 frames cannot cost as little as 16 untouched"):
        plan_frames(model, make_inputs, 64, 16, processor=processor)
    with pytest.raises(ValueError, match=r"frames must be a positive whole number of frames; got 0"):
        plan_frames(model, make_inputs, 0, 16, processor=processor)


def test_spread_frames_shows_fewer_frames_as_a_subset_of_more():
    video = np.arange(64)[:, None]
    for few, many in [(16, 32), (32, 64), (8, 64)]:
        assert set(spread_frames(video, few).ravel()) <= set(spread_frames(video, many).ravel())
    assert spread_frames(video, 16)[:, 0].tolist() == list(range(0, 64, 4))
    with pytest.raises(ValueError, match=r"cannot show 65 frames of a 64-frame clip; allowed: 1 to 64"):
        spread_frames(video, 65)


# ------------------------------------------------------------------------------------- every family
PLANNED = [("qwen2_vl", "llm"), ("qwen2_5_vl", "llm"), ("glm4v", "llm"), ("internvl", "llm"), ("smolvlm", "llm")]


@pytest.mark.parametrize("family,scope", PLANNED)
def test_every_family_plans_and_spends_the_target(family, scope):
    """16 frames for the compute of 8 on each family's tiny model (the scope where its tiny vision tower
    leaves room): the planned FrameFusion run spends 99-100% of the target."""
    from framefusion.tiny_models import make_synthetic_video
    from framefusion.tiny_models.zoo import build, video_inputs

    model, processor = build(family, num_layers=4)
    clip = make_synthetic_video(num_frames=16, size=112, seed=3)

    def make_inputs(n):
        return video_inputs(processor, ["What happens?"], [spread_frames(clip, n)])

    plan = plan_frames(model, make_inputs, 16, 8, processor=processor, scope=scope)
    assert plan.wanted.vision_tokens > plan.matched.vision_tokens and 0 < plan.cost < 1
    with ff.apply(model, ff.FrameFusion(cost=plan.cost), processor=processor, budget="flops") as handle, torch.inference_mode():
        model.generate(**make_inputs(16), max_new_tokens=2, do_sample=False)
    assert 0.99 <= plan.spent(handle.last_report().vision_tokens_per_layer[0]) <= 1 + 1e-12


def test_a_processor_that_samples_its_own_frames_is_named():
    """The tiny LLaVA-OneVision processor samples 8 frames of whatever it is given: 16 frames would not
    be seen, and the plan says so instead of planning nothing."""
    from framefusion.tiny_models import make_synthetic_video
    from framefusion.tiny_models.zoo import build, video_inputs

    model, processor = build("llava_onevision", num_layers=2)
    clip = make_synthetic_video(num_frames=16, size=112, seed=3)
    with pytest.raises(ValueError, match=r"16 frames gave 128 video tokens and 8 gave 128: the processor samples its own"):
        plan_frames(model, lambda n: video_inputs(processor, ["q"], [spread_frames(clip, n)]), 16, 8, processor=processor)


def test_a_plan_that_keeps_less_than_a_token_a_layer_is_refused():
    config = SimpleNamespace(hidden_size=64, num_attention_heads=4, num_key_value_heads=4, head_dim=16,
                             intermediate_size=128, num_hidden_layers=4)  # fmt: skip
    matched = PromptCompute(8, 20, 80, 1e9)
    wanted = PromptCompute(16, 20, 160, 2e9 - 1e3)  # the tower eats all but a sliver of the target
    with pytest.raises(ValueError, match=r"16 frames cannot cost as little as 8 untouched"):
        plan_cost(config, wanted, matched)
