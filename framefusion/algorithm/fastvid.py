"""FastVID's selection and merging rule as a pure tensor function on ONE video (no transformers import).

Paper: Leqi Shen, Guoqiang Gong, Tao He, Yifeng Zhang, Pengzhang Liu, Sicheng Zhao, Guiguang Ding,
"FastVID: Dynamic Density Pruning for Fast Video Large Language Models", NeurIPS 2025,
arXiv 2503.11187 (Sections 3.2-3.3, implementation details in Sec. 4.1, Appendix B).

Input: the tokens of one video in sequence order, ``hidden`` (n, d), and ``frame`` (n,): a frame
index per token; a frame is a run of consecutive tokens with the same index. F frames, M_t tokens
in frame t.

1. Dynamic temporal segmentation (DySeg, paper Eq. 1-2). ``f_t`` = mean of the tokens of frame t
   (the paper's "global frame feature"; we have no other), ``t_i = cos(f_i, f_{i+1})``. A segment
   boundary follows frame i when i is one of the ``c - 1`` smallest ``t_i`` (S1; ties: the earlier
   transition) or ``t_i < tau`` (S2).
2. Budget split (the paper: a segment of P frames keeps ``r P N`` tokens, ``d r P N`` from DTM and
   ``(1 - d) r P N`` from ATS, ATS ``(1 - d) r N`` per frame, DTM ``d r P N / ceil(P / p)`` per
   anchor frame). Here with exact integers: ``K_dtm = floor(d k + 1/2)``, ``K_ats = k - K_dtm``;
   ATS count per frame = largest remainder (Hamilton) of ``K_ats`` in proportion to ``M_t``; DTM
   count per segment = largest remainder of ``K_dtm`` in proportion to the segment's tokens; within
   a segment, its ``A = ceil(P / p)`` anchor frames get ``D // A`` each and the first ``D % A`` one
   more. Largest-remainder ties go to the earlier frame / segment.
3. Attention-based token selection (ATS): in every frame the ``a_t`` tokens of highest salience
   (ties: the earlier token). The paper's salience is the [CLS] attention of the vision encoder
   (a re-attached SigLIP head; for [CLS]-free encoders such as Qwen-VL's, the attention of a pseudo
   [CLS] = mean of the frame's patch tokens at the ViT's last layer). Pass it as ``salience`` if you
   have it; without it the salience is ``x_i . f_t`` (the pseudo-[CLS] query with identity
   projections: the only version computable from the features alone).
4. Density-based token merging (DTM). Anchor frames are frames ``0, p, 2p, ...`` of each segment.
   In a frame, with ``dist(i, j) = ||x_i - x_j|| / sqrt(d)`` (Euclidean distance per channel):
   ``rho_i = exp(-mean of dist(i, j)^2 over the knn nearest other tokens j)`` (DPC-kNN),
   ``delta_i = min dist(i, j) over tokens j of higher density`` (``max_j dist(i, j)`` for the
   densest token; density ties: the earlier token counts as denser), score ``rho_i * delta_i``.
   In anchor frame t the ``dtm_t`` highest-scoring tokens not taken by ATS become anchors (ties:
   the earlier token). Every other token of the segment that is not kept joins the anchor of its
   segment with the largest cosine similarity (ties: the earlier anchor), and the anchor becomes
   ``a* = beta a + (1 - beta) mean(b_1..b_m)`` (paper Eq. 5; ``a* = a`` when nothing joined).
   Anchors keep their position (the paper's point: positional information stays).
5. Exactly k: if an anchor frame has fewer free tokens than its DTM share, the shortfall is kept
   from the tokens not yet kept, round-robin over frames in salience order (the first unkept token
   of every frame, then the second, ...; ties: the earlier token). It only happens for large
   budgets (roughly k/n above 0.45 with the defaults), which the paper does not use.

Returns ``(keep, merged, root)``: ``keep`` (n,) bool with exactly k True; ``merged`` (k, d) the new
values of the kept tokens in order (in ``hidden``'s dtype; anchors merged, the rest unchanged);
``root`` (n,) long: a kept token is its own root, a merged token the index of its anchor, and a
token dropped without joining anything (its segment got no anchor, e.g. ``d = 0`` or a tiny k) -1.
With ``k >= n`` nothing changes: ``(all True, None, None)``.

Paper constants (defaults): ``c = 8``, ``tau = 0.9``, ``d = 0.4``, ``p = 4``, ``beta = 0.6``; the
kNN size is not given in the paper text, ``knn = 4`` here. The paper's retention ratio r is ``k/n``.

Simplified, and why:

- the ranking uses ``log(rho) + log(delta)`` (the same order as ``rho * delta``), so that hidden
  states of large norm do not underflow ``rho`` to 0 for every token; distances are divided by
  ``sqrt(d)`` for the same reason (the paper writes plain Euclidean distance);
- density is computed for every frame, not only anchor frames (same result; it keeps the anchor
  frames, which depend on the data, off the host);
- the density of a frame uses all its tokens, the anchors are then picked among those ATS left;
- ``a*`` merges the raw features of the members (no normalisation);
- ``root`` records merges and drops; ``merge_means`` would give plain means, not ``a*``: use
  ``merged``.

Host reads: none when the caller passes ``sizes`` (the tokens per frame, a list of Python ints: the
run lengths of ``frame``, which the caller knows from the layout); otherwise ONE read of ``frame``
to learn them. Segments, anchor frames and every count depending on them stay on the device. Memory:
``F * max(M_t)^2`` distances and an ``n x K_dtm`` similarity matrix. Features in float32 whatever
the input dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .selection import check_video_tokens
from .tokens import rank_in_run, top_k_indices, true_indices, unit_rows

__all__ = ["anchor_means", "density_peak_scores", "fastvid_reduce", "rank_in_run", "FASTVID_DEFAULTS"]

FASTVID_DEFAULTS = dict(c=8, tau=0.9, d=0.4, p=4, beta=0.6, knn=4)


def fastvid_reduce(
    hidden: torch.Tensor,
    frame: torch.Tensor,
    k: int,
    *,
    sizes: Sequence[int] | None = None,
    salience: torch.Tensor | None = None,
    c: int = 8,
    tau: float = 0.9,
    d: float = 0.4,
    p: int = 4,
    beta: float = 0.6,
    knn: int = 4,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """FastVID on one video: ``(keep (n,) bool, merged (k, dim) | None, root (n,) | None)``.

    ``hidden`` (n, dim) floating point; ``frame`` (n,) integer frame index per token; ``k`` a Python
    int >= 0 (exactly k tokens stay; ``k >= n`` keeps all). See the module docstring for the rule,
    the keyword parameters (paper defaults) and the one optional host read (avoided by ``sizes``).
    """
    _check(hidden, frame, k, salience, c, tau, d, p, beta, knn)
    n = hidden.shape[0]
    device = hidden.device
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=device), None, None
    if k == 0:
        return (
            torch.zeros(n, dtype=torch.bool, device=device),
            hidden.new_zeros((0, hidden.shape[1])),
            torch.full((n,), -1, dtype=torch.long, device=device),
        )
    frames = FrameTokens.of(hidden, _frame_sizes(frame, sizes, n))
    seg_of_frame, anchor_frame, anchor_ordinal = _segments(frames.mean, c, tau, p)  # 1. DySeg; (F,) each
    k_dtm = math.floor(d * k + 0.5)  # 2. budgets: density merging, then attention-based selection
    ats_t, dtm_t = _frame_budgets(frames, seg_of_frame, anchor_frame, anchor_ordinal, k - k_dtm, k_dtm)
    shortfall = k_dtm - dtm_t.sum()  # device scalar, usually 0
    if salience is None:  # 3. ATS: pseudo-[CLS] with identity projections
        sal = (frames.scaled * frames.mean[frames.runs]).sum(-1)  # (n,)
    else:
        sal = salience.float()
    ats = rank_in_run(sal, frames.runs) < ats_t[frames.runs]
    score = density_peak_scores(  # 4. DTM anchors: density peaks of the anchor frames not taken by ATS
        frames.x, frames.runs, frames.start, frames.size, frames.position - frames.start[frames.runs], frames.widest, knn
    )
    free = anchor_frame[frames.runs] & ~ats
    anchor = free & (rank_in_run(score, frames.runs, eligible=free) < dtm_t[frames.runs])
    keep = ats | anchor | _top_up(sal, frames, ~(ats | anchor), shortfall)  # 5. exactly k
    root = _join_anchors(frames, keep, anchor, seg_of_frame, k_dtm, shortfall)
    return keep, anchor_means(hidden, root, keep, k, beta), root


class FrameTokens:
    """The video's frames as the steps need them: run ids, sizes, starts, means (float32)."""

    def __init__(self, x, scaled, runs, size, start, mean, widest):
        self.x, self.scaled, self.runs = x, scaled, runs  # (n, d), (n, d), (n,)
        self.size, self.start, self.mean, self.widest = size, start, mean, widest  # (F,), (F,), (F, d), int
        self.position = torch.arange(x.shape[0], device=x.device)  # (n,)

    @classmethod
    def of(cls, hidden: torch.Tensor, sizes: list[int]) -> "FrameTokens":
        device, n = hidden.device, hidden.shape[0]
        size = torch.tensor(sizes, dtype=torch.long, device=device)  # (F,)
        start = size.cumsum(0) - size  # (F,)
        runs = torch.zeros(n, dtype=torch.long, device=device).index_fill_(0, start[1:], 1).cumsum(0)  # (n,)
        x = hidden.float()
        scaled = _globally_scaled(x)  # exact power-of-two multiple of x: means, dot products
        mean = torch.zeros((len(sizes), x.shape[1]), device=device).index_add_(0, runs, scaled)
        return cls(x, scaled, runs, size, start, mean / size.unsqueeze(-1).float(), max(sizes))


