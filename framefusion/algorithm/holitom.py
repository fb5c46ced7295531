"""HoliTom's two reduction rules as pure tensor functions on ONE sample (no transformers import).

Paper: Kele Shao, Keda Tao, Can Qin, Haoxuan You, Yang Sui, Huan Wang, "HoliTom: Holistic Token
Merging for Fast Video Large Language Models", NeurIPS 2025, arXiv 2505.21334. Two places:
outer-LLM (temporal, then spatial merging of the vision features at the LLM input) and inner-LLM
(one merge at layer K). This module writes the rules from the paper's description; where the paper
leaves a detail open, or this library lacks the input the paper uses, the choice is stated.

Input: the vision tokens of one sample in sequence order, ``hidden`` (n, d), ``frame`` (n,) (a frame
is a run of consecutive tokens with the same index: ``frame_runs``) and ``patch`` (n,) (tokens with the
same key sit at the same patch position of the same video: ``previous_same_patch``). F frames.

``holitom_input_reduce`` (outer-LLM, to exactly ``min(k, m)`` tokens, m the count after step 2):

1. Temporal links. Token i is *linked* to its predecessor p = the closest earlier token with its
   patch key when p lies in the frame just before i's and ``cos(x_i, x_p) > tau`` (float32). Linked
   tokens form chains, one token per frame; ``start(i)`` is the frame where i's chain begins.
2. Global redundancy-aware segmentation (dynamic programming). The frames are cut into segments
   [s, e] (consecutive frames). In a segment the *static* positions are the chains that run through
   every frame s..e (the token of frame e has ``start <= s``); there are ``S(s, e)`` of them
   (0 for a one-frame segment), and merging them saves ``S(s, e) * (e - s)`` tokens. The
   segmentation maximises the total saving over all partitions (exact DP over the F frames; ties:
   the shorter last segment). Every static chain of a segment merges into its first token (the
   token of frame s): temporal merging, "into the first occurrence".
3. Spatial reduction to k. After step 2 there are m tokens: per segment g its S_g static tokens
   (each the mean of its chain) and per frame t its D_t = M_t - S_g dynamic (non-static) tokens.
   ``k`` is apportioned over these groups in proportion to their sizes (largest remainder, exact
   integers; ties: the lower group, static groups by segment first, then dynamic groups by frame).
   - Dynamic tokens of frame t: the ``b_t`` of highest salience stay, the rest are dropped. The
     paper ranks them by the vision encoder's attention, which the LLM does not see; here the
     salience is ``salience`` when given (e.g. the last query's attention at the first LLM layer),
     else the pseudo-[CLS] score of FastVID's fallback, ``x_i . f_t`` with f_t the mean of frame t
     (``algorithm.fastvid``; a feature-only substitute).
   - Static tokens of segment g: DPC-kNN clustering (as in FastVID: ``rho_i = exp(-mean of the
     squared distances to the knn nearest other tokens)``, ``delta_i`` the distance to the nearest
     denser one, score ``rho * delta``, distances ``||x_i - x_j|| / sqrt(d)``, computed on the chain
     means) picks the ``a_g`` highest-scoring tokens as centres; every other static token of the
     segment joins the nearest centre (Euclidean; ties: the earlier centre). If ``a_g = 0`` the
     segment's static tokens are dropped.
   Each group becomes the plain mean of all the original tokens in it. (Within a segment every
   chain has e - s + 1 tokens, so this equals the mean of the chain means that the paper clusters.)
   If ``k >= m`` step 3 is skipped (m tokens stay); if ``k >= n`` nothing changes.

Returns ``(keep, merged, root, count)``: ``keep`` (n,) bool; ``merged`` (count, d) the kept tokens'
new values (``merge_means``, in ``hidden``'s dtype); ``root`` (n,) long, a kept token its own root,
a merged one the index of the token it joined, a dropped one -1; ``count`` the kept count, a Python
int. ``k >= n``: ``(all True, None, None, n)``.

Host reads: ONE (the frame of each token and the first frame of its chain, copied together): the
segmentation, hence the count after temporal merging, depends on the data. None when ``k >= n``.

``holitom_inner_merge`` (inner-LLM, at layer K): the ``keep_count`` tokens the last query token
attends to most stay (``scores``; ties: the earlier token); every other token joins the kept token
most similar to it (cosine of the hidden states, float32; ties: the earlier kept token) and each
group becomes its plain mean. No host read.

Constants (defaults, from the authors' published settings for LLaVA-OneVision-7B, which the paper
text does not list): ``tau = 0.8`` (``HOLITOM_TAU``); ``knn = 7`` (``HOLITOM_KNN``).

Simplified or chosen here, and why:

- the authors' scripts can weight the centre (an anchor weight) and average pairwise; here every merge is a
  plain mean, so a replay of the recorded groups reproduces the values exactly;
- dominant/contextual split of the dynamic tokens: the paper's default keeps dynamic tokens by
  attention alone, which is what this does (no second DPC-kNN over the dynamic tokens);
- the segmentation has no window limit (the authors' default limit is larger than any video here);
- similarity strictly above ``tau`` links two tokens;
- the density of a static token uses its segment's static tokens only.
"""

