"""Pure tensor building blocks of FrameFusion (no transformers import).

All functions work on ONE sample: the vision tokens currently present in the sequence, in sequence
order (which is frame-major for every supported layout), described by

- ``patch``: a group key per token; tokens with the same key sit at the same patch position of the
  same video (different videos never share a key), so only they are compared;
- ``hidden``: their hidden states, shape ``(n, d)``.
"""

from __future__ import annotations

import torch

__all__ = [
    "previous_same_patch",
    "adjacent_similarity",
    "merge_roots",
    "merge_means",
    "top_k_indices",
]

_NORM_FLOOR = 1e-30


def previous_same_patch(patch: torch.Tensor) -> torch.Tensor:
    """Index of the closest earlier token with the same patch key, or -1 where there is none.

    ``patch`` is a 1-D integer tensor in sequence order. O(n log n), no n x n matrix.
    """
    n = patch.numel()
    order = torch.sort(patch, stable=True).indices  # groups by key, sequence order inside a group
    sorted_keys = patch[order]
    prev_sorted = torch.full((n,), -1, dtype=torch.long, device=patch.device)
    if n > 1:
        same = sorted_keys[1:] == sorted_keys[:-1]
        prev_sorted[1:] = torch.where(same, order[:-1], prev_sorted[1:])
    prev = torch.empty_like(prev_sorted)
    prev[order] = prev_sorted
    return prev


def adjacent_similarity(hidden: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each token with its predecessor ``prev`` (float32, -inf where prev == -1).

    Computed in float32, scale-free: zero vectors give 0 (not NaN), and neither huge (bf16, fp16)
    nor tiny values overflow or underflow.
    """
    x = hidden.float()
    norm = x.norm(dim=-1)
    bad = ~torch.isfinite(norm) | (norm < 1e-18)
    if bool(bad.any()):
        # squares overflow or underflow in float32 (e.g. huge bf16 values): cosine is scale-free,
        # so those rows are scaled by their largest entry first
        x = x.clone()
        rows = x[bad]
        x[bad] = rows / rows.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        norm = x.norm(dim=-1)
    inv_norm = norm.clamp_min(_NORM_FLOOR).reciprocal()  # zero rows: dot 0, similarity 0
    has_prev = prev >= 0
    sim = torch.full((hidden.shape[0],), float("-inf"), dtype=torch.float32, device=hidden.device)
    idx = has_prev.nonzero(as_tuple=True)[0]
    if idx.numel():
        p = prev[idx]
        dots = (x[idx] * x[p]).sum(-1)
        sim[idx] = (dots * inv_norm[idx] * inv_norm[p]).clamp(-1.0, 1.0)
    return sim


def merge_roots(merge: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """Group root of every token: a merged token joins the group of its predecessor.

    ``merge[i]`` says token i merges into ``prev[i]`` (which must be >= 0 then, and precede i).
    A run of merged tokens across several frames therefore chains back to the first unmerged
    token of the run, its root. Pointer jumping: O(n log run) work, no Python loop over tokens.
    """
    n = merge.numel()
    arange = torch.arange(n, device=merge.device)
    root = torch.where(merge, prev, arange)
    while True:
        nxt = root[root]
        if torch.equal(nxt, root):
            return root
        root = nxt


def merge_means(hidden: torch.Tensor, root: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace every group by the element-wise mean of its members.

    Returns ``(keep, merged)``: ``keep`` marks the roots (the tokens that stay, in order) and
    ``merged`` holds their new hidden states, shape ``(keep.sum(), d)``, in ``hidden``'s dtype.
    Sums are accumulated in float32.
    """
    n = hidden.shape[0]
    keep = root == torch.arange(n, device=root.device)
    sums = torch.zeros((n, hidden.shape[1]), dtype=torch.float32, device=hidden.device)
    sums.index_add_(0, root, hidden.float())
    counts = torch.bincount(root, minlength=n).clamp_min(1)
    merged = (sums[keep] / counts[keep].unsqueeze(-1).float()).to(hidden.dtype)
    return keep, merged


def top_k_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, returned in ascending index order.

    Ties are broken towards the earlier index (a stable descending sort), so results are
    deterministic and reproducible by a plain reference.
    """
    k = max(0, min(int(k), scores.numel()))
    order = torch.sort(scores, descending=True, stable=True).indices
    return torch.sort(order[:k]).values
