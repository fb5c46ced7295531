"""Attention masks of shortened layers, one builder for prefill and decode (pure torch).

After a reduction, a layer's keys are the slots still present (left-padded per row), not the
positions the model's own mask describes; these masks say which keys each query may see: causal
in slot order, padding hidden, every query sees at least itself. sdpa takes a boolean mask
(True: attend), eager an additive one (0 / dtype min), flash the 2-D key mask itself.
"""

from __future__ import annotations

import torch

__all__ = ["as_impl_mask", "causal_mask", "continuation_mask"]


def causal_mask(keys: torch.Tensor, queries: int, impl: str, dtype: torch.dtype) -> torch.Tensor:
    """The mask of the last ``queries`` of ``keys`` (b, K) (True: a real token) over all K.
    Returns (b, 1, queries, K) for sdpa/eager, (b, K) long for flash."""
    if impl.startswith("flash"):
        return keys.long()
    total = keys.shape[1]
    rows = torch.arange(queries, device=keys.device)[:, None] + (total - queries)
    cols = torch.arange(total, device=keys.device)[None, :]
    allowed = (cols <= rows)[None] & keys[:, None, :]  # (b, queries, K)
    allowed |= (cols == rows)[None]  # no empty rows
    return as_impl_mask(allowed[:, None], impl, dtype)


def continuation_mask(valid: torch.Tensor, call_mask, earlier: int, q: int, impl: str, dtype: torch.dtype):
    """Mask of ``q`` new tokens over a shortened layer's keys: the prefill's slots (``valid``, (b, P)),
    the ``earlier`` tokens cached since, then the new ones (causal among themselves). ``call_mask``
    is the call's 2-D attention mask over all tokens so far (its last columns say which of the
    later tokens are real), or None."""
    width = earlier + q
    if isinstance(call_mask, torch.Tensor) and call_mask.ndim == 2 and call_mask.shape[1] >= width:
        new_valid = call_mask[:, call_mask.shape[1] - width :].bool().to(valid.device)
    else:
        new_valid = torch.ones(valid.shape[0], width, dtype=torch.bool, device=valid.device)
    return causal_mask(torch.cat([valid, new_valid], dim=1), q, impl, dtype)


def as_impl_mask(allowed: torch.Tensor, impl: str, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True: attend) in the form ``impl`` takes."""
    if impl == "sdpa":
        return allowed
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)
