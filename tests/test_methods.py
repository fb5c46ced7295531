"""The methods side by side: FrameFusion's ablations, FastV, input merging, random and uniform floors.

Three levels:
1. pure methods driven the way the engine drives them (``simulate``), with hypothesis: the budget
   holds over random inputs, and each selection rule matches a plain slow reference (loops over
   tokens, Python floats, written from the docstrings; no call into the code under test);
2. the tiny Qwen2-VL model: no-op at cost 1.0 is bitwise, budget, exact decoding, batches;
3. ``compare_methods``: files written, numbers consistent.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import pytest
import torch
from conftest import greedy, replay_logits
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import framefusion
from framefusion import (
    FastVConfig,
    FrameFusionConfig,
    InputMergeConfig,
    RandomPruneConfig,
    UniformPruneConfig,
)
from framefusion.ledger import BudgetExceededError, Ledger
from framefusion.methods import FastV, LayerInput

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SLACK = 1e-12


def method_configs(cost: float) -> dict:
    """Every method of this issue at one budget (``None``: the method has no such config)."""
    return {
        "merge-only": FrameFusionConfig(cost=cost, similarity_threshold=0.9, prune=False),
        "prune-only": FrameFusionConfig(cost=cost, merge=False),
        "fastv": FastVConfig(cost=cost, layer=2),
        "input-merge": InputMergeConfig(cost=cost),
        "random": RandomPruneConfig(cost=cost, seed=3),
        "uniform": UniformPruneConfig(cost=cost),
        "uniform-frames": UniformPruneConfig(cost=cost, unit="frame"),
    }


NAMES = list(method_configs(0.5))


# ---------------------------------------------------------------------------------------------
# 1. Pure methods
# ---------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    patch: torch.Tensor  # (N,)
    frame: torch.Tensor  # (N,)
    hidden: torch.Tensor  # (N, d)
    importance: torch.Tensor  # (L, N): what the last query pays each original token at each layer
    num_layers: int
    first: int  # layers before it are not stepped (as on models with unreducible first layers)

    @property
    def n(self) -> int:
        return self.hidden.shape[0]


@st.composite
def scenarios(draw, max_tokens=200, max_layers=24, first=True):
    n = draw(st.integers(1, max_tokens))
    layers = draw(st.integers(1, max_layers))
    videos = draw(st.integers(1, 3))
    cuts = sorted(draw(st.lists(st.integers(0, n), min_size=videos - 1, max_size=videos - 1)))
    sizes = [b - a for a, b in zip([0] + cuts, cuts + [n])]
    dim = draw(st.integers(1, 12))
    redundancy = draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    patch, frame, rows, offset = [], [], [], 0
    for size in sizes:
        if not size:
            continue
        patches = draw(st.integers(1, min(size, 24)))
        frames = math.ceil(size / patches)
        grid = torch.randn(frames, patches, dim, generator=g)
        for f in range(1, frames):
            near = grid[f - 1] + 0.05 * torch.randn(patches, dim, generator=g)
            grid[f] = torch.where((torch.rand(patches, 1, generator=g) < redundancy), near, grid[f])
        rows.append(grid.reshape(-1, dim)[:size])
        patch += [offset + i % patches for i in range(size)]
        frame += [i // patches for i in range(size)]
        offset += patches + 5
    importance = torch.rand(layers, n, generator=g)
    first_layer = draw(st.integers(0, min(3, layers))) if first else 0
    return Scenario(torch.tensor(patch), torch.tensor(frame), torch.cat(rows), importance, layers, first_layer)


def simulate(method, sc: Scenario, drift: float = 0.01):
    """Drive ``method`` like the engine, with its books (``Ledger``): no decision before ``sc.first``
    nor once inactive; every layer is charged the tokens it runs with. The kept tokens (merged
    values where given) go on, with a small seeded drift per layer.
    Returns (ledger, list of (layer, Reduction, ids of the tokens present before it))."""
    ledger = Ledger(method, sc.n, sc.num_layers)
    values, ids, patch, frame = sc.hidden, torch.arange(sc.n), sc.patch, sc.frame
    g = torch.Generator().manual_seed(7)
    steps = []
    for layer in range(sc.num_layers):
        if layer >= sc.first and ledger.active():
            imp = sc.importance[layer, ids]
            red = ledger.decide(layer, values, frame, patch, lambda imp=imp: imp)
            if red is not None:
                n = values.shape[0]
                assert red.keep.shape == (n,) and red.keep.dtype == torch.bool
                assert int(red.keep.sum()) < n
                steps.append((layer, red, ids))
                values = red.merged if red.merged is not None else values[red.keep]
                ids, patch, frame = ids[red.keep], patch[red.keep], frame[red.keep]
        ledger.charge(values.shape[0])
        counts = ledger.counts
        assert len(counts) == layer + 1 and counts[-1] == values.shape[0]
        values = values + drift * torch.randn(values.shape, generator=g)
    return ledger, steps


@settings(max_examples=60, **SETTINGS)
@given(sc=scenarios(), cost=st.floats(0.01, 1.0), name=st.sampled_from(NAMES))
def test_budget_never_exceeded_pure(sc, cost, name):
    method = method_configs(cost)[name]
    L, N = sc.num_layers, sc.n
    if sc.first * N > cost * L * N:  # the unreducible first layers alone exceed the budget: refused
        with pytest.raises(BudgetExceededError, match=f"{method.name} left {N} video tokens at layer"):
            simulate(method, sc)
        return
    ledger, _ = simulate(method, sc)
    counts = ledger.counts
    assert len(counts) == L and all(a >= b for a, b in zip(counts, counts[1:]))
    achieved = ledger.achieved_cost()
    assert achieved == pytest.approx(sum(counts) / (L * N), abs=SLACK)
    assert achieved <= cost + SLACK, (achieved, cost, counts)
    if sc.first == 0 and name in ("input-merge", "random", "uniform", "prune-only"):
        assert cost - achieved <= 1 / N + 1e-9  # filled to whole tokens


@settings(max_examples=30, **SETTINGS)
@given(sc=scenarios(first=False), cost=st.floats(0.01, 1.0))
def test_merge_only_never_reads_importance_and_prune_only_prunes_once_at_first_layer(sc, cost):
    def forbidden():
        raise AssertionError("merge-only must not read attention")

    sc_no_attention = Scenario(sc.patch, sc.frame, sc.hidden, sc.importance, sc.num_layers, 0)
    merge_only = FrameFusionConfig(cost=cost, similarity_threshold=0.8, prune=False)
    ledger = Ledger(merge_only, sc.n, sc.num_layers)
    values, patch, frame = sc_no_attention.hidden, sc.patch, sc.frame
    for layer in range(sc.num_layers):
        red = ledger.decide(layer, values, frame, patch, forbidden) if ledger.active() else None
        if red is not None:
            assert red.kind == "merge" or int(red.keep.sum()) == 0  # all dropped only when none affordable
            values = red.merged if red.merged is not None else values[red.keep]
            patch, frame = patch[red.keep], frame[red.keep]
        ledger.charge(values.shape[0])
    assert ledger.achieved_cost() <= cost + SLACK

    prune_only = FrameFusionConfig(cost=cost, merge=False)
    ledger, steps = simulate(prune_only, sc)
    k = min(sc.n, math.floor(cost * sc.num_layers * sc.n / sc.num_layers))
    if k < sc.n:
        assert len(steps) == 1 and steps[0][0] == 0 and steps[0][1].kind == "prune"
        kept = steps[0][1].keep.nonzero().flatten().tolist()
        assert kept == ref_top_k(sc.importance[0].tolist(), k)
    else:
        assert steps == []


# ------------------------------------------------------------------------------ references


def ref_top_k(scores: list[float], k: int) -> list[int]:
    """Indices of the k highest scores (ties: earlier first), ascending."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(order[:k])


