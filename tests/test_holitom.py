"""HoliTom: the pure rules (``algorithm.holitom``) against slow plain references, and the method.

The references follow the module docstring with Python loops and float64 (the segmentation by
brute force over every partition of the frames); as in ``test_peer_algorithms``, each returns the
smallest gap at a float decision it took (``margin``), and below a tolerance the example checks
only the invariants. Exactly equal values (copied tokens) are ties in both and must agree.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import batch_equals_alone, make_inputs, replay_logits
from host_syncs import HostSyncCounter
from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_peer_algorithms import INF, SETTINGS, TOL, cosine, hamilton, mean_row, rows_of, runs_of, top, videos

import framefusion
from framefusion import HoliTom
from framefusion.algorithm import TokenBudget, holitom_inner_merge, holitom_input_reduce
from framefusion.tiny_models import build_tiny_model


# ---------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------


def dist(a, b):
    return math.sqrt(math.fsum((x - y) ** 2 for x, y in zip(a, b))) / math.sqrt(len(a))


def density_scores(points: list[list[float]], knn: int) -> tuple[list[float], float]:
    """log(rho) + log(delta) of each point among ``points`` (DPC-kNN as in FastVID), and a margin."""
    m = len(points)
    margin = INF
    log_rho = []
    for i in range(m):
        near = sorted(dist(points[i], points[j]) for j in range(m) if j != i)[:knn]
        log_rho.append(-math.fsum(x * x for x in near) / len(near) if near else 0.0)
    for i, j in itertools.combinations(range(m), 2):
        if points[i] != points[j]:
            gap = abs(log_rho[i] - log_rho[j])
            margin = min(margin, gap)
    score = []
    for i in range(m):
        denser = [j for j in range(m) if j != i and (log_rho[j] > log_rho[i] or (log_rho[j] == log_rho[i] and j < i))]
        delta = min(dist(points[i], points[j]) for j in denser) if denser else max(dist(points[i], p) for p in points)
        score.append(log_rho[i] + (math.log(delta) if delta > 0 else -INF))
    return score, margin


def reference_input(rows, frame, patch, k, tau=0.8, knn=7, salience=None):
    """(keep, merged rows | None, root | None, count, margin)."""
    n = len(rows)
    if k >= n:
        return [True] * n, None, None, n, INF
    frames = runs_of(frame)
    num_frames = len(frames)
    run = {i: t for t, members in enumerate(frames) for i in members}
    margin = INF
    prev = [max((j for j in range(i) if patch[j] == patch[i]), default=-1) for i in range(n)]
    linked = [False] * n
    for i in range(n):
        if prev[i] >= 0 and run[prev[i]] == run[i] - 1:
            c = cosine(rows[i], rows[prev[i]])
            linked[i] = c > tau
            if rows[i] != rows[prev[i]]:
                margin = min(margin, abs(c - tau))
    nxt = {prev[i]: i for i in range(n) if linked[i]}

    def chain(i):
        while linked[i]:
            i = prev[i]
        out = [i]
        while out[-1] in nxt:
            out.append(nxt[out[-1]])
        return out

    def static_chains(s, e):  # chains through every frame s..e, as their tokens in s..e
        if s == e:
            return []
        found = []
        for i in frames[e]:
            c = chain(i)
            if run[c[0]] <= s:
                found.append([j for j in c if s <= run[j] <= e])
        return found

    best = None
    for cuts in itertools.product([False, True], repeat=max(0, num_frames - 1)):
        segs, s = [], 0
        for t in range(1, num_frames):
            if cuts[t - 1]:
                segs.append((s, t - 1))
                s = t
        segs.append((s, num_frames - 1))
        value = sum(len(static_chains(s, e)) * (e - s) for s, e in segs)
        key = (value, tuple(s for s, _ in reversed(segs)))
        if best is None or key > best[0]:
            best = (key, segs)
    segments = best[1]
    chains = [static_chains(s, e) for s, e in segments]
    static = {j for cs in chains for c in cs for j in c}
    m = n - sum(len(c) - 1 for cs in chains for c in cs)
    root = list(range(n))
    for cs in chains:
        for c in cs:
            for j in c:
                root[j] = c[0]
    if k < m:
        groups = [cs for cs in chains if cs]
        dynamic = [[i for i in frames[t] if i not in static] for s, e in segments for t in range(s, e + 1)]
        seats = hamilton(k, [len(cs) for cs in groups] + [len(d) for d in dynamic])
        a_g, b_t = seats[: len(groups)], seats[len(groups) :]
        if salience is None:
            f = [mean_row([rows[i] for i in members]) for members in frames]
            sal = [math.fsum(x * y for x, y in zip(rows[i], f[run[i]])) for i in range(n)]
            sig = lambda i: tuple(rows[i])  # noqa: E731
        else:
            sal, sig = list(salience), (lambda i: 0)
        root = [-1] * n
        for t, members in enumerate(dynamic):
            chosen, gap = top(members, lambda i: sal[i], b_t[t], sig)
            margin = min(margin, gap)
            for i in chosen:
                root[i] = i
        for cs, a in zip(groups, a_g):
            means = [mean_row([rows[j] for j in c]) for c in cs]
            score, gap = density_scores(means, knn)
            margin = min(margin, gap)
            centres, gap = top(list(range(len(cs))), lambda q: score[q], a, lambda q: tuple(means[q]))
            margin = min(margin, gap)
            centres.sort()
            for q, c in enumerate(cs):
                if not centres:
                    target = -1
                else:
                    d = sorted((dist(means[q], means[z]), z) for z in centres)
                    target = cs[d[0][1]][0]
                    if len(d) > 1 and d[0][0] != d[1][0]:
                        margin = min(margin, d[1][0] - d[0][0])
                    elif len(d) > 1 and means[d[0][1]] != means[d[1][1]]:
                        margin = 0.0
                for j in c:
                    root[j] = target
        m = k
    keep = [root[i] == i for i in range(n)]
    merged = [mean_row([rows[j] for j in range(n) if root[j] == i]) for i in range(n) if keep[i]]
    return keep, merged, root, m, margin


def reference_inner(rows, scores, keep_count):
    n = len(rows)
    kept = sorted(sorted(range(n), key=lambda i: (-scores[i], i))[:keep_count])
    margin = INF
    root = []
    for i in range(n):
        if i in kept:
            root.append(i)
            continue
        sims = sorted(((cosine(rows[i], rows[j]), j) for j in kept), key=lambda s: (-s[0], s[1]))
        root.append(sims[0][1])
        if len(sims) > 1 and sims[0][0] != sims[1][0]:
            margin = min(margin, sims[0][0] - sims[1][0])
        elif len(sims) > 1 and rows[sims[0][1]] != rows[sims[1][1]]:
            margin = 0.0
    merged = [mean_row([rows[j] for j in range(n) if root[j] == i]) for i in kept]
    return [i in kept for i in range(n)], merged, root, margin


# ---------------------------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------------------------


def patches_of(frame: list[int]) -> list[int]:
    """Patch key = the token's place in its frame (one video)."""
    out = []
    for members in runs_of(frame):
        out += list(range(len(members)))
    return out


