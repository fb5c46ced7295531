"""Pure tensor selection rules of the baselines and ablations (no transformers import).

Like ``tokens``, every function works on ONE sample: its vision tokens in sequence order.
"""

from __future__ import annotations

import torch

from .tokens import adjacent_similarity, merge_means, merge_roots, previous_same_patch, top_k_indices

__all__ = [
    "changed_token_keep",
    "check_video_tokens",
    "frame_runs",
    "merge_to_count",
    "random_keep",
    "uniform_frame_keep",
    "uniform_token_keep",
]

# Fallback merges (see ``merge_to_count``) rank below every same-patch merge: cosine is in [-1, 1].
_FALLBACK_OFFSET = 3.0


def merge_to_count(
    hidden: torch.Tensor, patch: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Merge by similarity alone until exactly ``k`` tokens are left (0 < k < n); None if k >= n.

    Candidates, most similar first (cosine of a token with its predecessor):

    1. a token with its closest earlier token at the same patch position (the previous frame);
    2. only where tier 1 cannot reach ``k`` (``k`` below the number of patch positions), a token
       that has no same-patch predecessor with the token just before it in sequence order (its
       spatial neighbour in raster order).

    The ``n - k`` best candidates merge into their predecessors (chains join one group) and each
    group becomes the mean of its members. Returns ``(keep, merged, root)`` as ``merge_means`` and
    ``merge_roots`` do. ``k`` must be at least 1: merging cannot remove the first token.
    """
    n = hidden.shape[0]
    k = int(k)
    if k >= n:
        return None
    if k < 1:
        raise ValueError(f"merging keeps at least one token, got k={k}")
    device = hidden.device
    same = previous_same_patch(patch)
    sequence = torch.arange(n, device=device) - 1
    has_same = same >= 0
    prev = torch.where(has_same, same, sequence)
    sim = adjacent_similarity(hidden, prev)  # -inf only for token 0, which has no predecessor
    score = torch.where(has_same, sim, sim - _FALLBACK_OFFSET)
    chosen = top_k_indices(score, n - k)
    selected = torch.zeros(n, dtype=torch.bool, device=device)
    selected[chosen] = True
    root = merge_roots(selected, prev)
    keep, merged = merge_means(hidden, root, count=k)
    return keep, merged, root


def changed_token_keep(hidden: torch.Tensor, patch: torch.Tensor, k: int) -> torch.Tensor:
    """(n,) bool: the ``k`` tokens that changed most since the same patch position of the previous
    frame (EVS's rule: dissimilarity ``1 - cosine``); a token with no earlier same-patch token (the
    first frame of its video) has changed infinitely and goes first. Ties go to the earlier token."""
    n = hidden.shape[0]
    prev = previous_same_patch(patch)
    sim = adjacent_similarity(hidden, prev)  # -inf where there is no previous frame
    change = torch.where(prev >= 0, 1.0 - sim, torch.full_like(sim, float("inf")))
    keep = torch.zeros(n, dtype=torch.bool, device=hidden.device)
    keep[top_k_indices(change, k)] = True
    return keep


def uniform_token_keep(n: int, k: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n,) bool: ``k`` tokens evenly spread in sequence order, the i-th being ``floor((2i+1) n / 2k)``
    (the centre of the i-th of k equal stretches)."""
    keep = torch.zeros(n, dtype=torch.bool, device=device)
    k = max(0, min(int(k), n))
    if k:
        i = torch.arange(k, device=device)
        keep[((2 * i + 1) * n) // (2 * k)] = True
    return keep


def check_video_tokens(hidden: torch.Tensor, frame: torch.Tensor, k) -> int:
    """n, after checking that ``hidden`` (n, d) floating point, ``frame`` (n,) integer on the same
    device and ``k`` (a Python int >= 0) describe one video's tokens; else a ValueError naming them."""
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 2 or not hidden.is_floating_point():
        shape = tuple(hidden.shape) if isinstance(hidden, torch.Tensor) else type(hidden).__name__
        raise ValueError(f"hidden must be a 2-D floating point tensor (n, d), got {shape}")
    n = hidden.shape[0]
    if not isinstance(frame, torch.Tensor) or frame.dim() != 1 or frame.numel() != n:
        shape = tuple(frame.shape) if isinstance(frame, torch.Tensor) else type(frame).__name__
        raise ValueError(f"frame must be a 1-D tensor with one entry per token ({n}), got {shape}")
    if frame.is_floating_point() or frame.is_complex() or frame.dtype == torch.bool:
        raise ValueError(f"frame must hold integer frame indices, got dtype {frame.dtype}")
    if frame.device != hidden.device:
        raise ValueError(f"frame is on {frame.device} but hidden is on {hidden.device}; both must be on one device")
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a Python int >= 0 (tokens to keep; k >= n keeps all), got {k!r}")
    return n


def frame_runs(frame: torch.Tensor) -> torch.Tensor:
    """(n,) run id: consecutive tokens with the same frame index form one frame (0, 1, 2, ...)."""
    n = frame.numel()
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=frame.device)
    starts = torch.ones(n, dtype=torch.long, device=frame.device)
    starts[1:] = (frame[1:] != frame[:-1]).long()
    return starts.cumsum(0) - 1


def uniform_frame_keep(frame: torch.Tensor, k: int) -> torch.Tensor:
    """(n,) bool: whole frames, evenly spread, with at most ``k`` tokens in all.

    Frames are runs of equal frame index (``frame_runs``). With F frames, picking f of them takes
    frames ``floor((2j+1) F / 2f)``, j < f; f is the largest count whose pick has at most k tokens.
    """
    n = frame.numel()
    keep = torch.zeros(n, dtype=torch.bool, device=frame.device)
    if n == 0 or k <= 0:
        return keep
    if k >= n:
        return ~keep
    runs = frame_runs(frame)
    sizes = torch.bincount(runs.cpu()).tolist()  # frame sizes on the host: one read, then a host loop
    num_frames = len(sizes)
    for f in range(num_frames, 0, -1):
        picked = [((2 * j + 1) * num_frames) // (2 * f) for j in range(f)]
        if sum(sizes[i] for i in picked) <= k:
            chosen = torch.zeros(num_frames, dtype=torch.bool)
            chosen[picked] = True
            return chosen.to(frame.device)[runs]
    return keep


def random_keep(n: int, k: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n,) bool: ``k`` tokens drawn uniformly without replacement, from a CPU generator seeded by
    ``(seed, n)`` only, so a sample gets the same draw alone or at any position of a batch."""
    keep = torch.zeros(n, dtype=torch.bool)
    k = max(0, min(int(k), n))
    if k:
        g = torch.Generator().manual_seed((int(seed) * 1_000_003 + n) % (2**63))
        keep[torch.randperm(n, generator=g)[:k]] = True
    return keep.to(device)
