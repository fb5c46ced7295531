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
    "rank_in_run",
    "top_k_indices",
    "true_indices",
    "unit_rows",
]

NORM_FLOOR = 1e-30


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
    nor tiny values overflow or underflow. No value is read back to the host.
    """
    x = power_of_two_scaled(hidden.float())
    inv_norm = x.norm(dim=-1).clamp_min(NORM_FLOOR).reciprocal()  # zero rows: dot 0, similarity 0
    has_prev = prev >= 0
    p = prev.clamp_min(0)  # (n,) rows without a predecessor read row 0 and are masked below
    sim = ((x * x[p]).sum(-1) * inv_norm * inv_norm[p]).clamp(-1.0, 1.0)
    return torch.where(has_prev, sim, torch.full_like(sim, float("-inf")))


def power_of_two_scaled(x: torch.Tensor) -> torch.Tensor:
    """(n, d) rows scaled by the power of two that brings their largest entry into [0.5, 1).

    Multiplying by a power of two is exact, so the cosine of two rows is unchanged bit for bit
    wherever float32 squares neither overflow nor underflow, and elsewhere it becomes computable.
    Done on every row (no data-dependent branch, so nothing waits for the device).
    """
    _, exponent = torch.frexp(x.abs().amax(dim=-1, keepdim=True))  # (n, 1); 0 for zero rows
    return torch.ldexp(x, (-exponent).clamp(-126, 126).to(x.dtype))


def true_indices(mask: torch.Tensor, count: int) -> torch.Tensor:
    """(count,) indices of the True entries of the 1-D bool ``mask``, ascending.

    ``count`` (the number of True entries, known to the caller) fixes the output size, so unlike
    ``mask.nonzero()`` nothing is read back from the device. Entries past ``count`` are ignored.
    """
    n = mask.numel()
    rank = mask.long().cumsum(0) - 1  # (n,) rank of each True entry among the True ones
    slot = torch.where(mask & (rank < count), rank, count)  # everything else lands in a spare slot
    out = torch.zeros(count + 1, dtype=torch.long, device=mask.device)
    out.scatter_(0, slot, torch.arange(n, device=mask.device))
    return out[:count]


def merge_roots(merge: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """Group root of every token: a merged token joins the group of its predecessor.

    ``merge[i]`` says token i merges into ``prev[i]`` (which must be >= 0 then, and precede i).
    A run of merged tokens across several frames therefore chains back to the first unmerged
    token of the run, its root. Pointer jumping: each step doubles the links followed, so
    ``ceil(log2(n))`` steps reach the root of any chain (at most n - 1 links). The step count
    depends on n alone, so nothing is read back from the device.
    """
    n = merge.numel()
    root = torch.where(merge, prev, torch.arange(n, device=merge.device))
    for _ in range(max(0, n - 1).bit_length()):
        root = root[root]
    return root


def merge_means(
    hidden: torch.Tensor, root: torch.Tensor, count: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace every group by the element-wise mean of its members.

    Returns ``(keep, merged)``: ``keep`` marks the roots (the tokens that stay, in order) and
    ``merged`` holds their new hidden states, shape ``(keep.sum(), d)``, in ``hidden``'s dtype.
    Sums are accumulated in float32. ``count`` is the number of groups when the caller knows it;
    without it, it is read back from the device (one host synchronisation). A token whose root is
    -1 is dropped: it joins no group (HoliTom's input stage prunes some tokens and merges others).
    """
    n = hidden.shape[0]
    keep = root == torch.arange(n, device=root.device)
    if count is None:
        count = int(keep.sum())
    into = torch.where(root >= 0, root, n)  # dropped tokens land in a spare row
    sums = torch.zeros((n + 1, hidden.shape[1]), dtype=torch.float32, device=hidden.device)
    sums.index_add_(0, into, hidden.float())
    sizes = torch.zeros(n + 1, dtype=torch.float32, device=hidden.device)
    sizes.index_add_(0, into, torch.ones(n, dtype=torch.float32, device=hidden.device))
    roots = true_indices(keep, count)
    merged = (sums[roots] / sizes[roots].unsqueeze(-1)).to(hidden.dtype)
    return keep, merged


def top_k_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, returned in ascending index order.

    Ties are broken towards the earlier index (a stable descending sort), so results are
    deterministic and reproducible by a plain reference.
    """
    k = max(0, min(int(k), scores.numel()))
    order = torch.sort(scores, descending=True, stable=True).indices
    return torch.sort(order[:k]).values


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """(m, d) float32 rows scaled to unit length (zero rows stay zero), overflow-free."""
    x = power_of_two_scaled(x)
    return x * x.norm(dim=-1, keepdim=True).clamp_min(NORM_FLOOR).reciprocal()


def rank_in_run(score: torch.Tensor, runs: torch.Tensor, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """(n,) 0-based rank within its run, by (eligible first, score descending, earlier token)."""
    n = score.numel()
    device = score.device
    order = torch.sort(score, descending=True, stable=True).indices
    if eligible is not None:
        order = order[torch.sort((~eligible[order]).to(torch.int8), stable=True).indices]
    order = order[torch.sort(runs[order], stable=True).indices]
    position = torch.arange(n, device=device)
    sorted_runs = runs[order]
    start = torch.zeros(n, dtype=torch.long, device=device)
    if n > 1:
        start[1:] = torch.where(sorted_runs[1:] != sorted_runs[:-1], position[1:], 0)
    rank = torch.empty(n, dtype=torch.long, device=device)
    rank[order] = position - start.cummax(0).values
    return rank
