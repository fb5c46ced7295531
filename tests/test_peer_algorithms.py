"""Property tests: VidCom2 (``vidcom2_keep``) and FastVID (``fastvid_reduce``) against slow plain references.

Every reference here is written from the module docstrings (which state the papers' rules) with
Python loops over frames and tokens and Python floats (float64); none of them calls into
``framefusion``. The implementations work in float32, so a reference also returns its ``margin``:
the smallest gap between two nonequal values at a decision it took (a cut, a threshold, a best
match). Where that gap is below a tolerance, float32 may legitimately decide the other way: the
example then only checks the invariants (exact count, roots) and says so with ``event``. Exactly
equal values (copied tokens, identical frames) are ties in both and must be broken the same way.
Random tensors come from a ``torch.Generator`` seeded by a hypothesis-drawn integer
(``derandomize=True``).
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from host_syncs import HostSyncCounter
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from framefusion.algorithm import FASTVID_DEFAULTS, fastvid_reduce, vidcom2_keep

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
INF = math.inf


# ---------------------------------------------------------------------------------------------
# Shared plain helpers
# ---------------------------------------------------------------------------------------------


def runs_of(frame: list[int]) -> list[list[int]]:
    """Frames as lists of token indices: runs of equal frame index."""
    out: list[list[int]] = []
    for i, f in enumerate(frame):
        if i and f == frame[i - 1]:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def mean_row(rows: list[list[float]]) -> list[float]:
    return [math.fsum(col) / len(rows) for col in zip(*rows)]


def cosine(a: list[float], b: list[float]) -> float:
    na = math.sqrt(math.fsum(x * x for x in a))
    nb = math.sqrt(math.fsum(x * x for x in b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return max(-1.0, min(1.0, math.fsum(x * y for x, y in zip(a, b)) / (na * nb)))


def top(items: list[int], key, count: int, sig=None) -> tuple[list[int], float]:
    """The ``count`` items of largest key (ties: smaller item first), and the gap at the cut: INF
    when nothing is cut, 0 when equal keys of items with different signatures ``sig`` (e.g. rows)
    straddle the cut (equal only by coincidence: float32 may order them either way)."""
    ranked = sorted(items, key=lambda i: (-key(i), i))
    gap = INF
    if 0 < count < len(ranked):
        g = key(ranked[count - 1]) - key(ranked[count])
        if g > 0 and g != INF:
            gap = g
        elif g == 0 or (g != g):
            tied = [i for i in ranked if key(i) == key(ranked[count])]
            if sig is None or len({sig(i) for i in tied}) > 1:
                gap = 0.0
    return ranked[:count], gap


def hamilton(total: int, weights: list[int]) -> list[int]:
    """Largest remainder with exact fractions: floors, then one more to the largest remainders
    (ties: the lower index)."""
    whole = sum(weights)
    quotas = [Fraction(total * w, whole) for w in weights]
    seats = [math.floor(q) for q in quotas]
    left = total - sum(seats)
    order = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - seats[i]), i))
    for i in order[:left]:
        seats[i] += 1
    return seats


# ---------------------------------------------------------------------------------------------
# Reference VidCom2 (from the module docstring of framefusion/algorithm/vidcom2.py)
# ---------------------------------------------------------------------------------------------


def reference_vidcom2(rows, frame, k, tau=0.01, eps=1e-8) -> tuple[list[bool], float]:
    n = len(rows)
    if k >= n:
        return [True] * n, INF
    if k == 0:
        return [False] * n, INF
    frames = runs_of(frame)
    num_frames = len(frames)
    g_video = mean_row(rows)
    u_video = [-cosine(r, g_video) for r in rows]
    score = {}
    u_frame = []
    for members in frames:
        g_frame = mean_row([rows[i] for i in members])
        for i in members:
            score[i] = -cosine(rows[i], g_frame) + u_video[i]
        u_frame.append(math.fsum(u_video[i] for i in members) / len(members))
    top_u = max(u_frame)
    e = [math.exp((u - top_u) / tau) for u in u_frame]
    sigma = [x / (math.fsum(e) + eps) for x in e]
    size = [len(m) for m in frames]
    weight = [size[t] * (1 + sigma[t] - 1 / num_frames) for t in range(num_frames)]
    # Water filling: cap the frames whose proportional quota exceeds their size, until none does.
    full: set[int] = set()
    while True:
        lam = (k - sum(size[t] for t in full)) / math.fsum(weight[t] for t in range(num_frames) if t not in full)
        over = [t for t in range(num_frames) if t not in full and lam * weight[t] > size[t]]
        if not over:
            break
        full.update(over)
    quota = [size[t] if t in full else lam * weight[t] for t in range(num_frames)]
    # Largest remainder: floors, then the largest fractional parts (ties: the earlier frame).
    seats = [min(size[t], math.floor(quota[t])) for t in range(num_frames)]
    left = k - sum(seats)
    order = sorted((t for t in range(num_frames) if seats[t] < size[t]), key=lambda t: (-(quota[t] - seats[t]), t))
    for t in order[:left]:
        seats[t] += 1
    assert sum(seats) == k
    # Margin of the allocation: the gap at the cut of all "priorities" quota - j (j-th token of a frame).
    frame_sig = [tuple(tuple(rows[i]) for i in m) for m in frames]
    units = [(t, j) for t in range(num_frames) for j in range(size[t])]
    _, margin = top(
        list(range(len(units))), lambda u: quota[units[u][0]] - units[u][1], k, lambda u: frame_sig[units[u][0]]
    )
    keep = [False] * n
    for t, members in enumerate(frames):
        chosen, gap = top(members, lambda i: score[i], seats[t], lambda i: tuple(rows[i]))
        margin = min(margin, gap)
        for i in chosen:
            keep[i] = True
    return keep, margin


# ---------------------------------------------------------------------------------------------
# Reference FastVID (from the module docstring of framefusion/algorithm/fastvid.py)
# ---------------------------------------------------------------------------------------------


def reference_fastvid(rows, frame, k, salience=None, c=8, tau=0.9, d=0.4, p=4, beta=0.6, knn=4):
    """Returns (keep, merged rows | None, root | None, margin)."""
    n = len(rows)
    if k >= n:
        return [True] * n, None, None, INF
    if k == 0:
        return [False] * n, [], [-1] * n, INF
    dim = len(rows[0])
    frames = runs_of(frame)
    num_frames = len(frames)
    frame_of = {i: t for t, members in enumerate(frames) for i in members}
    margin = INF

    # DySeg.
    f = [mean_row([rows[i] for i in m]) for m in frames]
    trans = [cosine(f[i], f[i + 1]) for i in range(num_frames - 1)]
    by_sim = sorted(range(num_frames - 1), key=lambda i: (trans[i], i))
    cut = set(by_sim[: c - 1]) | {i for i in range(num_frames - 1) if trans[i] < tau}
    margin = min([margin] + [abs(t - tau) for t in trans])
    frame_sig = [tuple(tuple(rows[i]) for i in m) for m in frames]
    _, gap = top(list(range(num_frames - 1)), lambda i: -trans[i], c - 1, lambda i: tuple(frame_sig[i : i + 2]))
    margin = min(margin, gap)
    segments = [[0]]
    for t in range(1, num_frames):
        if t - 1 in cut:
            segments.append([t])
        else:
            segments[-1].append(t)

    # Budgets.
    k_dtm = math.floor(d * k + 0.5)
    k_ats = k - k_dtm
    size = [len(m) for m in frames]
    ats_count = hamilton(k_ats, size)
    seg_share = hamilton(k_dtm, [sum(size[t] for t in seg) for seg in segments])
    dtm_count = [0] * num_frames
    for seg, share in zip(segments, seg_share):
        anchor_frames = seg[::p]
        for j, t in enumerate(anchor_frames):
            want = share // len(anchor_frames) + (1 if j < share % len(anchor_frames) else 0)
            dtm_count[t] = min(want, size[t] - ats_count[t])
    shortfall = k_dtm - sum(dtm_count)

    # ATS.
    if salience is None:
        sal = [math.fsum(a * b for a, b in zip(rows[i], f[frame_of[i]])) for i in range(n)]
        sal_sig = lambda i: tuple(rows[i])  # noqa: E731
    else:
        sal = list(salience)
        sal_sig = lambda i: 0  # noqa: E731  (given values: ties are exact on both sides)
    ats = set()
    for t, members in enumerate(frames):
        chosen, gap = top(members, lambda i: sal[i], ats_count[t], sal_sig)
        ats.update(chosen)
        margin = min(margin, gap)

    # Density score per frame.
    score = {}
    for members in frames:

        def dist(i, j):
            return math.sqrt(math.fsum((a - b) ** 2 for a, b in zip(rows[i], rows[j]))) / math.sqrt(dim)

        log_rho, rho_sig = {}, {}
        for i in members:
            others = sorted((dist(i, j), j) for j in members if j != i)[:knn]
            log_rho[i] = -math.fsum(x * x for x, _ in others) / len(others) if others else 0.0
            # The unordered pairs behind the value: equal for mutual nearest neighbours, whose
            # distances float32 computes bit for bit alike, so such ties are reproducible.
            rho_sig[i] = tuple(sorted(tuple(sorted((tuple(rows[i]), tuple(rows[j])))) for _, j in others))
        values = sorted(set(log_rho.values()))
        margin = min([margin] + [b - a for a, b in zip(values, values[1:])])
        for v in values:
            if len({rho_sig[i] for i in members if log_rho[i] == v}) > 1:
                margin = 0.0  # equal densities by coincidence: float32 may order them otherwise
        for i in members:
            denser = [
                j for j in members if j != i and (log_rho[j] > log_rho[i] or (log_rho[j] == log_rho[i] and j < i))
            ]
            if denser:
                delta = min(dist(i, j) for j in denser)
            else:
                delta = max(dist(i, j) for j in members)
            score[i] = log_rho[i] + (math.log(delta) if delta > 0 else -INF)

    # DTM anchors.
    anchors = []
    for t, members in enumerate(frames):
        if dtm_count[t]:
            free = [i for i in members if i not in ats]
            chosen, gap = top(free, lambda i: score[i], dtm_count[t], lambda i: tuple(rows[i]))
            anchors += chosen
            margin = min(margin, gap)
    anchors.sort()

    # Shortfall: round-robin over frames in salience order among the tokens not kept.
    kept = ats | set(anchors)
    if shortfall:
        queue = []
        for members in frames:
            rest = sorted((i for i in members if i not in kept), key=lambda i: (-sal[i], i))
            queue += [(rank, i) for rank, i in enumerate(rest)]
            values = sorted(set(sal[i] for i in rest))
            margin = min([margin] + [b - a for a, b in zip(values, values[1:])])
            for v in values:
                if len({sal_sig(i) for i in rest if sal[i] == v}) > 1:
                    margin = 0.0
        kept |= {i for _, i in sorted(queue)[:shortfall]}
    keep = [i in kept for i in range(n)]
    assert sum(keep) == k

    # Merging.
    segment_of_frame = {t: s for s, seg in enumerate(segments) for t in seg}
    seg_of = [segment_of_frame[frame_of[i]] for i in range(n)]
    root = [i if keep[i] else -1 for i in range(n)]
    for i in range(n):
        if keep[i]:
            continue
        mine = [a for a in anchors if seg_of[a] == seg_of[i]]
        if mine:
            sims = sorted(((cosine(rows[i], rows[a]), a) for a in mine), key=lambda s: (-s[0], s[1]))
            root[i] = sims[0][1]
            if len(sims) > 1:
                if sims[0][0] != sims[1][0]:
                    margin = min(margin, sims[0][0] - sims[1][0])
                elif len({tuple(rows[a]) for s_, a in sims if s_ == sims[0][0]}) > 1:
                    margin = 0.0
    merged = []
    for i in range(n):
        if keep[i]:
            members = [j for j in range(n) if root[j] == i and j != i]
            if members:
                avg = mean_row([rows[j] for j in members])
                merged.append([beta * a + (1 - beta) * b for a, b in zip(rows[i], avg)])
            else:
                merged.append(list(rows[i]))
    return keep, merged, root, margin


# ---------------------------------------------------------------------------------------------
# Random videos
# ---------------------------------------------------------------------------------------------


@st.composite
def videos(draw, max_frames: int = 10, max_tokens: int = 9):
    """A video as (hidden float64 (n, dim), frame list): scenes that change at random frames, a
    vector per patch position, noise; optionally tokens copied from the previous frame, zero
    tokens and frames of unequal sizes."""
    num_frames = draw(st.integers(1, max_frames))
    per_frame = draw(st.integers(1, max_tokens))
    dim = draw(st.sampled_from([1, 2, 3, 4, 6, 8]))
    seed = draw(st.integers(0, 2**31 - 1))
    noise = draw(st.sampled_from([0.05, 0.3, 1.0]))
    repeat_p = draw(st.sampled_from([0.0, 0.0, 0.5, 1.0]))
    zero_p = draw(st.sampled_from([0.0, 0.0, 0.1]))
    ragged = draw(st.booleans())
    g = torch.Generator().manual_seed(seed)
    patches = torch.randn(per_frame, dim, generator=g, dtype=torch.float64)
    scene = torch.randn(dim, generator=g, dtype=torch.float64) * 2
    rows, frame, previous = [], [], None
    for t in range(num_frames):
        if torch.rand(1, generator=g).item() < 0.3:
            scene = torch.randn(dim, generator=g, dtype=torch.float64) * 2
        count = per_frame if not ragged else int(torch.randint(1, per_frame + 1, (1,), generator=g))
        current = []
        for j in range(count):
            u = torch.rand(2, generator=g).tolist()
            if previous is not None and j < len(previous) and u[0] < repeat_p:
                row = previous[j].clone()
            elif u[1] < zero_p:
                row = torch.zeros(dim, dtype=torch.float64)
            else:
                row = scene + patches[j] + noise * torch.randn(dim, generator=g, dtype=torch.float64)
            current.append(row)
            frame.append(t)
        rows += current
        previous = current
    offset = draw(st.integers(-3, 3))
    return torch.stack(rows), [f + offset for f in frame]


def rows_of(hidden: torch.Tensor) -> list[list[float]]:
    """The values the implementation sees (float32), as Python floats."""
    return hidden.float().double().tolist()


# ---------------------------------------------------------------------------------------------
# VidCom2
# ---------------------------------------------------------------------------------------------

TOL = 1e-4


@settings(max_examples=80, **SETTINGS)
@given(video=videos(), share=st.floats(0.0, 1.2), tau=st.sampled_from([0.01, 0.01, 0.1, 1.0]))
def test_vidcom2_matches_reference(video, share, tau):
    hidden, frame = video
    n = hidden.shape[0]
    k = min(n + 2, round(share * n))
    keep = vidcom2_keep(hidden.float(), torch.tensor(frame), k, tau=tau)
    want, margin = reference_vidcom2(rows_of(hidden), frame, k, tau=tau)
    assert keep.dtype == torch.bool and keep.shape == (n,)
    assert int(keep.sum()) == min(k, n)
    if margin < TOL:
        event("ambiguous within float32: invariants only")
        return
    event("compared exactly")
    assert keep.tolist() == want


@settings(max_examples=30, **SETTINGS)
@given(video=videos(max_frames=6), share=st.floats(0.05, 0.95), dtype=st.sampled_from([torch.bfloat16, torch.float16]))
def test_vidcom2_half_precision_inputs_use_float32_maths(video, share, dtype):
    hidden, frame = video
    k = max(1, round(share * hidden.shape[0]))
    low = hidden.to(dtype)
    keep = vidcom2_keep(low, torch.tensor(frame), k)
    want, margin = reference_vidcom2(rows_of(low), frame, k)
    assert int(keep.sum()) == min(k, hidden.shape[0])
    if margin >= TOL:
        assert keep.tolist() == want


def test_vidcom2_budget_follows_frame_uniqueness():
    """Three identical frames and one unlike the video as a whole: sigma is ~1 for it, so with
    k = 12 of 24 the quotas are 12 * 10.5 / 24 = 5.25 for it and 12 * 4.5 / 24 = 2.25 for the
    others (weights 6 (1 + sigma - 1/4)); floors 5, 2, 2, 2 and the one seat left goes to the
    earliest of the tied remainders. With k = 18 the unique frame is full (quota 7.875 > 6)."""
    g = torch.Generator().manual_seed(0)
    same = torch.randn(6, 4, generator=g) + 2
    other = torch.randn(6, 4, generator=g) - 2
    hidden = torch.cat([same, same, other, same])
    frame = torch.arange(24) // 6
    assert vidcom2_keep(hidden, frame, 12).view(4, 6).sum(1).tolist() == [3, 2, 5, 2]
    assert vidcom2_keep(hidden, frame, 18).view(4, 6).sum(1).tolist() == [4, 4, 6, 4]


def test_vidcom2_edges_and_ties():
    hidden = torch.randn(12, 3)
    frame = torch.tensor([5] * 12)  # one frame
    assert vidcom2_keep(hidden, frame, 0).sum() == 0
    assert vidcom2_keep(hidden, frame, 12).all() and vidcom2_keep(hidden, frame, 99).all()
    assert vidcom2_keep(hidden[:0], frame[:0], 0).shape == (0,)
    # All tokens equal: every score ties, so the earliest tokens of each frame stay.
    flat = torch.ones(12, 3)
    keep = vidcom2_keep(flat, torch.arange(12) // 4, 6)
    assert keep.view(3, 4).tolist() == [[True, True, False, False]] * 3
    # Zero tokens are allowed (cosine 0) and give no NaN.
    keep = vidcom2_keep(torch.zeros(8, 3), torch.arange(8) // 4, 3)
    assert keep.tolist() == [True, True, False, False, True, False, False, False]


@pytest.mark.parametrize(
    "args, message",
    [
        ((torch.zeros(4), torch.zeros(4, dtype=torch.long), 2), "hidden must be a 2-D floating point tensor"),
        ((torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, dtype=torch.long), 2), "floating point"),
        ((torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), 2), r"one entry per token \(4\), got \(3,\)"),
        ((torch.zeros(4, 2), torch.zeros(4), 2), "integer frame indices, got dtype torch.float32"),
        ((torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), -1), "k must be a Python int >= 0.*got -1"),
        ((torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 2.0), "k must be a Python int >= 0.*got 2.0"),
    ],
)
def test_vidcom2_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        vidcom2_keep(*args)


def test_vidcom2_bad_constants():
    with pytest.raises(ValueError, match="tau must be a number > 0, got 0"):
        vidcom2_keep(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 2, tau=0)
    with pytest.raises(ValueError, match="eps must be a number >= 0, got -1"):
        vidcom2_keep(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 2, eps=-1)


def test_vidcom2_reads_nothing_back():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(64, 8, generator=g)
    frame = torch.arange(64) // 8
    with HostSyncCounter() as counter:
        vidcom2_keep(hidden, frame, 20)
    assert counter.total == 0, counter.kinds


# ---------------------------------------------------------------------------------------------
# FastVID
# ---------------------------------------------------------------------------------------------


@st.composite
def fastvid_params(draw):
    return dict(
        c=draw(st.sampled_from([1, 2, 3, 8])),
        tau=draw(st.sampled_from([0.5, 0.9, 0.99])),
        d=draw(st.sampled_from([0.0, 0.4, 0.4, 1.0])),
        p=draw(st.sampled_from([1, 2, 4])),
        beta=draw(st.sampled_from([0.0, 0.6, 1.0])),
        knn=draw(st.sampled_from([1, 4])),
    )


def check_fastvid(hidden, frame, k, params, salience=None, sizes=None):
    n = hidden.shape[0]
    given = None if salience is None else torch.tensor(salience)
    keep, merged, root = fastvid_reduce(hidden, torch.tensor(frame), k, salience=given, sizes=sizes, **params)
    want_keep, want_merged, want_root, margin = reference_fastvid(rows_of(hidden), frame, k, salience, **params)
    assert keep.shape == (n,) and int(keep.sum()) == min(k, n)
    if k >= n:
        assert merged is None and root is None
        return
    assert merged.shape == (k, hidden.shape[1]) and merged.dtype == hidden.dtype
    # Roots: kept tokens are their own, the others an earlier or later kept token of the video, or -1.
    idx = torch.arange(n)
    assert torch.equal(root[keep], idx[keep])
    assert bool((root[~keep] == -1).logical_or(keep[root[~keep].clamp_min(0)]).all())
    if margin < TOL:
        event("ambiguous within float32: invariants only")
        return
    event("compared exactly")
    assert keep.tolist() == want_keep
    assert root.tolist() == want_root
    want = torch.tensor(want_merged, dtype=torch.float64).reshape(k, hidden.shape[1])
    assert torch.allclose(merged.double(), want, rtol=1e-4, atol=1e-5)


@settings(max_examples=80, **SETTINGS)
@given(video=videos(), share=st.floats(0.0, 1.2), params=fastvid_params())
def test_fastvid_matches_reference(video, share, params):
    hidden, frame = video
    k = min(hidden.shape[0] + 2, round(share * hidden.shape[0]))
    check_fastvid(hidden.float(), frame, k, params)


@settings(max_examples=30, **SETTINGS)
@given(video=videos(), share=st.floats(0.05, 0.95), params=fastvid_params(), seed=st.integers(0, 2**31 - 1))
def test_fastvid_with_given_salience_and_sizes(video, share, params, seed):
    hidden, frame = video
    n = hidden.shape[0]
    g = torch.Generator().manual_seed(seed)
    salience = torch.rand(n, generator=g).tolist()  # float32 values: exact on both sides
    sizes = [len(r) for r in runs_of(frame)]
    check_fastvid(hidden.float(), frame, max(1, round(share * n)), params, salience=salience, sizes=sizes)


def test_fastvid_paper_defaults_and_segments():
    assert FASTVID_DEFAULTS == dict(c=8, tau=0.9, d=0.4, p=4, beta=0.6, knn=4)
    # Two scenes of 4 frames, 6 tokens each; c=1 so only the scene change (similarity < tau) cuts.
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g) + 4
    hidden = torch.cat([a + 0.01 * torch.randn(6, 5, generator=g) for _ in range(4)] + [b] * 4)
    frame = torch.arange(48) // 6
    keep, merged, root = fastvid_reduce(hidden, frame, 8, c=1, d=1.0, p=4)
    # d=1: DTM only; one anchor frame per segment (frames 0 and 4), 4 anchors each.
    assert keep.view(8, 6).sum(1).tolist() == [4, 0, 0, 0, 4, 0, 0, 0]
    # Every token joins an anchor of its own scene.
    assert bool((root[:24] < 24).all() and (root[:24] >= 0).all() and (root[24:] >= 24).all())


def test_fastvid_merge_formula_by_hand():
    """One frame, k=1, d=1: the densest-peak token is the anchor and a* = beta a + (1-beta) mean(rest)."""
    hidden = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.1, 0.0], [0.9, 0.0]])
    keep, merged, root = fastvid_reduce(hidden, torch.zeros(4, dtype=torch.long), 1, d=1.0, beta=0.6, knn=2)
    anchor = int(torch.nonzero(keep)[0])
    assert anchor in (1, 2, 3)  # the dense cluster, not the outlier at the origin
    assert root.tolist() == [anchor] * 4
    rest = hidden[[i for i in range(4) if i != anchor]].mean(0)
    assert torch.allclose(merged[0], 0.6 * hidden[anchor] + 0.4 * rest)


def test_fastvid_edges_and_ties():
    hidden = torch.randn(12, 3)
    frame = torch.zeros(12, dtype=torch.long)
    keep, merged, root = fastvid_reduce(hidden, frame, 0)
    assert keep.sum() == 0 and merged.shape == (0, 3) and root.tolist() == [-1] * 12
    for k in (12, 50):
        keep, merged, root = fastvid_reduce(hidden, frame, k)
        assert keep.all() and merged is None and root is None
    # All tokens equal: every score ties: the earliest tokens stay, the rest join the first anchor.
    keep, merged, root = fastvid_reduce(torch.ones(12, 3), torch.arange(12) // 4, 4, d=0.5, c=1, p=1)
    assert int(keep.sum()) == 4 and torch.allclose(merged, torch.ones(4, 3))
    assert all(r == -1 or keep[r] for r in root.tolist())
    # d = 0: ATS only, nothing merges, the rest is dropped.
    keep, merged, root = fastvid_reduce(torch.randn(12, 3), torch.arange(12) // 4, 6, d=0.0)
    assert keep.view(3, 4).sum(1).tolist() == [2, 2, 2] and (root[~keep] == -1).all()
    # Large budget: anchor frames lack room, the shortfall is kept elsewhere; still exactly k.
    keep, merged, root = fastvid_reduce(torch.randn(40, 3), torch.arange(40) // 5, 30, d=1.0, c=1, tau=-1.0)
    assert int(keep.sum()) == 30 and merged.shape == (30, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(k=-2), "k must be a Python int >= 0.*got -2"),
        (dict(k=True), "k must be a Python int >= 0.*got True"),
        (dict(c=0), "c must be an int >= 1, got 0"),
        (dict(p=1.5), "p must be an int >= 1, got 1.5"),
        (dict(knn=0), "knn must be an int >= 1, got 0"),
        (dict(d=1.5), r"d must be a number in \[0, 1\], got 1.5"),
        (dict(beta=-0.1), r"beta must be a number in \[0, 1\], got -0.1"),
        (dict(tau=float("nan")), "tau must be a number"),
        (dict(sizes=[2, 2]), r"sizes must be positive ints .* summing to n=6, got \[2, 2\]"),
        (dict(sizes=[3, 0, 3]), r"sizes must be positive ints .*got \[3, 0, 3\]"),
        (dict(salience=torch.zeros(5)), r"salience must be None or a floating point tensor \(6,\)"),
        (dict(hidden=torch.zeros(6)), r"hidden must be a 2-D floating point tensor \(n, d\), got \(6,\)"),
        (dict(frame=torch.zeros(6, 1, dtype=torch.long)), r"frame must be a 1-D tensor .*\(6\), got \(6, 1\)"),
    ],
)
def test_fastvid_bad_input(kwargs, message):
    args = dict(hidden=torch.zeros(6, 2), frame=torch.zeros(6, dtype=torch.long), k=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        fastvid_reduce(**args)


def test_fastvid_host_reads():
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(96, 8, generator=g)
    frame = torch.arange(96) // 12
    with HostSyncCounter() as counter:
        fastvid_reduce(hidden, frame, 24, sizes=[12] * 8)
    assert counter.total == 0, counter.kinds
    with HostSyncCounter() as counter:
        fastvid_reduce(hidden, frame, 24)  # learns the frame sizes: one read
    assert counter.total == 1, counter.kinds


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_peers_cuda_match_cpu():
    g = torch.Generator().manual_seed(4)
    hidden = torch.randn(200, 16, generator=g)
    frame = torch.arange(200) // 25
    for k in (0, 17, 60, 199):
        assert torch.equal(vidcom2_keep(hidden.cuda(), frame.cuda(), k).cpu(), vidcom2_keep(hidden, frame, k))
        keep, merged, root = fastvid_reduce(hidden.cuda(), frame.cuda(), k, sizes=[25] * 8)
        want = fastvid_reduce(hidden, frame, k)
        assert torch.equal(keep.cpu(), want[0]) and torch.equal(root.cpu(), want[2])
        assert torch.allclose(merged.cpu(), want[1], atol=1e-5)