from __future__ import annotations

import math

import torch

from .fastvid import FrameTokens, density_peak_scores
from .selection import check_video_tokens, frame_runs
from .tokens import adjacent_similarity, merge_means, merge_roots, previous_same_patch, rank_in_run, top_k_indices, true_indices, unit_rows

__all__ = ["HOLITOM_KNN", "HOLITOM_TAU", "holitom_inner_merge", "holitom_input_reduce", "holitom_segments"]

HOLITOM_TAU = 0.8
HOLITOM_KNN = 7


def holitom_segments(chain_start: list[list[int]], num_frames: int) -> list[tuple[int, int, int]]:
    """The optimal segmentation on the host: ``[(s, e, S)]`` in frame order, S the static chains.

    ``chain_start[e]`` lists, for every token of frame e, the frame where its chain starts. The
    saving of a segment [s, e] is ``S(s, e) * (e - s)`` with ``S(s, e)`` the tokens of frame e whose
    chain starts at or before s (0 when s == e); the segmentation maximises the total saving
    (ties: the shorter last segment, i.e. the later cut).
    """
    # count[e][s] = tokens of frame e whose chain starts at or before s
    count = []
    for e in range(num_frames):
        hist = [0] * (e + 1)
        for a in chain_start[e]:
            hist[a] += 1
        running, row = 0, []
        for s in range(e + 1):
            running += hist[s]
            row.append(running)
        count.append(row)
    best = [0] * (num_frames + 1)  # best[i]: frames 0..i-1
    cut = [0] * (num_frames + 1)
    for e in range(num_frames):
        best[e + 1], cut[e + 1] = best[e], e  # a one-frame last segment saves nothing
        for s in range(e - 1, -1, -1):
            value = best[s] + count[e][s] * (e - s)
            if value > best[e + 1]:
                best[e + 1], cut[e + 1] = value, s
    segments, e = [], num_frames - 1
    while e >= 0:
        s = cut[e + 1]
        segments.append((s, e, count[e][s] if s < e else 0))
        e = s - 1
    return segments[::-1]


def holitom_input_reduce(
    hidden: torch.Tensor,
    frame: torch.Tensor,
    patch: torch.Tensor,
    k: int,
    *,
    salience: torch.Tensor | None = None,
    tau: float = HOLITOM_TAU,
    knn: int = HOLITOM_KNN,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, int]:
    """HoliTom's outer-LLM reduction of one sample's vision tokens to ``min(k, m)`` (module docstring)."""
    n = _check(hidden, frame, patch, k, salience, tau, knn)
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=hidden.device), None, None, n
    runs = frame_runs(frame)  # (n,)
    prev = previous_same_patch(patch)  # (n,)
    chain_root, start, per_frame = _temporal_chains(hidden, runs, prev, tau)
    segments = holitom_segments(per_frame, len(per_frame))
    static, troot = _static_tokens(runs, prev, chain_root, start, segments)
    m = n - sum(S * (e - s) for s, e, S in segments)  # tokens left after temporal merging
    if k >= m:
        keep, merged = merge_means(hidden, troot, m)
        return keep, merged, troot, m
    root = _spatial_roots(hidden, runs, static, troot, segments, [len(f) for f in per_frame], k, salience, knn)
    keep, merged = merge_means(hidden, root, k)
    return keep, merged, root, k


