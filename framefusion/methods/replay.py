"""Replay recorded decisions: the same keeps and the same merge groups, means recomputed."""

from __future__ import annotations

from dataclasses import dataclass

from ..algorithm import merge_means
from .base import LayerInput, Reduction, ReductionMethod

__all__ = ["Replay"]


@dataclass
class _ReplayState:
    decisions: dict
    counts: list
    num_tokens: int
    num_layers: int


class Replay(ReductionMethod):
    """Re-applies the decisions of a report (one list of ``Decision`` per sample).

    Used to check exact decoding: a cache-free forward over prompt + generated tokens with the
    same decisions must give the logits that decoding gave.
    """

    name = "replay"

    def __init__(self, decisions_per_sample):
        self._per_sample = [list(d) for d in decisions_per_sample]

    def start(self, num_tokens: int, num_layers: int, sample: int = 0) -> _ReplayState:
        decisions = self._per_sample[sample] if sample < len(self._per_sample) else []
        return _ReplayState({d.layer: d for d in decisions}, [], num_tokens, num_layers)

    def active(self, state: _ReplayState) -> bool:
        return any(layer >= len(state.counts) for layer in state.decisions)

    def idle(self, state: _ReplayState, num_tokens: int) -> None:
        state.counts.append(num_tokens)

    def achieved_cost(self, state: _ReplayState) -> float:
        if not state.num_tokens:
            return 1.0
        return sum(state.counts) / (state.num_layers * state.num_tokens)

    def counts(self, state: _ReplayState) -> list[int]:
        return list(state.counts)

    def step(self, state: _ReplayState, x: LayerInput) -> Reduction | None:
        d = state.decisions.get(x.layer)
        if d is None:
            state.counts.append(x.hidden.shape[0])
            return None
        count = int(d.keep.sum())  # the recorded decision sits on the host: no device read
        keep = d.keep.to(x.hidden.device)
        state.counts.append(count)
        if d.kind == "merge":
            root = d.root.to(x.hidden.device)
            _, merged = merge_means(x.hidden, root, count)
            return Reduction("merge", keep, merged, root, count)
        return Reduction(d.kind, keep, count=count)
