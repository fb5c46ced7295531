"""The method/engine contract: a method returns decisions, the engine keeps the books.

- the engine charges every layer with the tokens it runs with and refuses a decision that would
  overspend, whatever the method claims (a deliberately greedy method is stopped);
- a method sees the budget read-only;
- methods stack under one budget (``Stack``, ``a@c+b`` in the registry);
- every registered method (and a stack) is the identity at no reduction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch
from conftest import batch_equals_alone, make_inputs, replay_logits

import framefusion
from framefusion import EVS, BudgetExceededError, FastV, FastVID, FrameFusion, RandomPrune, Stack, VidCom2
from framefusion.algorithm import TokenBudget
from framefusion.methods import Reduction, ReductionMethod
from framefusion.registry import METHODS, config_for
from framefusion.tiny_models import build_tiny_model


@dataclass(frozen=True)
class KeepsTooMany(ReductionMethod):
    """Claims a budget, then keeps every token but one at layer ``at``: over budget at cost 0.3."""

    cost: float = 0.3
    at: int = 0
    name = "keeps-too-many"

    def step(self, state, x):
        if x.layer != self.at:
            return None
        keep = torch.ones(x.hidden.shape[0], dtype=torch.bool)
        keep[0] = False
        return Reduction("prune", keep, count=x.hidden.shape[0] - 1)


@pytest.fixture(scope="module")
def model(processors):
    return build_tiny_model("qwen2_vl", num_layers=4, processor=processors["qwen2_vl"])


def test_the_engine_refuses_a_method_that_overspends(model, processors, videos):
    inputs = make_inputs(processors["qwen2_vl"], ["What moves?"], videos=[videos[8]])
    with framefusion.apply(model, KeepsTooMany(cost=0.3, at=1)), torch.no_grad():
        # layers 0 and 1 run with N and N - 1 tokens: 2N - 1 > 0.3 * 4 * N token-layers
        with pytest.raises(BudgetExceededError, match=r"keeps-too-many left \d+ video tokens at layer 1, but its budget \(cost=0.3"):
            model(**inputs)
    with torch.no_grad():
        model(**inputs)  # removed: the model works as before


def test_a_method_sees_the_budget_read_only():
    books = TokenBudget(0.5, 4, 10)
    view = books.view()
    assert not hasattr(view, "charge") and view.max_constant() == 5
    with pytest.raises(AttributeError):
        view.used = 0
    books.charge(10)  # the engine's books move; the view shows it
    assert view.layer == 1 and view.remaining() == 10 and view.max_constant() == 3
    assert view.with_cost(1.0).max_constant() == 10 and view.with_cost(None).total == 40


def test_stacks_are_named_and_checked():
    stack = config_for("evs@0.5+framefusion", 0.3, similarity_threshold=0.7)
    assert stack == Stack(EVS(cost=0.5), FrameFusion(cost=0.3, similarity_threshold=0.7))
    assert stack.cost == 0.3 and stack.name == "evs+framefusion"
    assert stack.with_cost(0.2).stages[-1].cost == 0.2 and stack.with_cost(0.2).stages[0].cost == 0.5
    with pytest.raises(ValueError, match=r"stage 'evs' of 'evs\+framefusion' needs its own cost: .* evs@0.5\+framefusion"):
        config_for("evs+framefusion", 0.3)
    assert Stack(EVS(cost=0.2), FrameFusion(cost=0.3)).cost == 0.3  # allowed: the forward stays under 0.3
    with pytest.raises(ValueError, match="at least two methods"):
        Stack(FrameFusion())
    with pytest.raises(TypeError, match="must be a reduction method"):
        Stack(FrameFusion(), "fastv")
    with pytest.raises(ValueError, match="the cost after '@' in 'evs@half' must be a number"):
        config_for("evs@half+fastv", 0.3)


def test_native_knobs_map_to_cost():
    assert VidCom2(retention=0.25).cost == 0.25 and FastVID(retention=0.1).cost == 0.1
    assert VidCom2().cost == 0.3 and FastVID().cost == 0.3
    for make in (lambda: VidCom2(cost=0.3, retention=0.3), lambda: FastVID(cost=0.3, retention=0.2)):
        with pytest.raises(ValueError, match="either cost or retention"):
            make()
    with pytest.raises(ValueError, match=r"retention must be in \(0, 1\] \(cost = retention.*got 1.5"):
        VidCom2(retention=1.5)


def test_a_stack_reduces_at_the_input_then_inside_the_llm(model, processors, videos):
    processor = processors["qwen2_vl"]
    questions, clips = ["What moves?", "Which colour is the square?"], [videos[8], videos[16]]
    stack = Stack(EVS(cost=0.5), FrameFusion(cost=0.3, similarity_threshold=0.9))
    with framefusion.apply(model, stack) as handle:
        batch, single, tokens, logits, report = batch_equals_alone(model, handle, processor, questions, clips)
    for n, counts, cost in zip(batch.vision_tokens, batch.vision_tokens_per_layer, batch.achieved_cost):
        assert counts[0] == n // 2  # EVS at the input, to its own cost
        assert counts[-1] < counts[0]  # then FrameFusion inside the LLM, for the rest of the budget
        assert cost <= 0.3 and cost == sum(counts) / (4 * n)
    layers = [d.layer for d in report.decisions[0]]
    assert layers[0] == 0 and report.decisions[0][0].kind == "prune" and all(layer >= 1 for layer in layers[1:])
    replayed = replay_logits(model, single, tokens, report.decisions, counts=report.vision_tokens_per_layer)
    torch.testing.assert_close(replayed, logits, atol=2e-5, rtol=1e-5)


NO_REDUCTION = {name: entry.make(1.0) for name, entry in METHODS.items()} | {
    "fastv-ratio-0": FastV(ratio=0.0),
    "stack": Stack(RandomPrune(cost=1.0), FrameFusion(cost=1.0, similarity_threshold=2.0)),
}


@pytest.mark.parametrize("name", list(NO_REDUCTION))
def test_every_method_is_the_identity_at_no_reduction(name, model, processors, videos):
    inputs = make_inputs(processors["qwen2_vl"], ["What moves?", "Which colour?"], videos=[videos[8], videos[16]])
    method = NO_REDUCTION[name]
    if name == "merge-only":  # merge-only at cost 1 still merges what is above its threshold
        method = dataclasses.replace(method, similarity_threshold=2.0)
    with torch.no_grad():
        want = model(**inputs).logits
        with framefusion.apply(model, method) as handle:
            got = model(**inputs).logits
            report = handle.last_report()
    assert torch.equal(got, want)
    assert report.achieved_cost == [1.0, 1.0] and all(d == [] for d in report.decisions)


def test_the_cli_takes_stacks_by_name():
    import argparse

    from framefusion.commands import eval as eval_command

    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    args = parser.parse_args(["--methods", "evs@0.5+framefusion", "fastv", "vidcom2@0.4+fastvid"])
    assert args.methods == ["evs@0.5+framefusion", "fastv", "vidcom2@0.4+fastvid"]
    assert eval_command._configs(args)[0] == Stack(EVS(cost=0.5), FrameFusion(cost=0.3))
