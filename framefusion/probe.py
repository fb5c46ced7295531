"""Importance: the attention the last prompt token pays every slot, computed from one query row.

The adapter's ``attention_probe`` gives the layer's query of each row's last real token and the
keys of every slot, positions applied (family specifics: partial rotary, norms). From those this
computes the softmax row itself, so it works whatever attention implementation the model runs
(sdpa and flash never materialise attention weights), at the cost of one query row per layer.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["execution_device", "last_query_attention"]


def last_query_attention(
    adapter,
    layer: nn.Module,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    valid: torch.Tensor | None,
    cached_keys: torch.Tensor | None = None,
    cached_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """(b, Lc) attention of each row's last real token to every slot of ``hidden`` (b, Lc, d),
    averaged over heads, in float32, on ``hidden``'s device.

    valid: (b, Lc) which slots are real (None: all are). cached_keys (b, kv_heads, P, d) and
    cached_valid (b, P): keys that earlier chat turns cached at this layer; they share the softmax
    (the last token attends to them too) but get no column in the result.
    """
    device = execution_device(layer, hidden.device)
    q, k, scaling = adapter.attention_probe(layer, hidden.to(device), cos.to(device), sin.to(device), _last_slot(hidden, valid).to(device))
    groups = q.shape[1] // k.shape[1]  # grouped-query attention: each kv head serves `groups` heads
    logits = _logits(q, k.repeat_interleave(groups, dim=1), scaling)  # (b, h, Lc)
    if valid is not None:
        logits = logits.masked_fill(~valid.to(device)[:, None, :], float("-inf"))
    earlier = 0
    if cached_keys is not None:
        cached = _logits(q, cached_keys.to(device).repeat_interleave(groups, dim=1), scaling)  # (b, h, P)
        cached = cached.masked_fill(~cached_valid.to(device)[:, None, :], float("-inf"))
        logits = torch.cat([cached, logits], dim=-1)
        earlier = cached_keys.shape[2]
    return logits.softmax(dim=-1)[..., earlier:].mean(dim=1).to(hidden.device)


def _last_slot(hidden: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """(b,) slot of each row's last real token (rows are left-padded: the last slot, unless
    a reduction left padding there)."""
    if valid is None:
        return torch.full((hidden.shape[0],), hidden.shape[1] - 1, dtype=torch.long)
    return valid.shape[1] - 1 - valid.long().flip(1).argmax(1)


def _logits(q: torch.Tensor, k: torch.Tensor, scaling: float) -> torch.Tensor:
    """q (b, h, d) against k (b, h, L, d) -> (b, h, L) scaled dot products in float32."""
    return torch.einsum("bhd,bhld->bhl", q.float(), k.float()) * scaling


def execution_device(layer: nn.Module, fallback: torch.device) -> torch.device:
    """Where ``layer`` computes. Under accelerate dispatch its weights may sit on the meta device
    until its (or its submodules') own hooks load them; their execution device says where."""
    for module in layer.modules():
        hook = getattr(module, "_hf_hook", None)
        device = getattr(hook, "execution_device", None)
        if device is not None:
            return torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    for p in layer.parameters():
        return p.device if p.device.type != "meta" else fallback
    return fallback