def _temporal_chains(hidden: torch.Tensor, runs: torch.Tensor, prev: torch.Tensor, tau: float):
    """Chains of tokens linked to the same patch of the frame just before (cosine > tau):
    ``(chain_root (n,), start (n,): the chain's first frame, per_frame)``, ``per_frame`` the host
    lists of chain starts per frame (the one host read: the segmentation decides the count)."""
    sim = adjacent_similarity(hidden, prev)
    p = prev.clamp_min(0)
    linked = (prev >= 0) & (runs[p] == runs - 1) & (sim > tau)
    chain_root = merge_roots(linked, prev)  # first token of each chain
    start = runs[chain_root]
    host = torch.stack([runs, start]).cpu().tolist()  # the one host read
    per_frame: list[list[int]] = [[] for _ in range(host[0][-1] + 1)]
    for r, a in zip(*host):
        per_frame[r].append(a)
    return chain_root, start, per_frame


def _static_tokens(runs, prev, chain_root, start, segments) -> tuple[torch.Tensor, torch.Tensor]:
    """``(static (n,) bool, troot (n,))``: the tokens whose chain runs through their whole segment,
    and the roots of temporal merging (each static chain into its token in the segment's first frame)."""
    num_frames, device = len(segments) and segments[-1][1] + 1, runs.device
    seg_start = torch.zeros(num_frames, dtype=torch.long)
    seg_end = torch.zeros(num_frames, dtype=torch.long)
    for s, e, _ in segments:
        seg_start[s : e + 1], seg_end[s : e + 1] = s, e
    tok_start, tok_end = seg_start.to(device)[runs], seg_end.to(device)[runs]
    chain_end = torch.zeros(runs.shape[0], dtype=torch.long, device=device).scatter_reduce_(
        0, chain_root, runs, reduce="amax", include_self=False
    )[chain_root]  # last frame of each token's chain
    static = (tok_start < tok_end) & (start <= tok_start) & (chain_end >= tok_end)
    return static, merge_roots(static & (runs > tok_start), prev)


def _spatial_roots(hidden, runs, static, troot, segments, sizes: list[int], k: int, salience, knn: int) -> torch.Tensor:
    """(n,) roots after spatial reduction to ``k``: seats apportioned over the static groups (per
    segment) and the dynamic tokens (per frame); a frame keeps its most salient dynamic tokens, a
    segment's static chains cluster around DPC-kNN centres; -1: dropped."""
    device, n = hidden.device, hidden.shape[0]
    position = torch.arange(n, device=device)
    static_groups = [S for _, _, S in segments if S > 0]
    dynamic = [sizes[t] - S for s, e, S in segments for t in range(s, e + 1)]
    seats = _largest_remainder(static_groups + dynamic, k)
    a_g, b_t = seats[: len(static_groups)], seats[len(static_groups) :]
    frames = FrameTokens.of(hidden, sizes)
    if salience is None:  # pseudo-[CLS] of the frame (FastVID's feature-only fallback)
        sal = (frames.scaled * frames.mean[frames.runs]).sum(-1)
    else:
        sal = salience.float()
    is_dynamic = ~static
    kept_dynamic = is_dynamic & (rank_in_run(sal, runs, eligible=is_dynamic) < torch.tensor(b_t, device=device)[runs])
    root = torch.where(kept_dynamic, position, torch.full_like(position, -1))
    if not static_groups:
        return root
    into = _cluster_static_chains(frames, static, troot, static_groups, a_g, knn)
    return torch.where(static, into[troot], root)


def _cluster_static_chains(frames: FrameTokens, static, troot, group_sizes: list[int], a_g: list[int], knn: int) -> torch.Tensor:
    """(n,) for each static chain's head, the head of the centre its chain joins (-1: none); the
    chains of a segment are clustered by DPC-kNN on their means, ``a_g`` centres per segment."""
    device, n = frames.x.device, frames.x.shape[0]
    position = frames.position
    num_static = sum(group_sizes)
    heads = true_indices(static & (troot == position), num_static)  # (S,) chain heads, by segment
    group = torch.tensor([g for g, S in enumerate(group_sizes) for _ in range(S)], device=device)
    size_t = torch.tensor(group_sizes, dtype=torch.long, device=device)
    start_t = size_t.cumsum(0) - size_t
    chain_sum = torch.zeros_like(frames.x).index_add_(0, troot, frames.x)
    chain_len = torch.zeros(n, device=device).index_add_(0, troot, torch.ones(n, device=device))
    means = chain_sum[heads] / chain_len[heads].unsqueeze(-1)  # (S, d) float32
    slot = torch.arange(num_static, device=device) - start_t[group]
    score = density_peak_scores(means, group, start_t, size_t, slot, max(group_sizes), knn)
    centre = rank_in_run(score, group) < torch.tensor(a_g, device=device)[group]
    num_centres = sum(a_g)
    head_root = torch.full((num_static,), -1, dtype=torch.long, device=device)
    if num_centres:
        centres = true_indices(centre, num_centres)  # (A,) positions among the heads
        dist = torch.cdist(means, means[centres], compute_mode="donot_use_mm_for_euclid_dist")
        same = group.unsqueeze(1) == group[centres].unsqueeze(0)
        dist = torch.where(same, dist, torch.full_like(dist, float("inf")))
        nearest = heads[centres][torch.argmin(dist, dim=1)]  # first minimum: the earlier centre
        head_root = torch.where(same.any(dim=1), nearest, head_root)
    into = torch.full((n,), -1, dtype=torch.long, device=device)
    into[heads] = head_root
    return into


