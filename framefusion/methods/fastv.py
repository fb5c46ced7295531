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

import dataclasses
import math
from dataclasses import dataclass

import torch

from ..algorithm import BudgetView, top_k_indices
from .base import LayerInput, Reduction, set_fields
from .checks import check_cost, check_integer, check_number
from .oneshot import OneShotMethod, OneShotState

__all__ = ["FastV"]


@dataclass(frozen=True)
class FastV(OneShotMethod):
    """FastV: every token through the first ``layer`` layers, then only the ones the last query
    attended to most.

    cost: budget, in (0, 1]; the kept count is the largest k with ``layer*N + (L-layer)*k <=
        cost*L*N``; if ``cost < layer/L`` pruning moves to the latest earlier layer that fits, so the
        budget always holds. Default 0.3 when ``ratio`` is not given.
    layer: K, the number of leading layers that see every vision token; an integer >= 0 (FastV's
        default is 2).
    ratio: FastV's own R instead of ``cost``: the share of vision tokens pruned at layer K, in
        [0, 1]; no budget is then promised (the report still gives the achieved cost).
    """

    cost: float | None = None
    layer: int = 2
    ratio: float | None = None

    name = "fastv"

    def __post_init__(self) -> None:
        layer = check_integer("layer", self.layer, 0, "number of leading layers that see every token")
        if self.cost is not None and self.ratio is not None:
            raise ValueError(
                f"give FastV either cost (budget) or ratio (FastV's share pruned), not both; "
                f"got cost={self.cost!r}, ratio={self.ratio!r}"
            )
        if self.ratio is not None:
            ratio = check_number("ratio", self.ratio)
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"ratio must be in [0, 1] (share of vision tokens pruned at layer K), got {ratio}")
            set_fields(self, ratio=ratio, layer=layer)
        else:
            set_fields(self, cost=0.3 if self.cost is None else check_cost(self.cost), layer=layer)

    def with_cost(self, cost: float) -> "FastV":
        """At budget ``cost`` (FastV's own ratio, if set, gives way to it)."""
        return dataclasses.replace(self, cost=cost, ratio=None)

    @property
    def budgeted(self) -> bool:
        return self.cost is not None

    def at_layer(self, budget: BudgetView) -> int:
        at = self.layer
        if self.budgeted:
            while at > 0 and at * budget.num_tokens > budget.total:
                at -= 1
        return at

    def count(self, budget: BudgetView, n: int) -> int:
        if self.budgeted:
            return min(n, budget.max_constant())
        return n - min(n, math.floor(self.ratio * n + 1e-9))

    def _will_prune(self, state: OneShotState, budget: BudgetView) -> bool:
        n = budget.num_tokens
        if self.budgeted:
            left = budget.num_layers - state.at_layer
            return left > 0 and math.floor((budget.total - state.at_layer * n) / left) < n
        return self.count(budget, n) < n

    def before(self, state: OneShotState, x: LayerInput) -> None:
        if x.layer == state.at_layer - 1 and self._will_prune(state, x.budget):
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
