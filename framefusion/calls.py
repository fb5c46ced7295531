"""Per-call state of the engine: a prefill being reduced (``Call`` of ``Sample`` rows) and a call
that continues a reduced cache (``Step``).

During a reduced prefill each batch row keeps, on the device, which of its original tokens are
still present (``kept``), which of those are vision tokens and where they sit; after a reduction
the rows are re-packed with left padding into one tensor (``Call.repack``), whose ``index`` maps
every slot back to its original position. All sizes are known to the host (counts the methods
decided), so none of this reads the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .adapters import VideoLayout
from .algorithm import true_indices
from .cache_book import CacheBook
from .generation import Generation
from .ledger import Ledger
from .methods import Reduction, ReductionMethod
from .report import Decision, ReductionTimer

__all__ = ["Call", "Sample", "Step"]


@dataclass
class Step:
    """A call that continues a cache filled by a reduced prefill (decode step, later chat turn)."""

    book: CacheBook
    mask: torch.Tensor | None  # the call's 2-D attention mask over all tokens so far
    attention: str  # the model's attention implementation
    masks: dict = field(default_factory=dict)  # built masks, shared by the layers reduced together


@dataclass
class Sample:
    """One batch row during prefill (tensors on the model's device, sizes known to the host)."""

    layout: VideoLayout
    ledger: Ledger | None  # the method's state and the row's budget books; None for a row without video
    kept: torch.Tensor  # (m,) original positions of the row's valid tokens still present, ascending
    ordinal: torch.Tensor  # (m,) index of each in layout, -1 for text
    vision_slots: torch.Tensor  # (n,) where the n vision tokens still present sit among the m
    decisions: list[Decision] = field(default_factory=list)

    @classmethod
    def start(
        cls, method: ReductionMethod, b: int, layout: VideoLayout, row_valid: torch.Tensor, num_layers: int, device,
        pricing: Callable[[int, int], Callable[[int], float]] | None = None,
    ) -> "Sample":  # fmt: skip
        """Row ``b``'s bookkeeping, worked out on the host (layout, row_valid (L,): host tensors)
        and moved to the device once. ``pricing(text_tokens, vision_tokens)``, if given, prices the
        row's budget (see ``algorithm.budget``)."""
        kept = row_valid.nonzero(as_tuple=True)[0]  # (m,)
        last = int(kept[-1]) if kept.numel() else -1
        # Padding is never a vision token, nor the last token (its query drives generation).
        layout = layout.select(row_valid[layout.positions] & (layout.positions != last))
        ordinal = torch.full((row_valid.numel(),), -1, dtype=torch.long)
        ordinal[layout.positions] = torch.arange(len(layout))
        ordinal = ordinal[kept]
        vision_slots = (ordinal >= 0).nonzero(as_tuple=True)[0]
        price = None if pricing is None else pricing(len(kept) - len(layout), len(layout))
        ledger = Ledger(method, len(layout), num_layers, sample=b, price=price) if len(layout) else None
        return cls(layout.to(device), ledger, kept.to(device), ordinal.to(device), vision_slots.to(device))

    def apply(self, layer_idx: int, row: torch.Tensor, red: Reduction | None) -> torch.Tensor:
        """row: (m, d) the sample's present tokens; returns the tokens that stay, merges applied.
        Sizes come from ``red.count`` (known to the host), so nothing is read from the device."""
        if red is None:
            return row
        count = red.count if red.count is not None else int(red.keep.sum())
        keep = red.keep.to(row.device)  # (n,) over the vision tokens present
        self.decisions.append(Decision(layer_idx, red.kind, keep, red.root, red.anchor_weight))  # host: when read
        m, n = len(self.kept), len(self.vision_slots)
        keep_row = torch.ones(m, dtype=torch.bool, device=row.device)
        keep_row[self.vision_slots] = keep
        if red.merged is not None:
            row = row.clone()
            row[self.vision_slots[true_indices(keep, count)]] = red.merged.to(row.dtype)
        stay = true_indices(keep_row, m - n + count)  # (m - n + count,)
        self.kept = self.kept[stay]
        self.ordinal = self.ordinal[stay]
        self.vision_slots = true_indices(self.ordinal >= 0, count)
        return row[stay]


@dataclass
class Call:
    """State of one forward/generate call in one thread."""

    samples: list[Sample]
    length: int  # original sequence length
    padded: bool  # host: some slot of the current hidden states is padding (masks must hide it)
    timer: ReductionTimer
    method: ReductionMethod  # the handle's method, or a Replay of this generate call's first prefill
    index: torch.Tensor | None = None  # (b, Lc) original position per slot, -1 for padding; None: not repacked
    valid: torch.Tensor | None = None  # (b, Lc) slot holds a real token; None: no padding at all
    mask_cache: tuple | None = None  # (key, mask) of the current prefill mask
    position_cache: tuple | None = None  # (key, (cos, sin)) gathered for the current index
    attention: str = "sdpa"  # the model's attention implementation for this call
    first_layer: int = 0  # layers before it run unreduced (e.g. Qwen3-VL's deepstack layers)
    book: CacheBook | None = None  # shortened layers so far; written to the cache at the end
    cache: Any = None  # the KV cache of this prefill (held only while it runs)
    generation: Generation | None = None  # the enclosing generate call, if any
    # A call that brings a video to a conversation whose cache holds earlier turns: what the cache
    # held (its book, its untouched length) and, per layer, the keys it held before this call.
    prefix: Step | None = None
    offset: int = 0  # untouched length of the cache before this call (positions are relative to it)
    prefix_held: dict = field(default_factory=dict)  # layer -> keys held before this call
    prefill_done: bool = False
    layers_seen: int = 0

    # ------------------------------------------------------------ the methods' decisions
    def live_samples(self, layer_idx: int) -> list[int]:
        """Rows whose method decides at this layer (the others pass their tokens through)."""
        if layer_idx < self.first_layer:
            return []
        return [b for b, s in enumerate(self.samples) if s.ledger is not None and s.ledger.active()]

    def decide(self, b: int, layer_idx: int, hidden: torch.Tensor, importance) -> Reduction | None:
        """The method's decision for row ``b``'s vision tokens present at this layer (hidden (b, Lc, d))."""
        sample = self.samples[b]
        ordinal = sample.ordinal[sample.vision_slots]  # (n,) index of each vision token in the layout
        frame, patch = sample.layout.frame[ordinal], sample.layout.patch[ordinal]
        return sample.ledger.decide(layer_idx, hidden[b, self.vision_slots_in_hidden(b)], frame, patch, importance)

    def charge_books(self) -> None:
        """The layer being reduced runs with the vision tokens now present: charge every row."""
        for sample in self.samples:
            if sample.ledger is not None:
                sample.ledger.charge(len(sample.vision_slots))

    # ------------------------------------------------------------ where the tokens sit
    def row_slots(self, b: int) -> torch.Tensor:
        """(m,) slots of row b's present tokens in the current hidden tensor."""
        sample = self.samples[b]
        if self.index is None:
            return sample.kept
        width = self.index.shape[1]
        return torch.arange(width - len(sample.kept), width, device=sample.kept.device)

    def vision_slots_in_hidden(self, b: int) -> torch.Tensor:
        """(n,) slots of row b's vision tokens in the current hidden tensor."""
        return self.row_slots(b)[self.samples[b].vision_slots]

    def repack(self, rows: list[torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
        """Left-pad the rows (m_b, d) into one (b, max m_b, d) tensor; index/valid say what sits where."""
        width = max(r.shape[0] for r in rows)
        batch, device = len(rows), hidden.device
        packed = hidden.new_zeros((batch, width, hidden.shape[-1]))
        index = torch.full((batch, width), -1, dtype=torch.long, device=device)
        for b, (row, sample) in enumerate(zip(rows, self.samples)):
            n = row.shape[0]
            if n:
                packed[b, width - n :] = row
                index[b, width - n :] = sample.kept.to(device)
        self.index = index
        self.valid = index >= 0
        self.padded = any(r.shape[0] < width for r in rows)  # padding tokens were dropped with the rows
        self.mask_cache = None
        return packed

    def positions(self, full_cos: torch.Tensor, full_sin: torch.Tensor):
        """cos/sin of the slots present: gathered once per re-packing and reused by later layers."""
        if self.index is None:
            return full_cos, full_sin
        key = (full_cos.data_ptr(), id(self.index))
        if self.position_cache is None or self.position_cache[0] != key:
            self.position_cache = (key, (_gather(full_cos, self.index), _gather(full_sin, self.index)))
        return self.position_cache[1]

    # ------------------------------------------------------------ what the cache will hold
    def prefix_valid(self, layer_idx: int) -> torch.Tensor | None:
        """(b, held) which of the keys that layer ``layer_idx`` held before this call are real; None
        for a call without earlier turns."""
        if self.prefix is None:
            return None
        held = self.prefix_held[layer_idx]
        earlier = self.prefix.book.layer_valid.get(layer_idx)
        batch, device = self.valid.shape[0], self.valid.device
        if earlier is None:
            return torch.ones(batch, held, dtype=torch.bool, device=device)
        later = torch.ones(batch, held - earlier.shape[1], dtype=torch.bool, device=device)  # decoded since
        return torch.cat([earlier.to(device), later], dim=1)

    def book_layer(self, layer_idx: int, prefix_valid: torch.Tensor | None) -> None:
        """Record what layer ``layer_idx``'s cache will hold after this call: every key it held
        before (``prefix_valid``) and the slots present now."""
        book = self.book = self.book or CacheBook(self.offset + self.length)
        if prefix_valid is None:
            book.layer_valid[layer_idx] = self.valid
            book.layer_padded[layer_idx] = self.padded
        else:
            book.layer_valid[layer_idx] = torch.cat([prefix_valid, self.valid], dim=1)
            book.layer_padded[layer_idx] = self.padded or self.prefix.book.layer_padded.get(layer_idx, False)


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x: (b, L, d) gathered at index (b, Lc) (padding -1 reads slot 0)."""
    idx = index.clamp_min(0).to(x.device)
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))