def _frame_budgets(frames: FrameTokens, seg_of_frame, anchor_frame, anchor_ordinal, k_ats: int, k_dtm: int):
    """(ats_t, dtm_t), (F,) each: ATS tokens per frame (largest remainder of ``k_ats`` by frame
    size); DTM tokens per anchor frame (``k_dtm`` by segment size, then evenly over the segment's
    anchor frames, capped by what ATS left free)."""
    num_frames, device = frames.size.shape[0], frames.size.device
    seg_tokens = torch.zeros(num_frames, dtype=torch.long, device=device).index_add_(0, seg_of_frame, frames.size)
    seg_anchors = torch.zeros(num_frames, dtype=torch.long, device=device).index_add_(0, seg_of_frame, anchor_frame.long())
    ats_t = _largest_remainder(k_ats, frames.size)
    share = _largest_remainder(k_dtm, seg_tokens)[seg_of_frame]  # per segment slot, read per frame
    per = seg_anchors[seg_of_frame].clamp_min(1)
    dtm_t = torch.where(anchor_frame, share // per + (anchor_ordinal < share % per).long(), 0)
    return ats_t, torch.minimum(dtm_t, frames.size - ats_t)


def _top_up(sal: torch.Tensor, frames: FrameTokens, rest: torch.Tensor, shortfall: torch.Tensor) -> torch.Tensor:
    """(n,) bool: ``shortfall`` of the ``rest`` tokens, round-robin over frames in salience order."""
    n, position = rest.shape[0], frames.position
    order_key = torch.where(rest, rank_in_run(sal, frames.runs, eligible=rest) * n + position, n * n + position)
    topup = torch.zeros(n, dtype=torch.bool, device=rest.device)
    topup[torch.sort(order_key).indices] = position < shortfall
    return topup


def _join_anchors(frames: FrameTokens, keep, anchor, seg_of_frame, k_dtm: int, shortfall) -> torch.Tensor:
    """(n,) root: kept tokens are their own; every other token joins the most similar anchor of its
    segment (ties: the earlier anchor), or -1 when its segment has none."""
    position = frames.position
    root = torch.where(keep, position, torch.full_like(position, -1))
    if not k_dtm:
        return root
    seg_token = seg_of_frame[frames.runs]  # (n,)
    anchors = true_indices(anchor, k_dtm)  # (k_dtm,) padded with 0 past the real anchors
    valid = position[:k_dtm] < (k_dtm - shortfall)
    unit = unit_rows(frames.x)
    sim = unit @ unit[anchors].T  # (n, k_dtm)
    allowed = (seg_token.unsqueeze(1) == seg_token[anchors].unsqueeze(0)) & valid.unsqueeze(0)
    sim = torch.where(allowed, sim, torch.full_like(sim, float("-inf")))
    joins = ~keep & allowed.any(dim=1)
    return torch.where(joins, anchors[torch.argmax(sim, dim=1)], root)


def anchor_means(hidden: torch.Tensor, root: torch.Tensor, keep: torch.Tensor, k: int, beta: float) -> torch.Tensor:
    """(k, dim) new values of the k kept tokens: an anchor that tokens joined (``root`` (n,) points
    at it) becomes ``beta * a + (1 - beta) * mean(joined)`` (paper Eq. 5), every other kept token
    stays as it is; tokens with root -1 are dropped. In float32, returned in ``hidden``'s dtype."""
    x = hidden.float()
    position = torch.arange(x.shape[0], device=x.device)
    joins = (root >= 0) & ~keep
    into = torch.where(joins, root, position)
    sums = torch.zeros_like(x).index_add_(0, into, torch.where(joins.unsqueeze(-1), x, 0.0))
    count = torch.zeros(x.shape[0], device=x.device).index_add_(0, into, joins.float())
    mean = sums / count.clamp_min(1.0).unsqueeze(-1)
    updated = torch.where((count > 0).unsqueeze(-1), beta * x + (1.0 - beta) * mean, x)
    return updated[true_indices(keep, k)].to(hidden.dtype)


def _check(hidden, frame, k, salience, c, tau, d, p, beta, knn) -> None:
    n = check_video_tokens(hidden, frame, k)
    if salience is not None and (
        not isinstance(salience, torch.Tensor)
        or salience.shape != (n,)
        or not salience.is_floating_point()
        or salience.device != hidden.device
    ):
        got = salience
        if isinstance(salience, torch.Tensor):
            got = (tuple(salience.shape), salience.dtype, str(salience.device))
        raise ValueError(f"salience must be None or a floating point tensor ({n},) on {hidden.device}, got {got}")
    for name, value, low in (("c", c, 1), ("p", p, 1), ("knn", knn, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    for name, value in (("d", d), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or math.isnan(tau):
        raise ValueError(f"tau must be a number (a cosine-similarity threshold, usually in [-1, 1]), got {tau!r}")


def _frame_sizes(frame: torch.Tensor, sizes: Sequence[int] | None, n: int) -> list[int]:
    if sizes is None:
        values = frame.cpu().tolist()  # the one host read; then host work
        sizes = []
        for i, v in enumerate(values):
            if i and v == values[i - 1]:
                sizes[-1] += 1
            else:
                sizes.append(1)
        return sizes
    sizes = list(sizes)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes) or sum(sizes) != n:
        raise ValueError(f"sizes must be positive ints (tokens per frame, in order) summing to n={n}, got {sizes!r}")
    return sizes


def _globally_scaled(x: torch.Tensor) -> torch.Tensor:
    """x times the one power of two that brings its largest entry into [0.5, 1) (exact)."""
    _, exponent = torch.frexp(x.abs().amax())
    return torch.ldexp(x, (-exponent).clamp(-126, 126).to(x.dtype))


def _segments(frame_mean: torch.Tensor, c: int, tau: float, p: int):
    """DySeg: (segment of each frame, anchor-frame flag, anchor ordinal within its segment), (F,) each."""
    num_frames = frame_mean.shape[0]
    device = frame_mean.device
    cut = torch.zeros(max(num_frames - 1, 0), dtype=torch.bool, device=device)
    if num_frames > 1:
        unit = unit_rows(frame_mean)
        transition = (unit[:-1] * unit[1:]).sum(-1).clamp(-1.0, 1.0)  # (F-1,)
        cut[top_k_indices(-transition, c - 1)] = True  # S1: the c-1 most dissimilar (ties: earlier)
        cut |= transition < tau  # S2
    seg = torch.zeros(num_frames, dtype=torch.long, device=device)
    seg[1:] = cut.long().cumsum(0)
    index = torch.arange(num_frames, device=device)
    first = torch.zeros(num_frames, dtype=torch.long, device=device)
    first[1:] = torch.where(cut, index[1:], 0)
    within = index - first.cummax(0).values  # frame number inside its segment
    return seg, within % p == 0, within // p


def _largest_remainder(total: int, weight: torch.Tensor) -> torch.Tensor:
    """Hamilton apportionment of ``total`` seats in proportion to the integer ``weight`` (m,):
    floors, then one more seat to the largest remainders (ties: the lower index). Exact integers."""
    whole = weight.sum().clamp_min(1)
    scaled = total * weight
    seats = scaled // whole
    remainder = torch.where(weight > 0, scaled % whole, -1)
    left = total - seats.sum()
    order = torch.sort(remainder, descending=True, stable=True).indices
    extra = torch.zeros_like(seats)
    extra[order] = (torch.arange(weight.numel(), device=weight.device) < left).long()
    return seats + extra


def density_peak_scores(
    x: torch.Tensor,
    runs: torch.Tensor,
    start_t: torch.Tensor,
    size_t: torch.Tensor,
    slot: torch.Tensor,
    widest: int,
    knn: int,
) -> torch.Tensor:
    """(n,) ``log(rho) + log(delta)`` of every token within its frame (DPC-kNN, see module docstring)."""
    num_frames, dim = size_t.numel(), x.shape[1]
    device = x.device
    j = torch.arange(widest, device=device)
    real = j.unsqueeze(0) < size_t.unsqueeze(1)  # (F, W)
    index = torch.where(real, start_t.unsqueeze(1) + j, 0)
    padded = torch.where(real.unsqueeze(-1), x[index], 0.0)  # (F, W, dim)
    dist = torch.cdist(padded, padded, compute_mode="donot_use_mm_for_euclid_dist") / math.sqrt(dim)  # (F, W, W)
    pair = real.unsqueeze(2) & real.unsqueeze(1)
    other = pair & ~torch.eye(widest, dtype=torch.bool, device=device)
    inf = torch.full_like(dist, float("inf"))
    near = min(knn, widest - 1)
    if near > 0:
        nearest = torch.topk(torch.where(other, dist, inf), near, dim=-1, largest=False).values  # (F, W, near)
        counted = torch.isfinite(nearest)
        mean_sq = torch.where(counted, nearest.square(), 0.0).sum(-1) / counted.sum(-1).clamp_min(1)
        log_rho = -mean_sq  # (F, W)
    else:
        log_rho = torch.zeros((num_frames, widest), device=device)
    a = log_rho.unsqueeze(1)  # (F, 1, W): candidate denser token j
    b = log_rho.unsqueeze(2)  # (F, W, 1): token i
    denser = other & ((a > b) | ((a == b) & (j.view(1, 1, -1) < j.view(1, -1, 1))))
    to_denser = torch.where(denser, dist, inf).amin(-1)
    farthest = torch.where(pair, dist, torch.zeros_like(dist)).amax(-1)
    delta = torch.where(denser.any(-1), to_denser, farthest)  # (F, W)
    frame_score = log_rho + torch.log(delta)  # log 0 = -inf: duplicates of a denser token come last
    return frame_score[runs, slot]