def check_input(hidden, frame, k, tau, knn, salience=None):
    n = hidden.shape[0]
    patch = patches_of(frame)
    given_sal = None if salience is None else torch.tensor(salience)
    keep, merged, root, count = holitom_input_reduce(
        hidden, torch.tensor(frame), torch.tensor(patch), k, tau=tau, knn=knn, salience=given_sal
    )
    want_keep, want_merged, want_root, want_count, margin = reference_input(
        rows_of(hidden), frame, patch, k, tau, knn, salience
    )
    assert keep.shape == (n,) and int(keep.sum()) == count <= max(k, 0) or k >= n
    if k >= n:
        assert keep.all() and merged is None and root is None and count == n
        return
    assert merged.shape == (count, hidden.shape[1]) and merged.dtype == hidden.dtype
    idx = torch.arange(n)
    assert torch.equal(root[keep], idx[keep])
    assert bool(((root == -1) | keep[root.clamp_min(0)]).all())
    if margin < TOL:
        event("ambiguous within float32: invariants only")
        return
    event("compared exactly")
    assert count == want_count
    assert keep.tolist() == want_keep
    assert root.tolist() == want_root
    want = torch.tensor(want_merged, dtype=torch.float64).reshape(count, hidden.shape[1])
    assert torch.allclose(merged.double(), want, rtol=1e-4, atol=1e-5)


