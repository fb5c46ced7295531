"""VidCom2's selection rule as a pure tensor function on ONE video (no transformers import).

Paper: Xuyang Liu, Yiyu Wang, Junpeng Ma, Linfeng Zhang, "Video Compression Commander:
Plug-and-Play Inference Acceleration for Video Large Language Models", EMNLP 2025 main,
arXiv 2505.14454 (Sections 3.3-3.4, Algorithm 1 in Appendix E, Table 8 in Appendix D).

Input: the video tokens of one video in sequence order, ``hidden`` (n, d), and ``frame`` (n,): a
frame index per token. A frame is a run of consecutive tokens with the same frame index (as
``selection.frame_runs``); T is the number of frames, M_t the tokens of frame t, N = sum M_t = n.

Stage 1, frame compression adjustment (paper Eq. 3-6):

- video summary ``g_v = mean of all n tokens``;
- video-level token uniqueness ``u_video[i] = -cos(x_i, g_v)``;
- frame uniqueness ``u_t = mean of u_video over the tokens of frame t``;
- ``sigma_t = exp((u_t - max_l u_l) / tau) / (sum_l exp((u_l - max_l u_l) / tau) + eps)``;
- the paper's per-frame retention ratio ``r_t = R (1 + sigma_t - 1/T)``.

Stage 2, adaptive token compression (paper Eq. 7-10):

- frame summary ``g_t = mean of the tokens of frame t``;
- token score ``u[i] = -cos(x_i, g_t(i)) - cos(x_i, g_v)`` (within-frame plus video-level
  uniqueness, equal weights: the paper's default, its Table 8);
- in every frame, the ``c_t`` tokens with the largest ``u`` stay (ties: the earlier token).

Per-frame counts ``c_t`` (where this module chooses; the paper keeps ``ceil(r_t M_t)`` tokens per
frame, whose sum is generally not the budget and can exceed a frame's size):

1. weights ``w_t = M_t (1 + sigma_t - 1/T)``, so that with equal frames and ``k = R N`` the quota
   below is the paper's ``r_t M_t`` exactly;
2. capped proportional quotas (water filling): ``q_t = min(M_t, lam * w_t)`` with the one ``lam``
   for which ``sum_t q_t = k``; a frame never gets more tokens than it has, and what a full frame
   cannot take goes to the others in proportion to their weights;
3. largest remainder (Hamilton): every frame gets ``floor(q_t)``, and the ``k - sum floor(q_t)``
   seats left go to the frames with the largest fractional parts (ties: the earlier frame).

Steps 3 and the per-frame top-k are done at once, exactly as stated: the token of rank ``j``
(0-based, by ``u``) in frame t has priority ``q_t - j``, and the k tokens of largest priority stay
(ties: the earlier token, hence the earlier frame). Priorities ``>= 1`` are the floors, those in
``(0, 1)`` the remainders; the count is exactly k whatever rounding does to the quotas.

Constants: ``tau = 0.01`` and ``eps = 1e-8`` (paper, Sec. 3.3). The paper's retention ratio R is
``k / n`` here: the caller converts its budget to a token count (``cost`` of an input-level method
is k/n). Simplifications: one call handles one video (tokens of several videos passed together are
treated as one video, with one ``g_v``); the scores use whatever features the caller passes (the
paper scores the projected, pooled vision tokens at the LLM input).

Maths in float32 for the features and float64 for the per-frame allocation (a few numbers per
frame), whatever the input dtype. Nothing is read back to the host: the frame count is not needed
on the host (per-frame quantities live in size-n buffers, the unused slots empty), and k is the
caller's.
"""

from __future__ import annotations

import torch

from .selection import check_video_tokens, frame_runs
from .tokens import rank_in_run, top_k_indices, unit_rows

__all__ = ["vidcom2_keep", "VIDCOM2_TAU", "VIDCOM2_EPS"]

VIDCOM2_TAU = 0.01  # softmax temperature over frame uniqueness (paper, Sec. 3.3)
VIDCOM2_EPS = 1e-8  # added to the softmax denominator (paper, Eq. 5)


