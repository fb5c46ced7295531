"""The compute budget: FrameFusion never exceeds it, and pruning fills it as far as whole tokens allow.

A full forward is simulated the way the engine drives a method: at every decoder layer the method
sees the vision tokens still present (their values plus a seeded per-layer drift), answers a
Reduction, and the kept tokens (merged values where given) go on to the next layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from framefusion.algorithm import TokenBudget
from framefusion.ledger import Ledger
from framefusion.methods import FrameFusion

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SLACK = 1e-12


# ---------------------------------------------------------------------------------------------
# Scenarios: layouts with controllable redundancy
# ---------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    num_tokens: int
    num_layers: int
    patch: torch.Tensor  # (N,) group keys; videos have distinct key ranges
    frame: torch.Tensor  # (N,)
    hidden: torch.Tensor  # (N, d) float32
    drift: float  # per-layer change of every token
    shared: float  # share of the per-layer change common to a patch position (keeps it redundant)
    importance: torch.Tensor  # (L, N)


@st.composite
def scenarios(draw, max_tokens: int = 300, max_layers: int = 40):
    n = draw(st.integers(1, max_tokens))
    layers = draw(st.integers(1, max_layers))
    num_videos = draw(st.integers(1, 3))
    cuts = sorted(draw(st.lists(st.integers(0, n), min_size=num_videos - 1, max_size=num_videos - 1)))
    sizes = [b - a for a, b in zip([0] + cuts, cuts + [n])]
    dim = draw(st.integers(1, 16))
    redundancy = draw(st.sampled_from([0.0, 0.3, 0.7, 0.9, 1.0]))  # chance a token repeats its predecessor
    drift = draw(st.sampled_from([0.0, 0.01, 0.1, 0.5]))
    shared = draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))
    levels = draw(st.sampled_from([2, 5, 10_000]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))

    patch, frame, rows = [], [], []
    offset = 0
    for size in sizes:
        if size == 0:
            continue
        patches = draw(st.integers(1, min(size, 32)))
        frames = math.ceil(size / patches)
        grid = torch.randn(frames, patches, dim, generator=g)
        repeat = torch.rand(frames, patches, generator=g) < redundancy
        for f in range(1, frames):  # a repeated token is its predecessor plus a tiny change
            near = grid[f - 1] + 1e-3 * torch.randn(patches, dim, generator=g)
            grid[f] = torch.where(repeat[f].unsqueeze(-1), near, grid[f])
        rows.append(grid.reshape(-1, dim)[:size])
        patch += [offset + i % patches for i in range(size)]
        frame += [i // patches for i in range(size)]
        offset += patches + 3
    importance = torch.randint(0, levels, (layers, n), generator=g).float()
    return Scenario(n, layers, torch.tensor(patch), torch.tensor(frame), torch.cat(rows), drift, shared, importance)


def run_forward(method: FrameFusion, sc: Scenario):
    """Drive ``method`` over all layers with the engine's books (``Ledger``: decide, then charge the
    tokens that remain); checks the per-layer bookkeeping on the way. Returns (ledger, kinds)."""
    ledger = Ledger(method, sc.num_tokens, sc.num_layers)
    values, ids, patch, frame = sc.hidden, torch.arange(sc.num_tokens), sc.patch, sc.frame
    g = torch.Generator().manual_seed(12345)
    dim = sc.hidden.shape[1]
    kinds = []
    for layer in range(sc.num_layers):
        common = torch.randn(int(sc.patch.max()) + 1, dim, generator=g)[patch]
        own = torch.randn(values.shape, generator=g)
        h = values + sc.drift * (sc.shared * common + (1 - sc.shared) * own)
        imp = sc.importance[layer, ids]
        red = ledger.decide(layer, h, frame, patch, lambda imp=imp: imp)
        n = h.shape[0]
        if red is None:
            kinds.append(None)
            values = h
        else:
            kinds.append(red.kind)
            assert red.keep.shape == (n,) and red.keep.dtype == torch.bool
            if red.merged is not None:
                assert red.merged.shape == (int(red.keep.sum()), dim)
                values = red.merged
            else:
                values = h[red.keep]
            ids, patch, frame = ids[red.keep], patch[red.keep], frame[red.keep]
        ledger.charge(values.shape[0])
        counts = ledger.counts
        assert len(counts) == layer + 1
        assert counts[-1] == values.shape[0]  # the charge is the tokens that actually remain
    return ledger, kinds


def final_layer(state) -> int | None:
    """The layer from which the token count is fixed to the end: the prune or the last merge."""
    if state.prune_layer is not None:
        return state.prune_layer
    return state.merge_layers[-1] if state.merge_layers else None


def check_budget(ledger: Ledger, sc: Scenario, cost: float) -> None:
    counts = ledger.counts
    L, N = sc.num_layers, sc.num_tokens
    # (b) one entry per layer, never increasing
    assert len(counts) == L
    assert all(0 <= c <= N for c in counts)
    assert all(a >= b for a, b in zip(counts, counts[1:])), counts
    # (a) never above the requested cost
    achieved = ledger.achieved_cost()
    recomputed = sum(counts) / (L * N)
    assert achieved <= cost + SLACK, (achieved, cost)
    assert recomputed <= cost + SLACK, (recomputed, cost)
    assert achieved == pytest.approx(recomputed, abs=SLACK)
    # filled as far as whole tokens allow: from the final reduction layer p on the count is constant
    # and one more token over those L - p layers would not have fitted
    p = final_layer(ledger.state)
    if p is None:
        assert counts == [N] * L
        assert cost >= 1 - SLACK  # nothing reduced only when nothing had to be
    else:
        assert all(c == counts[p] for c in counts[p:])
        assert cost - recomputed < (L - p) / (L * N) + SLACK, (cost, recomputed, p, counts)


costs = st.one_of(st.floats(0.05, 1.0), st.sampled_from([0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0]))


# ---------------------------------------------------------------------------------------------
# FrameFusion over whole forwards
# ---------------------------------------------------------------------------------------------


@settings(max_examples=100, **SETTINGS)
@given(
    sc=scenarios(),
    cost=costs,
    threshold=st.one_of(st.floats(-1.0, 1.1), st.sampled_from([0.9, 0.95, 0.99, 0.999, 1.0])),
    ratio=st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.05, 0.1, 0.3])),
)
def test_budget_never_exceeded(sc, cost, threshold, ratio):
    method = FrameFusion(cost, threshold, ratio)
    ledger, kinds = run_forward(method, sc)
    state = ledger.state
    check_budget(ledger, sc, cost)
    assert kinds.count("prune") <= 1
    assert not ledger.active()  # every forward ends decided
    event(f"merge layers: {min(len(state.merge_layers), 3)}{'+' if len(state.merge_layers) >= 3 else ''}")
    event(f"pruned: {state.prune_layer is not None}")
    event(f"tokens > 100: {sc.num_tokens > 100}, layers > 20: {sc.num_layers > 20}")


@settings(max_examples=80, **SETTINGS)
@given(sc=scenarios(), cost=costs, threshold=st.floats(1.001, 3.0), ratio=st.floats(0.0, 1.0))
def test_pruning_alone_fills_the_budget(sc, cost, threshold, ratio):
    """No merging (similarity threshold above 1): pruning alone must fill the budget to within what
    whole tokens allow, i.e. cost - achieved < (layers - prune_layer) / (layers * tokens)."""
    method = FrameFusion(cost, threshold, ratio)
    ledger, kinds = run_forward(method, sc)
    state = ledger.state
    L, N = sc.num_layers, sc.num_tokens
    counts = ledger.counts
    assert state.merge_layers == []
    assert "merge" not in kinds
    check_budget(ledger, sc, cost)
    if state.prune_layer is None:
        assert counts == [N] * L and cost >= 1 - SLACK
    else:
        p = state.prune_layer
        event(f"prune layer > 0: {p > 0}")
        assert counts[:p] == [N] * p
        shortfall = cost - sum(counts) / (L * N)
        assert shortfall < (L - p) / (L * N) + SLACK
        # the kept count is the largest that, kept to the last layer, fits the budget
        budget = cost * L * N - N * p
        assert counts[p] * (L - p) <= budget + 1e-9
        assert (counts[p] + 1) * (L - p) > budget - 1e-9


@settings(max_examples=60, **SETTINGS)
@given(sc=scenarios(), threshold=st.floats(-1.0, 1.1), ratio=st.floats(0.0, 1.0))
def test_full_cost_removes_nothing(sc, threshold, ratio):
    method = FrameFusion(1.0, threshold, ratio)
    ledger, kinds = run_forward(method, sc)
    state = ledger.state
    assert kinds == [None] * sc.num_layers
    assert ledger.counts == [sc.num_tokens] * sc.num_layers
    assert ledger.achieved_cost() == 1.0
    assert state.merge_layers == [] and state.prune_layer is None


def test_minimum_cost_small_inputs_can_drop_everything():
    # 0.05 of 10 tokens over 3 layers is 1.5 token-layers: nothing can stay, from the first layer on
    sc = Scenario(10, 3, torch.arange(10) % 5, torch.arange(10) // 5, torch.randn(10, 4), 0.0, 0.0, torch.rand(3, 10))
    method = FrameFusion(0.05, 2.0, 0.5)
    ledger, kinds = run_forward(method, sc)
    state = ledger.state
    assert ledger.counts == [0, 0, 0]  # 1.5 token-layers: less than one token per layer
    assert kinds == ["prune", None, None] and state.prune_layer == 0
    check_budget(ledger, sc, 0.05)


# ---------------------------------------------------------------------------------------------
# TokenBudget
# ---------------------------------------------------------------------------------------------


def test_token_budget_worked_example():
    b = TokenBudget(0.5, 4, 10)
    assert b.total == 20.0 and b.layer == 0 and b.remaining() == 20.0
    assert b.achieved() == 1.0  # layers not charged yet count as unreduced
    assert b.max_constant() == 5
    assert b.affords(5, 4) and not b.affords(6, 4)
    assert b.affords(20) and not b.affords(21)
    b.charge(10)
    assert b.layer == 1 and b.remaining() == 10.0
    assert b.max_constant() == 3  # 10 / 3 layers
    assert b.affords(3, 3) and not b.affords(4, 3)
    assert b.achieved() == (10 + 3 * 10) / 40
    b.charge(3)
    assert b.max_constant() == 3  # 7 / 2
    assert b.achieved() == (13 + 2 * 10) / 40
    b.charge(3)
    b.charge(3)
    assert b.layer == 4 and b.counts == [10, 3, 3, 3]
    assert b.max_constant() == 0  # no layer left
    assert b.remaining() == 1.0
    assert b.achieved() == 19 / 40


def test_token_budget_degenerate():
    assert TokenBudget(0.3, 5, 0).achieved() == 1.0
    assert TokenBudget(0.3, 0, 7).achieved() == 1.0
    assert TokenBudget(0.3, 0, 7).max_constant() == 0
    b = TokenBudget(0.1, 2, 10)  # 2 token-layers
    b.charge(10)  # overspent
    assert b.remaining() < 0
    assert b.max_constant() == 0
    assert not b.affords(1)
    assert TokenBudget(1.0, 3, 7).max_constant() == 7
    assert TokenBudget(0.0, 3, 7).max_constant() == 0


@settings(max_examples=100, **SETTINGS)
@given(
    cost=costs,
    layers=st.integers(1, 40),
    tokens=st.integers(1, 300),
    data=st.data(),
)
def test_token_budget_properties(cost, layers, tokens, data):
    b = TokenBudget(cost, layers, tokens)
    assert b.total == pytest.approx(cost * layers * tokens)
    # charge a random non-increasing prefix that stays within the budget, then check the queries
    charged = data.draw(st.integers(0, layers))
    for _ in range(charged):
        top = min(b.counts[-1] if b.counts else tokens, max(0, math.floor(b.remaining())))
        b.charge(data.draw(st.integers(0, top)))
    assert b.layer == charged
    assert b.remaining() == pytest.approx(b.total - sum(b.counts))
    assert b.achieved() == pytest.approx((sum(b.counts) + tokens * (layers - charged)) / (layers * tokens))

    left = layers - charged
    k = b.max_constant()
    if left == 0:
        assert k == 0
    else:
        exact = Fraction(b.total) - sum(b.counts)  # token-layers left, exactly
        assert k >= 0
        assert k * left <= exact + Fraction(1, 10**9)  # fits
        assert (k + 1) * left > exact - Fraction(1, 10**9)  # the largest that fits
        assert b.affords(k, left)
        # keeping k to the end never exceeds the budget
        for _ in range(left):
            b.charge(k)
        assert sum(b.counts) <= b.total + 1e-9
        assert b.achieved() <= cost + SLACK
    for count in (0, 1, tokens, data.draw(st.integers(0, 2 * tokens))):
        for n_layers in (1, 2, max(1, left)):
            assert b.affords(count, n_layers) == (count * n_layers <= b.remaining())
