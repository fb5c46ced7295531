"""What the engine needs to know about an enclosing ``generate`` call.

- ``use_cache=False``: every step is a prefill of the whole sequence; the first one decides and
  the later ones replay its decisions, so the tokens equal ``use_cache=True``'s.
- beams / ``num_return_sequences``: generate repeats each row e times in a row, but the vision
  tower's grids were recorded once per distinct row; layouts are found on every e-th row.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field

import torch
from torch import nn

from .adapters.base import InstanceAttribute

__all__ = ["Generation", "every_nth_row", "row_repeats", "wrap_generate"]


@dataclass
class Generation:
    """One generate() call in one thread."""

    decisions: list | None = None  # the first prefill's decisions, per sample (use_cache=False)
    recorded: dict = field(default_factory=dict)  # what the adapter recorded before the first step
    repeats: int | None = None  # rows per sample, when generate() expanded the batch


def wrap_generate(model: nn.Module, local: threading.local) -> InstanceAttribute:
    """model.generate, marking the thread as inside one generate call; returns a remover."""
    original = model.generate

    @functools.wraps(original)
    def generate(*args, **kwargs):
        outer = getattr(local, "generation", None)
        local.generation = Generation()
        try:
            return original(*args, **kwargs)
        finally:
            local.generation = outer

    return InstanceAttribute(model, "generate", generate)


def row_repeats(host: dict) -> int:
    """e > 1 if the batch is each of its distinct rows repeated e times in a row (generate's
    expansion for beams / num_return_sequences: ids and mask equal within each group), else 1.
    ``host``: the call's inputs, integer tensors on the host."""
    ids = host["input_ids"]
    mask = host.get("attention_mask")
    rows = ids if not isinstance(mask, torch.Tensor) or mask.shape != ids.shape else torch.cat([ids, mask.long()], 1)
    batch = rows.shape[0]
    for repeats in range(batch, 1, -1):
        if batch % repeats == 0 and torch.equal(rows, rows[::repeats].repeat_interleave(repeats, dim=0)):
            return repeats
    return 1


def every_nth_row(host: dict, n: int) -> dict:
    """``host`` with its per-row (b, L) tensors cut to rows 0, n, 2n, ..."""
    batch, length = host["input_ids"].shape
    out = dict(host)
    for key, value in host.items():
        if isinstance(value, torch.Tensor) and value.shape[:2] == (batch, length):
            out[key] = value[::n]
    return out
