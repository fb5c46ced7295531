"""FrameFusion: cascaded similarity merging, then importance pruning within a compute budget.

Fu et al., "FrameFusion: Combining Similarity and Importance for Video Token Reduction on Large
Vision Language Models", arXiv 2501.01986.

Per sample, layer by layer:

1. Merging. Each vision token is compared (cosine) with the closest earlier token at the same
   patch position of the same video. Tokens at or above ``similarity_threshold`` join their
   predecessor's group; each group becomes the mean of its members. While the share of similar
   tokens stays at or above ``ratio_threshold``, the next layer merges again.
2. Pruning, once, at the layer after merging ends: keep the ``k`` tokens the last query token
   attends to most, with ``k`` the largest count that, kept to the last layer, fits the budget.

Budget rules (so the budget is never exceeded, whatever the inputs):
- if merging at a layer would go below what the budget allows, only the most similar tokens are
  merged, down to exactly that count, and the method stops (no pruning needed);
- merging continues to the next layer only while that layer could still afford the current count;
- if a layer cannot afford even the merged count, it prunes at once instead.

Ablations (``merge`` / ``prune`` flags, both True by default):

- merge-only (``prune=False``, similarity alone): every step above is kept, but wherever FrameFusion
  would prune it merges instead, by similarity alone, down to the same count
  (``algorithm.merge_to_count``: the most similar same-patch pairs whatever the threshold, and
  only when that cannot reach the count, tokens with their neighbour in sequence order). So it
  fills the budget exactly like FrameFusion and never exceeds it. The one exception to "merge
  only": when the budget affords no vision token at all at the remaining layers, every vision
  token is dropped (recorded as a prune). At ``cost=1.0`` it is the threshold merging stage alone,
  using less than the budget wherever the video is redundant.
- prune-only (``merge=False``, importance alone): prunes once, at the first layer it is called
  for, to the largest count the budget affords at every remaining layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..algorithm import (
    TokenBudget,
    adjacent_similarity,
    merge_means,
    merge_roots,
    merge_to_count,
    previous_same_patch,
    top_k_indices,
)
from .base import LayerInput, Reduction, ReductionMethod

__all__ = ["FrameFusion", "FrameFusionState"]

MERGE, PRUNE, DONE = "merge", "prune", "done"


@dataclass
class FrameFusionState:
    budget: TokenBudget
    stage: str = MERGE
    merge_layers: list[int] = field(default_factory=list)
    prune_layer: int | None = None


class FrameFusion(ReductionMethod):
    name = "framefusion"

    def __init__(
        self,
        cost: float,
        similarity_threshold: float,
        ratio_threshold: float,
        merge: bool = True,
        prune: bool = True,
    ):
        if not (merge or prune):
            raise ValueError("FrameFusion needs merge or prune (or both); merge=False, prune=False reduces nothing")
        self.cost = cost
        self.similarity_threshold = similarity_threshold
        self.ratio_threshold = ratio_threshold
        self.merge = bool(merge)
        self.prune = bool(prune)
        if not self.prune:
            self.name = "framefusion-merge-only"
        elif not self.merge:
            self.name = "framefusion-prune-only"

    def start(self, num_tokens: int, num_layers: int, sample: int = 0) -> FrameFusionState:
        return FrameFusionState(TokenBudget(self.cost, num_layers, num_tokens))

    def active(self, state: FrameFusionState) -> bool:
        return state.stage != DONE

    def idle(self, state: FrameFusionState, num_tokens: int) -> None:
        state.budget.charge(num_tokens)

    def achieved_cost(self, state: FrameFusionState) -> float:
        return state.budget.achieved()

    def counts(self, state: FrameFusionState) -> list[int]:
        return list(state.budget.counts)

    def step(self, state: FrameFusionState, x: LayerInput) -> Reduction | None:
        n = x.hidden.shape[0]
        budget = state.budget
        if state.stage == DONE or n == 0:
            budget.charge(n)
            return None
        k_max = budget.max_constant()
        if state.stage == PRUNE or not self.merge:
            return self._prune(state, x, min(n, k_max))

        prev = previous_same_patch(x.patch)
        sim = adjacent_similarity(x.hidden, prev)
        similar = (sim >= self.similarity_threshold) & (prev >= 0)
        s = int(similar.sum())  # the one host read of a merging layer: it decides the count
        share = s / n

        if n - s <= k_max:
            # Merging everything similar reaches the budget: merge only the most similar tokens,
            # down to exactly k_max, and stop.
            state.stage = DONE
            m = n - k_max
            if m <= 0:
                budget.charge(n)
                return None
            chosen = top_k_indices(torch.where(similar, sim, torch.full_like(sim, float("-inf"))), m)
            selected = torch.zeros_like(similar)
            selected[chosen] = True
            return self._merge(state, x, prev, selected, k_max)

        if not budget.affords(n - s):
            # Even the merged count does not fit this layer (a very small budget): prune now.
            return self._prune(state, x, k_max)

        if s:
            reduction = self._merge(state, x, prev, similar, n - s)
        else:
            reduction = None
            budget.charge(n)
        layers_left = budget.num_layers - budget.layer
        if not (share >= self.ratio_threshold and layers_left > 0 and budget.affords(n - s)):
            state.stage = PRUNE if layers_left > 0 else DONE
        return reduction

    def _merge(
        self, state: FrameFusionState, x: LayerInput, prev: torch.Tensor, selected: torch.Tensor, count: int
    ) -> Reduction:
        """Merge the ``selected`` tokens into their predecessors, leaving ``count`` tokens."""
        root = merge_roots(selected, prev)
        keep, merged = merge_means(x.hidden, root, count)
        state.budget.charge(count)
        state.merge_layers.append(x.layer)
        return Reduction("merge", keep, merged, root, count)

    def _prune(self, state: FrameFusionState, x: LayerInput, k: int) -> Reduction | None:
        n = x.hidden.shape[0]
        state.stage = DONE
        state.budget.charge(k)
        if k >= n:
            return None
        if not self.prune and k > 0:  # merge-only: reach the count by similarity instead
            keep, merged, root = merge_to_count(x.hidden, x.patch, k)
            state.merge_layers.append(x.layer)
            return Reduction("merge", keep, merged, root, k)
        state.prune_layer = x.layer
        keep = torch.zeros(n, dtype=torch.bool, device=x.hidden.device)
        if k > 0:
            keep[top_k_indices(x.importance(), k)] = True
        return Reduction("prune", keep, count=k)
