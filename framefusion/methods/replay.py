"""Replay recorded decisions: the same keeps and the same merge groups, means recomputed."""

from __future__ import annotations

from dataclasses import dataclass

from ..algorithm import BudgetView, anchor_means, merge_means
from .base import LayerInput, Reduction, ReductionMethod

__all__ = ["Replay"]


@dataclass
class _ReplayState:
    decisions: dict  # layer -> Decision
    budget: BudgetView  # live: its layer is the one being decided


class Replay(ReductionMethod):
    """Re-applies the decisions of a report (one list of ``Decision`` per sample).

    Used to check exact decoding: a cache-free forward over prompt + generated tokens with the
    same decisions must give the logits that decoding gave. It promises no budget of its own
    (``cost`` None): the report measures what the decisions cost.
    """

    name = "replay"
    cost = None

    def __init__(self, decisions_per_sample):
        self._per_sample = [list(d) for d in decisions_per_sample]

    def start(self, budget: BudgetView, sample: int = 0) -> _ReplayState:
        decisions = self._per_sample[sample] if sample < len(self._per_sample) else []
        return _ReplayState({d.layer: d for d in decisions}, budget)

    def active(self, state: _ReplayState) -> bool:
        return any(layer >= state.budget.layer for layer in state.decisions)

    def step(self, state: _ReplayState, x: LayerInput) -> Reduction | None:
        d = state.decisions.get(x.layer)
        if d is None:
            return None
        count = int(d.keep.sum())  # the recorded decision sits on the host: no device read
        keep = d.keep.to(x.hidden.device)
        if d.kind == "merge":
            root = d.root.to(x.hidden.device)
            if d.anchor_weight is None:
                _, merged = merge_means(x.hidden, root, count)
            else:
                merged = anchor_means(x.hidden, root, keep, count, d.anchor_weight)
            return Reduction("merge", keep, merged, root, count, d.anchor_weight)
        return Reduction(d.kind, keep, count=count)
