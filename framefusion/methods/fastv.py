"""FastV: after the first K layers, keep only the vision tokens the last query attends to most.

Chen et al., "An Image is Worth 1/2 Tokens After Layer 2: Plug-and-Play Inference Acceleration
for Large Vision-Language Models", arXiv 2403.06764.

Layers ``0 .. K-1`` see every vision token; at the input of layer ``K`` the ``k`` tokens with the
highest score stay, where the score is the attention the last query token pays each vision token,
averaged over heads, in layer ``K-1`` (the last layer that saw them all, as in the authors'
released code; with ``K = 0``, or where the engine does not call the method at layer ``K-1``,
the scores of layer ``K`` itself). Ties go to the earlier token.

How many stay:

- budget mode (``cost``): the largest ``k`` with ``K*N + (L-K)*k <= cost*L*N``. If even ``K`` full
  layers exceed the budget (``cost < K/L``), pruning moves to the latest layer ``K' < K`` whose
  full layers still fit (``K' = max l <= K with l*N <= cost*L*N``), so the budget holds; the
  report's decisions show the layer used. With ``K >= L`` and ``cost = 1`` nothing is pruned.
- ratio mode (``ratio``, FastV's own R, the share pruned): ``floor(R*N)`` tokens go at layer
  ``K`` (nothing if ``K >= L``); no budget is promised.
"""

from __future__ import annotations

import math

import torch

from ..algorithm import TokenBudget, top_k_indices
from .base import LayerInput, Reduction
from .oneshot import OneShotMethod, OneShotState

__all__ = ["FastV"]


class FastV(OneShotMethod):
    name = "fastv"

    def __init__(self, cost: float | None = None, layer: int = 2, ratio: float | None = None):
        if (cost is None) == (ratio is None):
            raise ValueError("FastV needs exactly one of cost (budget) and ratio (share pruned)")
        self.cost = cost
        self.budgeted = cost is not None
        self.layer = layer
        self.ratio = ratio

    def at_layer(self, num_tokens: int, num_layers: int, budget: TokenBudget) -> int:
        at = self.layer
        if self.budgeted:
            while at > 0 and at * num_tokens > budget.total:
                at -= 1
        return at

    def count(self, state: OneShotState, n: int) -> int:
        if self.budgeted:
            return min(n, state.budget.max_constant())
        return n - min(n, math.floor(self.ratio * n + 1e-9))

    def _will_prune(self, state: OneShotState) -> bool:
        b = state.budget
        if self.budgeted:
            left = b.num_layers - state.at_layer
            return left > 0 and math.floor((b.total - state.at_layer * b.num_tokens) / left) < b.num_tokens
        return self.count(state, b.num_tokens) < b.num_tokens

    def before(self, state: OneShotState, x: LayerInput) -> None:
        if x.layer == state.at_layer - 1 and self._will_prune(state):
            state.extra = x.importance()

    def select(self, state: OneShotState, x: LayerInput, k: int) -> Reduction:
        n = x.hidden.shape[0]
        scores = state.extra
        if scores is None or scores.shape[0] != n:
            scores = x.importance()
        state.extra = None
        keep = torch.zeros(n, dtype=torch.bool, device=x.hidden.device)
        keep[top_k_indices(scores.to(x.hidden.device), k)] = True
        return Reduction("prune", keep, count=k)