@settings(max_examples=50, **SETTINGS)
@given(
    video=videos(max_frames=7, max_tokens=6),
    share=st.floats(0.0, 1.2),
    tau=st.sampled_from([-1.0, 0.0, 0.5, 0.8, 0.95]),
    knn=st.sampled_from([1, 2, 7]),
)
def test_input_reduce_matches_reference(video, share, tau, knn):
    hidden, frame = video
    k = min(hidden.shape[0] + 2, round(share * hidden.shape[0]))
    check_input(hidden.float(), frame, k, tau, knn)


@settings(max_examples=25, **SETTINGS)
@given(video=videos(max_frames=6, max_tokens=6), share=st.floats(0.05, 0.9), seed=st.integers(0, 2**31 - 1))
def test_input_reduce_with_given_salience(video, share, seed):
    hidden, frame = video
    salience = torch.rand(hidden.shape[0], generator=torch.Generator().manual_seed(seed)).tolist()
    check_input(hidden.float(), frame, max(1, round(share * hidden.shape[0])), 0.8, 7, salience)


@settings(max_examples=50, **SETTINGS)
@given(video=videos(max_frames=5, max_tokens=6), share=st.floats(0.05, 1.0), seed=st.integers(0, 2**31 - 1))
def test_inner_merge_matches_reference(video, share, seed):
    hidden, _ = video
    hidden = hidden.float()
    n = hidden.shape[0]
    g = torch.Generator().manual_seed(seed)
    scores = (torch.randint(0, 4, (n,), generator=g).float() / 4).tolist()  # ties on purpose
    keep_count = max(1, round(share * n))
    keep, merged, root = holitom_inner_merge(hidden, torch.tensor(scores), keep_count)
    want_keep, want_merged, want_root, margin = reference_inner(rows_of(hidden), scores, keep_count)
    assert keep.tolist() == want_keep and int(keep.sum()) == min(n, keep_count)
    if margin < TOL:
        event("ambiguous within float32: invariants only")
        return
    assert root.tolist() == want_root
    assert torch.allclose(merged.double(), torch.tensor(want_merged, dtype=torch.float64), rtol=1e-4, atol=1e-5)