def holitom_inner_merge(
    hidden: torch.Tensor, scores: torch.Tensor, keep_count: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HoliTom's inner-LLM merge: ``(keep, merged (keep_count, d), root)`` (module docstring).

    ``hidden`` (n, d) the vision tokens at layer K; ``scores`` (n,) the attention the last query
    token pays each of them; ``keep_count`` a Python int, ``1 <= keep_count`` (``>= n`` keeps all).
    """
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 2 or not hidden.is_floating_point():
        raise ValueError(f"hidden must be a 2-D floating point tensor (n, d), got {getattr(hidden, 'shape', hidden)!r}")
    n = hidden.shape[0]
    if not isinstance(scores, torch.Tensor) or scores.shape != (n,) or not scores.is_floating_point():
        raise ValueError(f"scores must be a floating point tensor ({n},), got {getattr(scores, 'shape', scores)!r}")
    if isinstance(keep_count, bool) or not isinstance(keep_count, int) or keep_count < 1:
        raise ValueError(f"keep_count must be a Python int >= 1 (merging keeps at least one token), got {keep_count!r}")
    device = hidden.device
    position = torch.arange(n, device=device)
    if keep_count >= n:
        return torch.ones(n, dtype=torch.bool, device=device), hidden, position
    kept = top_k_indices(scores.to(device).float(), keep_count)  # ascending
    keep = torch.zeros(n, dtype=torch.bool, device=device)
    keep[kept] = True
    unit = unit_rows(hidden.float())
    sim = unit @ unit[kept].T  # (n, keep_count)
    best = kept[torch.argmax(sim, dim=1)]  # first maximum: the earlier kept token
    root = torch.where(keep, position, best)
    _, merged = merge_means(hidden, root, keep_count)
    return keep, merged, root


def _largest_remainder(weights: list[int], total: int) -> list[int]:
    """Hamilton apportionment of ``total`` seats by the integer ``weights`` on the host (exact
    integers: floors, then one more to the largest remainders; ties: the lower index)."""
    whole = max(1, sum(weights))
    seats = [total * w // whole for w in weights]
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in order[: total - sum(seats)]:
        seats[i] += 1
    return seats


def _check(hidden, frame, patch, k, salience, tau, knn) -> int:
    n = check_video_tokens(hidden, frame, k)
    if not isinstance(patch, torch.Tensor) or patch.shape != (n,) or patch.is_floating_point() or patch.dtype == torch.bool:
        got = (tuple(patch.shape), patch.dtype) if isinstance(patch, torch.Tensor) else type(patch).__name__
        raise ValueError(f"patch must be an integer tensor ({n},) of patch keys, got {got}")
    if patch.device != hidden.device:
        raise ValueError(f"patch is on {patch.device} but hidden is on {hidden.device}; both must be on one device")
    if salience is not None and (
        not isinstance(salience, torch.Tensor) or salience.shape != (n,) or not salience.is_floating_point()
    ):
        raise ValueError(f"salience must be None or a floating point tensor ({n},), got {getattr(salience, 'shape', salience)!r}")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or math.isnan(tau):
        raise ValueError(f"tau must be a number (a cosine-similarity threshold), got {tau!r}")
    if isinstance(knn, bool) or not isinstance(knn, int) or knn < 1:
        raise ValueError(f"knn must be an int >= 1, got {knn!r}")
    return n
