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

import math
from dataclasses import dataclass, field

import torch

from ..algorithm import (
    BudgetView,
    adjacent_similarity,
    merge_means,
    merge_roots,
    merge_to_count,
    previous_same_patch,
    top_k_indices,
)
from .base import LayerInput, Reduction, ReductionMethod, set_fields
from .checks import check_cost, check_flag, check_number

__all__ = ["FrameFusion", "FrameFusionState"]

MERGE, PRUNE, DONE = "merge", "prune", "done"


@dataclass
class FrameFusionState:
    stage: str = MERGE
    merge_layers: list[int] = field(default_factory=list)
    prune_layer: int | None = None


@dataclass(frozen=True)
class FrameFusion(ReductionMethod):
    """FrameFusion settings (Fu et al., arXiv 2501.01986).

    cost: budget, in (0, 1].
    similarity_threshold: cosine similarity at or above which a token merges into the token at
        the same patch position of the previous frame; in [-1, 1], or above 1 to turn merging off.
    ratio_threshold: merging repeats at the next layer while at least this share of the vision
        tokens was similar; in [0, 1].
    merge, prune: the ablations (see the module docstring); at least one must be True.
    """

    cost: float = 0.3
    similarity_threshold: float = 0.6
    ratio_threshold: float = 0.1
    merge: bool = True
    prune: bool = True

    def __post_init__(self) -> None:
        sim = check_number("similarity_threshold", self.similarity_threshold)
        if math.isinf(sim) or sim < -1.0:
            raise ValueError(
                f"similarity_threshold must be a finite cosine similarity >= -1 (above 1 turns merging off), got {sim}"
            )
        ratio = check_number("ratio_threshold", self.ratio_threshold)
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio_threshold must be in [0, 1] (share of similar tokens), got {ratio}")
        if not (check_flag("merge", self.merge) | check_flag("prune", self.prune)):
            raise ValueError(
                "merge and prune cannot both be False (nothing would be reduced); "
                "allowed: both True (FrameFusion), prune=False (merge-only), merge=False (prune-only)"
            )
        set_fields(self, cost=check_cost(self.cost), similarity_threshold=sim, ratio_threshold=ratio)

    @property
    def name(self) -> str:
        if not self.prune:
            return "framefusion-merge-only"
        return "framefusion" if self.merge else "framefusion-prune-only"

    def start(self, budget: BudgetView, sample: int = 0) -> FrameFusionState:
        return FrameFusionState()

    def active(self, state: FrameFusionState) -> bool:
        return state.stage != DONE

    def step(self, state: FrameFusionState, x: LayerInput) -> Reduction | None:
        n = x.hidden.shape[0]
        budget = x.budget
        if state.stage == DONE or n == 0:
            return None
        k_max = budget.max_constant()
        if state.stage == PRUNE or not self.merge:
            return self._prune(state, x, min(n, k_max))

        prev = previous_same_patch(x.patch)
        sim = adjacent_similarity(x.hidden, prev)
        similar = (sim >= self.similarity_threshold) & (prev >= 0)
        s = int(similar.sum())  # the one host read of a merging layer: it decides the count
        if n - s <= k_max:
            # Merging everything similar reaches the budget: merge only the most similar tokens,
            # down to exactly k_max, and stop.
            state.stage = DONE
            return self._merge_most_similar(state, x, prev, sim, similar, k_max) if n > k_max else None
        if not budget.affords(n - s):
            # Even the merged count does not fit this layer (a very small budget): prune now.
            return self._prune(state, x, k_max)
        reduction = self._merge(state, x, prev, similar, n - s) if s else None
        # Merge again at the next layer only while enough was similar and that layer could still
        # afford the merged count (this layer runs with n - s too: two layers' worth).
        layers_after = budget.num_layers - budget.layer - 1
        if not (s / n >= self.ratio_threshold and layers_after > 0 and budget.affords(n - s, layers=2)):
            state.stage = PRUNE if layers_after > 0 else DONE
        return reduction

    def _merge_most_similar(self, state, x: LayerInput, prev, sim, similar, count: int) -> Reduction:
        """Merge the ``n - count`` most similar of the ``similar`` tokens, leaving ``count``."""
        chosen = top_k_indices(torch.where(similar, sim, torch.full_like(sim, float("-inf"))), x.hidden.shape[0] - count)
        selected = torch.zeros_like(similar)
        selected[chosen] = True
        return self._merge(state, x, prev, selected, count)

    def _merge(
        self, state: FrameFusionState, x: LayerInput, prev: torch.Tensor, selected: torch.Tensor, count: int
    ) -> Reduction:
        """Merge the ``selected`` tokens into their predecessors, leaving ``count`` tokens."""
        root = merge_roots(selected, prev)
        keep, merged = merge_means(x.hidden, root, count)
        state.merge_layers.append(x.layer)
        return Reduction("merge", keep, merged, root, count)

    def _prune(self, state: FrameFusionState, x: LayerInput, k: int) -> Reduction | None:
        n = x.hidden.shape[0]
        state.stage = DONE
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