def ref_fastv_plan(cost: float, K: int, L: int, N: int) -> tuple[int, int]:
    """(layer, kept): the latest layer <= K whose full layers fit, and the largest k that fits from there."""
    total = cost * L * N
    at = K
    while at > 0 and at * N > total:
        at -= 1
    if at >= L:
        return at, N
    k = 0
    while k < N and at * N + (L - at) * (k + 1) <= total:
        k += 1
    return at, k


@settings(max_examples=60, **SETTINGS)
@given(sc=scenarios(first=False), cost=st.floats(0.01, 1.0), K=st.integers(0, 6))
def test_fastv_matches_reference(sc, cost, K):
    L, N = sc.num_layers, sc.n
    method = FastV(cost=cost, layer=K)
    ledger, steps = simulate(method, sc)
    at, k = ref_fastv_plan(cost, K, L, N)
    counts = ledger.counts
    assert counts[: min(at, L)] == [N] * min(at, L)
    if k >= N or at >= L:
        assert steps == [] and counts == [N] * L
        return
    # float rounding of cost*L*N may cost at most one token against the exact reference
    assert k - 1 <= counts[-1] <= k
    assume(counts[-1] == k)
    ((layer, red, ids),) = steps
    assert layer == at and red.kind == "prune" and counts[at:] == [k] * (L - at)
    scores = sc.importance[at - 1 if at > 0 else at].tolist()  # the last layer that saw every token
    assert red.keep.nonzero().flatten().tolist() == ref_top_k(scores, k)