def vidcom2_keep(
    hidden: torch.Tensor, frame: torch.Tensor, k: int, *, tau: float = VIDCOM2_TAU, eps: float = VIDCOM2_EPS
) -> torch.Tensor:
    """(n,) bool: the ``k`` tokens VidCom2 keeps (exactly k; all of them if ``k >= n``).

    ``hidden`` (n, d) floating point, ``frame`` (n,) integer frame index per token (frames are runs
    of equal index), ``k`` a Python int ``>= 0``. See the module docstring for the rule.
    """
    n = _check_inputs(hidden, frame, k, tau, eps)
    device = hidden.device
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=device)
    keep = torch.zeros(n, dtype=torch.bool, device=device)
    if k == 0:
        return keep
    runs = frame_runs(frame)  # (n,) frame number 0..T-1; per-frame buffers below have n slots
    score, frame_u = _uniqueness(hidden, runs)  # (n,), (n,) (slots past the last frame: 0)
    sizes = torch.zeros(n, dtype=torch.float64, device=device).index_add_(
        0, runs, torch.ones(n, dtype=torch.float64, device=device)
    )  # (n,) M_t; 0 in unused slots
    real = sizes > 0
    num_frames = real.sum().to(torch.float64)  # T, on the device

    # Stage 1: softmax over frame uniqueness (unused slots: exp(-inf) = 0).
    u = torch.where(real, frame_u.to(torch.float64), torch.full_like(sizes, float("-inf")))
    e = ((u - u.max()) / tau).exp()  # (n,)
    sigma = e / (e.sum() + eps)
    weight = torch.where(real, sizes * (1.0 + sigma - 1.0 / num_frames), torch.zeros_like(sizes))
    quota = _capped_quotas(sizes, weight, k)  # (n,) q_t, sum k

    # Stage 2: rank of every token in its frame by score (descending; ties: the earlier token).
    rank = rank_in_run(score, runs)  # (n,)
    priority = quota[runs] - rank.to(torch.float64)
    keep[top_k_indices(priority, k)] = True
    return keep


def _check_inputs(hidden: torch.Tensor, frame: torch.Tensor, k, tau: float, eps: float) -> int:
    n = check_video_tokens(hidden, frame, k)
    if not (isinstance(tau, (int, float)) and tau > 0):
        raise ValueError(f"tau must be a number > 0, got {tau!r}")
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"eps must be a number >= 0, got {eps!r}")
    return n


def _uniqueness(hidden: torch.Tensor, runs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token score ``-cos(x, g_frame) - cos(x, g_video)`` (n,) and per-frame mean of
    ``-cos(x, g_video)`` in slots 0..T-1 of an (n,) buffer (float32)."""
    n = hidden.shape[0]
    x = hidden.float()
    # One power of two for the whole tensor: means are exact multiples of the true means.
    _, exponent = torch.frexp(x.abs().amax())
    xs = torch.ldexp(x, (-exponent).clamp(-126, 126).to(x.dtype))  # (n, d)
    ones = torch.ones(n, dtype=torch.float32, device=x.device)
    count = torch.zeros(n, dtype=torch.float32, device=x.device).index_add_(0, runs, ones)  # (n,) M_t
    frame_sum = torch.zeros_like(xs).index_add_(0, runs, xs)  # (n, d) slots 0..T-1 used
    frame_mean = frame_sum / count.clamp_min(1.0).unsqueeze(-1)
    video_mean = xs.mean(dim=0, keepdim=True)  # (1, d)
    unit = unit_rows(x)  # (n, d)
    s_video = unit @ unit_rows(video_mean)[0]  # (n,)
    s_frame = (unit * unit_rows(frame_mean)[runs]).sum(-1)  # (n,)
    u_video = -s_video
    frame_u = torch.zeros(n, dtype=torch.float32, device=x.device).index_add_(0, runs, u_video)
    frame_u = frame_u / count.clamp_min(1.0)
    return -s_frame + u_video, frame_u


def _capped_quotas(sizes: torch.Tensor, weight: torch.Tensor, k: int) -> torch.Tensor:
    """(m,) ``min(size, lam * weight)`` with the ``lam`` that makes the sum ``k`` (0 < k < sum sizes).

    Slots with size 0 get 0. Frames fill up in the order of ``size / weight``: with the frames sorted
    that way, assuming the first j full gives ``lam_j = (k - sum of their sizes) / (weight of the
    rest)``, and the first j with ``lam_j <= size_j / weight_j`` is the answer (``lam_j`` never
    exceeds the true ``lam``, and equals it on the interval where exactly j frames are full).
    """
    real = sizes > 0
    ratio = torch.where(real, sizes / weight.clamp_min(1e-300), torch.full_like(sizes, float("inf")))
    order = torch.sort(ratio, stable=True).indices
    s, w, c = sizes[order], weight[order], ratio[order]
    size_before = s.cumsum(0) - s
    weight_from = w.flip(0).cumsum(0).flip(0)  # weight of this frame and every later one
    lam = (k - size_before) / weight_from.clamp_min(1e-300)
    ok = (lam <= c) & real[order]
    first = torch.argmax(ok.to(torch.int8)).view(1)  # the first frame that does not fill up
    return torch.where(real, torch.minimum(sizes, lam.index_select(0, first) * weight), torch.zeros_like(sizes))