def test_temporal_segments_merge_static_positions_into_their_first_frame():
    """Frames 0-3 repeat one scene (tokens 0-2 static, token 3 changes), frames 4-5 another."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    frames = []
    for t in range(4):
        f = a.clone()
        f[3] = torch.randn(6, generator=g)  # the moving patch
        frames.append(f)
    frames += [b, b]
    hidden = torch.cat(frames)
    frame, patch = torch.arange(24) // 4, torch.arange(24) % 4
    keep, merged, root, count = holitom_input_reduce(hidden, frame, patch, 24 - 1)  # k >= m: temporal only
    # segment [0, 3]: 3 static chains of 4 (9 merged away); [4, 5]: 4 chains of 2 (4 merged away)
    assert count == 24 - 9 - 4
    assert root[:16].view(4, 4)[:, :3].tolist() == [[0, 1, 2]] * 4
    assert root[:16].view(4, 4)[:, 3].tolist() == [3, 7, 11, 15]
    assert root[16:].tolist() == [16, 17, 18, 19] * 2
    torch.testing.assert_close(merged[:3], torch.stack(frames[:4])[:, :3].mean(0))
    # a smaller k: 11 tokens over groups static [0,3] (3), static [4,5] (4), dynamic frames (1 each, 0, 0)
    keep, merged, root, count = holitom_input_reduce(hidden, frame, patch, 7)
    assert count == 7 and int(keep.sum()) == 7


def test_edges():
    hidden = torch.randn(12, 3)
    frame, patch = torch.arange(12) // 4, torch.arange(12) % 4
    keep, merged, root, count = holitom_input_reduce(hidden, frame, patch, 0)
    assert count == 0 and not keep.any() and merged.shape == (0, 3) and root.tolist() == [-1] * 12
    for k in (12, 40):
        keep, merged, root, count = holitom_input_reduce(hidden, frame, patch, k)
        assert keep.all() and merged is None and root is None and count == 12
    keep, merged, root, count = holitom_input_reduce(hidden[:0], frame[:0], patch[:0], 0)
    assert keep.shape == (0,) and count == 0
    # one frame: no temporal merging, k tokens by salience
    keep, merged, root, count = holitom_input_reduce(hidden[:4], frame[:4] * 0, patch[:4], 2)
    assert count == 2 and (root[~keep] == -1).all()
    # all equal: everything is static; the earliest token of frame 0 is the centre
    keep, merged, root, count = holitom_input_reduce(torch.ones(12, 3), frame, patch, 1)
    assert keep.tolist() == [True] + [False] * 11 and root.tolist() == [0] * 12
    assert torch.equal(merged, torch.ones(1, 3))
    # half precision in, float32 maths, same dtype out
    keep, merged, root, count = holitom_input_reduce(hidden.half(), frame, patch, 5)
    assert merged.dtype == torch.float16 and count == 5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(k=-1), "k must be a Python int >= 0"),
        (dict(k=2.0), "k must be a Python int >= 0"),
        (dict(hidden=torch.zeros(6)), "hidden must be a 2-D floating point tensor"),
        (dict(frame=torch.zeros(6)), "integer frame indices"),
        (dict(patch=torch.zeros(5, dtype=torch.long)), r"patch must be an integer tensor \(6,\)"),
        (dict(salience=torch.zeros(4)), r"salience must be None or a floating point tensor \(6,\)"),
        (dict(tau=float("nan")), "tau must be a number"),
        (dict(knn=0), "knn must be an int >= 1"),
    ],
)
def test_input_reduce_bad_input(kwargs, message):
    args = dict(hidden=torch.zeros(6, 2), frame=torch.arange(6) // 3, patch=torch.arange(6) % 3, k=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        holitom_input_reduce(**args)


def test_inner_merge_bad_input():
    with pytest.raises(ValueError, match="keep_count must be a Python int >= 1"):
        holitom_inner_merge(torch.zeros(4, 2), torch.zeros(4), 0)
    with pytest.raises(ValueError, match=r"scores must be a floating point tensor \(4,\)"):
        holitom_inner_merge(torch.zeros(4, 2), torch.zeros(3), 2)


def test_host_reads():
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(96, 8, generator=g)
    frame, patch = torch.arange(96) // 12, torch.arange(96) % 12
    with HostSyncCounter() as counter:
        holitom_input_reduce(hidden, frame, patch, 24)
    assert counter.total == 1, counter.kinds
    with HostSyncCounter() as counter:
        holitom_inner_merge(hidden, torch.rand(96, generator=g), 30)
    assert counter.total == 0, counter.kinds


# ---------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------


def test_settings_are_validated_and_retention_is_the_native_knob():
    assert HoliTom().cost == 0.3 and HoliTom().layer == 18 and HoliTom().merge_ratio == 0.5
    native = HoliTom(retention=0.15)
    assert native.cost is None and native.retention == 0.15
    assert native.with_cost(0.2) == HoliTom(cost=0.2)
    for bad, words in [
        (dict(cost=0.3, retention=0.2), "either cost .* or retention"),
        (dict(retention=0.0), r"retention must be in \(0, 1\]"),
        (dict(merge_ratio=1.0), r"merge_ratio must be in \[0, 1\)"),
        (dict(layer=0), "layer must be >= 1"),
        (dict(tau=1.5), r"tau must be in \[-1, 1\]"),
        (dict(salience="cls"), "salience must be one of features, attention"),
        (dict(cost=0.0), r"cost must be in \(0, 1\]"),
    ]:
        with pytest.raises(ValueError, match=words):
            HoliTom(**bad)
    with pytest.raises(TypeError, match="knn must be an integer"):
        HoliTom(knn=2.5)


@pytest.mark.parametrize("cost, layer, ratio", [(0.3, 18, 0.5), (0.123, 18, 0.5), (0.5, 4, 0.25), (0.05, 27, 0.9), (1.0, 18, 0.5)])
def test_input_count_fills_the_budget_by_the_formula(cost, layer, ratio):
    """c is the largest count with K c + (L - K)(c - floor(R c)) <= cost L N (L = 28, N = 1000)."""
    method = HoliTom(cost=cost, layer=layer, merge_ratio=ratio)
    view = TokenBudget(cost, 28, 1000).view()
    c = method.input_count(view, 1000)

    def total(c):
        return layer * c + (28 - layer) * (c - math.floor(ratio * c))

    assert total(c) <= cost * 28 * 1000 and (c == 1000 or total(c + 1) > cost * 28 * 1000)
    if cost == 0.123:  # the paper's r = 0.15 with K = 18, R = 0.5: cost = r * 23/28
        assert abs(c - 150) <= 1


@pytest.fixture(scope="module")
def model(processors):
    return build_tiny_model("qwen2_vl", num_layers=4, processor=processors["qwen2_vl"])


@pytest.mark.parametrize("method", [HoliTom(cost=0.3, layer=2, salience="features"), HoliTom(cost=0.4, layer=2, salience="attention")], ids=["features", "attention"])
def test_method_reduces_at_the_input_and_at_layer_k_within_budget(method, model, processors, videos):
    """Both stages on the 4-layer model (K = 2): budget, batch = alone, exact decoding by replay."""
    processor = processors["qwen2_vl"]
    questions, clips = ["What moves?", "Which colour is the square?"], [videos[8], videos[16]]
    with framefusion.apply(model, method) as handle:
        batch, single, tokens, logits, report = batch_equals_alone(model, handle, processor, questions, clips)
    for n, counts, cost in zip(batch.vision_tokens, batch.vision_tokens_per_layer, batch.achieved_cost):
        assert cost <= method.cost and counts[0] == counts[1] < n
        c = counts[0]
        # layer K keeps what the rest of the budget affords: at least the planned c - floor(R c)
        assert counts[2] == counts[3] == min(c, math.floor((method.cost * 4 * n - 2 * c) / 2 + 1e-9))
        assert c - math.floor(0.5 * c) <= counts[2] < c
        # the input keeps the planned count, or fewer where temporal merging alone went below it
        assert c <= method.input_count(TokenBudget(method.cost, 4, n).view(), n)
    layers = [(d.layer, d.kind) for d in report.decisions[0]]
    assert layers == [(0, "merge"), (2, "merge")]
    replayed = replay_logits(model, single, tokens, report.decisions, counts=report.vision_tokens_per_layer)
    torch.testing.assert_close(replayed, logits, atol=2e-5, rtol=1e-5)


def test_native_retention_keeps_r_n_at_the_input(model, processors, videos):
    inputs = make_inputs(processors["qwen2_vl"], ["What moves?"], videos=[videos[8]])
    with framefusion.apply(model, HoliTom(retention=0.25, layer=3)) as handle, torch.no_grad():
        model(**inputs)
        report = handle.last_report()
    n, counts = report.vision_tokens[0], report.vision_tokens_per_layer[0]
    assert counts[0] <= math.floor(0.25 * n + 0.5) and counts[3] == counts[0] - math.floor(0.5 * counts[0])
    assert report.achieved_cost[0] == sum(counts) / (4 * n)