@settings(max_examples=40, **SETTINGS)
@given(sc=scenarios(first=False), ratio=st.floats(0.0, 1.0), K=st.integers(0, 4))
def test_fastv_native_ratio(sc, ratio, K):
    method = FastVConfig(ratio=ratio, layer=K)
    ledger, steps = simulate(method, sc)
    L, N = sc.num_layers, sc.n
    pruned = math.floor(ratio * N + 1e-9)
    counts = ledger.counts
    if K >= L or pruned == 0:
        assert counts == [N] * L
    else:
        assert counts == [N] * K + [N - pruned] * (L - K)
        ((layer, red, _),) = steps
        assert red.keep.nonzero().flatten().tolist() == ref_top_k(sc.importance[max(K - 1, 0)].tolist(), N - pruned)


def ref_uniform_tokens(n: int, k: int) -> list[int]:
    return [((2 * i + 1) * n) // (2 * k) for i in range(k)]


def ref_frame_runs(frame: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i, f in enumerate(frame):
        if i == 0 or f != frame[i - 1]:
            runs.append([])
        runs[-1].append(i)
    return runs


def ref_uniform_frames(frame: list[int], k: int) -> list[int]:
    runs = ref_frame_runs(frame)
    F = len(runs)
    for f in range(F, 0, -1):
        picked = [((2 * j + 1) * F) // (2 * f) for j in range(f)]
        if sum(len(runs[p]) for p in picked) <= k:
            return sorted(i for p in picked for i in runs[p])
    return []


@settings(max_examples=60, **SETTINGS)
@given(sc=scenarios(first=False), cost=st.floats(0.01, 0.99), unit=st.sampled_from(["token", "frame"]))
def test_uniform_matches_reference(sc, cost, unit):
    method = UniformPruneConfig(cost=cost, unit=unit)
    ledger, steps = simulate(method, sc)
    N = sc.n
    k = min(N, math.floor(cost * sc.num_layers * N / sc.num_layers))
    expected = ref_uniform_tokens(N, k) if unit == "token" else ref_uniform_frames(sc.frame.tolist(), k)
    if len(expected) == N:
        assert steps == []
        return
    ((layer, red, _),) = steps
    assert layer == 0
    got = red.keep.nonzero().flatten().tolist()
    assert got == expected
    if unit == "token" and k > 1:  # evenly spread: gaps differ by at most one
        gaps = [b - a for a, b in zip(got, got[1:])]
        assert max(gaps) - min(gaps) <= 1


def ref_merge_groups(hidden: list[list[float]], patch: list[int], k: int):
    """Groups (sorted tuples of indices) of merging by similarity alone down to k tokens."""
    n = len(hidden)

    def cos(a, b):
        dot = sum(x * y for x, y in zip(a, b))
        na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
        if na == 0 or nb == 0:
            return 0.0
        return max(-1.0, min(1.0, dot / (na * nb)))

    candidates = []  # (tier, -similarity, index, predecessor)
    for i in range(n):
        same = [j for j in range(i) if patch[j] == patch[i]]
        if same:
            candidates.append((0, -cos(hidden[i], hidden[same[-1]]), i, same[-1]))
        elif i > 0:
            candidates.append((1, -cos(hidden[i], hidden[i - 1]), i, i - 1))
    candidates.sort()
    chosen = candidates[: n - k]
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for _, _, i, j in chosen:
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    # the cut is ambiguous if the last chosen and the first left-out candidate are (nearly) tied
    tight = len(candidates) > n - k > 0 and (
        candidates[n - k - 1][0] == candidates[n - k][0] and abs(candidates[n - k - 1][1] - candidates[n - k][1]) < 1e-5
    )
    return sorted(tuple(g) for g in groups.values()), tight


@settings(max_examples=60, **SETTINGS)
@given(sc=scenarios(max_tokens=120, first=False), cost=st.floats(0.01, 0.99))
def test_input_merge_groups_match_reference(sc, cost):
    method = InputMergeConfig(cost=cost)
    ledger, steps = simulate(method, sc)
    N = sc.n
    k = min(N, math.floor(cost * sc.num_layers * N / sc.num_layers))
    if k >= N:
        assert steps == []
        return
    ((layer, red, _),) = steps
    assert layer == 0 and int(red.keep.sum()) == k and ledger.counts == [k] * sc.num_layers
    if k == 0:
        assert red.kind == "prune"
        return
    groups, tight = ref_merge_groups(sc.hidden.double().tolist(), sc.patch.tolist(), k)
    assume(not tight)
    got: dict[int, list[int]] = {}
    for i, r in enumerate(red.root.tolist()):
        got.setdefault(r, []).append(i)
    assert sorted(tuple(g) for g in got.values()) == groups
    means = torch.stack([sc.hidden[list(g)].double().mean(0) for g in sorted(got.values())])
    torch.testing.assert_close(red.merged.double(), means, atol=1e-5, rtol=1e-5)


def test_random_is_seeded_uniform_and_position_free():
    from framefusion.algorithm import random_keep

    a, b = random_keep(50, 10, seed=1), random_keep(50, 10, seed=1)
    assert torch.equal(a, b) and int(a.sum()) == 10
    assert not torch.equal(a, random_keep(50, 10, seed=2))
    method = RandomPruneConfig(cost=0.5, seed=4)
    patch = torch.arange(40)
    x = LayerInput(0, torch.randn(40, 3), torch.zeros(40, dtype=torch.long), patch, lambda: torch.rand(40))
    picks = [Ledger(method, 40, 2, sample=s).decide(0, x.hidden, x.frame, x.patch, x.importance).keep for s in (0, 1, 5)]
    assert all(torch.equal(p, picks[0]) for p in picks)
    freq = torch.stack([random_keep(20, 5, seed=s) for s in range(3000)]).double().mean(0)
    assert (freq - 0.25).abs().max() < 0.05  # every token equally likely


# ------------------------------------------------------------------------------ configs


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: FrameFusionConfig(merge=False, prune=False), ValueError, "merge and prune cannot both be False"),
        (lambda: FrameFusionConfig(merge=1), TypeError, "merge must be True or False, got 1"),
        (lambda: FrameFusionConfig(prune="no"), TypeError, "prune must be True or False"),
        (lambda: FastVConfig(cost=0.3, ratio=0.5), ValueError, "either cost .* or ratio"),
        (lambda: FastVConfig(cost=0.0), ValueError, r"cost must be in \(0, 1\].*got 0.0"),
        (lambda: FastVConfig(ratio=1.5), ValueError, r"ratio must be in \[0, 1\].*got 1.5"),
        (lambda: FastVConfig(ratio="half"), TypeError, "ratio must be a number"),
        (lambda: FastVConfig(layer=-1), ValueError, "layer must be >= 0.*got -1"),
        (lambda: FastVConfig(layer=2.0), TypeError, "layer must be an integer.*got 2.0"),
        (lambda: FastVConfig(layer=True), TypeError, "layer must be an integer"),
        (lambda: InputMergeConfig(cost=1.2), ValueError, r"cost must be in \(0, 1\].*got 1.2"),
        (lambda: InputMergeConfig(cost=float("nan")), ValueError, "NaN"),
        (lambda: RandomPruneConfig(seed=-3), ValueError, "seed must be >= 0.*got -3"),
        (lambda: RandomPruneConfig(seed=1.5), TypeError, "seed must be an integer"),
        (lambda: RandomPruneConfig(cost="0.3"), TypeError, "cost must be a number"),
        (
            lambda: UniformPruneConfig(unit="frames"),
            ValueError,
            r"unit must be one of \('token', 'frame'\), got 'frames'",
        ),
        (lambda: UniformPruneConfig(cost=-0.1), ValueError, "cost must be in"),
    ],
)
def test_config_validation(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_config_defaults_and_names():
    assert FastVConfig().cost == 0.3 and FastVConfig().layer == 2 and FastVConfig(ratio=0.5).cost is None
    assert FastVConfig(cost=1).cost == 1.0 and isinstance(FastVConfig(cost=1).cost, float)
    names = {k: c.name for k, c in method_configs(0.5).items()}
    assert names == {
        "merge-only": "framefusion-merge-only",
        "prune-only": "framefusion-prune-only",
        "fastv": "fastv",
        "input-merge": "input-merge",
        "random": "random",
        "uniform": "uniform",
        "uniform-frames": "uniform-frames",
    }
    assert FrameFusionConfig().name == "framefusion"
    with pytest.raises(dataclasses.FrozenInstanceError):
        FastVConfig().cost = 0.5


# ---------------------------------------------------------------------------------------------
# 2. The tiny Qwen2-VL model
# ---------------------------------------------------------------------------------------------

_MODELS: dict = {}


def tiny(num_layers=4, attn="sdpa"):
    from framefusion.tiny_models.zoo import build

    key = (num_layers, attn)
    if key not in _MODELS:
        _MODELS[key] = build("qwen2_vl", num_layers=num_layers, attn_implementation=attn)
    return _MODELS[key]


def noop_configs() -> dict:
    return {
        "merge-only": FrameFusionConfig(cost=1.0, similarity_threshold=1.5, prune=False),
        "prune-only": FrameFusionConfig(cost=1.0, merge=False),
        "fastv": FastVConfig(cost=1.0),
        "fastv-ratio": FastVConfig(ratio=0.0),
        "input-merge": InputMergeConfig(cost=1.0),
        "random": RandomPruneConfig(cost=1.0),
        "uniform": UniformPruneConfig(cost=1.0),
        "uniform-frames": UniformPruneConfig(cost=1.0, unit="frame"),
    }


def _inputs(processor, videos, questions=("What moves in the video?",), clips=(16,)):
    from framefusion.tiny_models.zoo import video_inputs

    return video_inputs(processor, list(questions), [videos[c] if c else None for c in clips])


def test_noop_at_cost_one_is_bitwise_identical(videos):
    model, processor = tiny()
    inputs = _inputs(processor, videos)
    with torch.no_grad():
        logits = model(**inputs).logits
    tokens, step_logits = greedy(model, inputs, n=3)
    for name, config in noop_configs().items():
        with framefusion.apply(model, config) as handle:
            with torch.no_grad():
                assert torch.equal(model(**inputs).logits, logits), name
            t, s = greedy(model, inputs, n=3)
            report = handle.last_report()
        assert torch.equal(t, tokens) and torch.equal(s, step_logits), name
        n = report.vision_tokens[0]
        assert report.vision_tokens_per_layer == [[n] * 4] and report.achieved_cost == [1.0], name
        assert report.decisions == [[]], name
    assert all(not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("cost", [0.05, 0.3, 0.7])
def test_budget_never_exceeded_on_tiny_model(videos, cost):
    model, processor = tiny(num_layers=6)
    inputs = _inputs(processor, videos, ["Which shape is fastest?", "Count."], [16, 8])
    for name, config in {**method_configs(cost), "fastv-ratio": FastVConfig(ratio=0.5)}.items():
        with framefusion.apply(model, config) as handle:
            with torch.no_grad():
                model(**inputs)
            report = handle.last_report()
        for n, counts, achieved in zip(report.vision_tokens, report.vision_tokens_per_layer, report.achieved_cost):
            assert achieved == pytest.approx(sum(counts) / (6 * n))
            assert all(a >= b for a, b in zip(counts, counts[1:])), (name, counts)
            if config.cost is not None:
                assert achieved <= cost + SLACK, (name, achieved, counts)
                assert counts[-1] < n, name
            else:
                assert counts == [n, n] + [n - n // 2] * 4
        if name == "fastv":  # pruned at layer 2, or earlier where two full layers already exceed it
            at = 2 if 2 <= cost * 6 else int(cost * 6)
            assert [d.layer for d in report.decisions[0]] == [at]


REDUCING = {**method_configs(0.3), "fastv-ratio": FastVConfig(ratio=0.6, layer=1)}


@pytest.mark.parametrize("name", list(REDUCING))
def test_exact_decoding_matches_cache_free_replay(videos, name):
    model, processor = tiny()
    inputs = _inputs(processor, videos, ["Which object moves first?"])
    with framefusion.apply(model, REDUCING[name]) as handle:
        tokens, step_logits = greedy(model, inputs, n=3)
        report = handle.last_report()
    assert report.vision_tokens_per_layer[0][-1] < report.vision_tokens[0]
    replayed = replay_logits(model, inputs, tokens, report.decisions, counts=report.vision_tokens_per_layer)
    torch.testing.assert_close(replayed, step_logits, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(REDUCING))
def test_left_padded_batch_equals_single_samples(videos, name):
    model, processor = tiny()
    questions = ["Which way does the red shape move, left or right?", "Colour?", "And this one?"]
    clips = [8, 16, None]
    with framefusion.apply(model, REDUCING[name]) as handle:
        batch = _inputs(processor, videos, questions, clips)
        assert (batch["attention_mask"] == 0).any(), "the batch must be padded"
        tokens, logits = greedy(model, batch, n=3)
        report = handle.last_report()
        for b in range(len(questions)):
            t1, l1 = greedy(model, _inputs(processor, videos, [questions[b]], [clips[b]]), n=3)
            alone = handle.last_report()
            assert alone.vision_tokens_per_layer[0] == report.vision_tokens_per_layer[b]
            assert alone.achieved_cost[0] == report.achieved_cost[b]
            mine = alone.decisions[0] if alone.decisions else []  # a prompt without video has no decisions
            assert [d.keep.tolist() for d in mine] == [d.keep.tolist() for d in report.decisions[b]]
            assert torch.equal(tokens[b : b + 1], t1)
            torch.testing.assert_close(logits[b : b + 1], l1, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# 3. compare_methods
# ---------------------------------------------------------------------------------------------


def test_compare_methods_writes_consistent_table_and_plot(videos, tmp_path):
    from framefusion.tools.compare import compare_methods, sweep

    model, processor = tiny()
    samples = [("What moves?", videos[16]), _inputs(processor, videos, ["Count the shapes."], [8])]
    configs = [
        FrameFusionConfig(cost=1.0, similarity_threshold=1.5),
        RandomPruneConfig(cost=1.0),
        *sweep([FastVConfig(ratio=0.5), InputMergeConfig()], [0.2, 0.5]),
    ]
    rows = compare_methods(model, processor, samples, configs, new_tokens=3, out_dir=tmp_path)
    assert [r["label"] for r in rows] == ["untouched", "framefusion", "random"] + ["fastv"] * 2 + ["input-merge"] * 2
    for r in rows[:3]:  # the untouched model and the no-ops
        assert r["agreement"] == 1.0 and r["prefix_agreement"] == 1.0 and r["kl"] == 0.0 and r["achieved_cost"] == 1.0
    for r in rows[3:]:
        assert 0.0 <= r["achieved_cost"] <= r["cost"] + SLACK
        assert 0.0 <= r["prefix_agreement"] <= r["agreement"] <= 1.0 and r["kl"] >= 0.0
        assert r["prefill_seconds"] > 0
    assert [r["cost"] for r in rows[3:]] == [0.2, 0.5, 0.2, 0.5]
    data = json.loads((tmp_path / "comparison.json").read_text())
    assert data["rows"] == rows and data["samples"] == 2 and data["new_tokens"] == 3
    table = [line for line in (tmp_path / "comparison.md").read_text().splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(rows)
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not getattr(model, "_framefusion_handle", None)
