"""Shared machinery of the methods that reduce once, at one layer, to a budgeted count.

The reduction happens at the first layer the engine calls ``step`` for at or after ``at_layer``
(later than asked only on models whose first layers must see every token). From then on the
count stays constant, so the budget check is exact: ``TokenBudget.max_constant`` tokens.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

from ..algorithm import TokenBudget
from .base import LayerInput, Reduction, ReductionMethod

__all__ = ["OneShotMethod", "OneShotState"]


@dataclass
class OneShotState:
    budget: TokenBudget
    at_layer: int  # reduce at the first stepped layer >= this
    sample: int = 0
    done: bool = False
    layer: int | None = None  # where it reduced (None: not reduced)
    extra: Any = None  # method-specific (FastV: the previous layer's scores)


class OneShotMethod(ReductionMethod):
    """Reduce once; subclasses say where (``at_layer``), to how many (``count``) and how (``select``)."""

    cost: float | None = 1.0  # None: no budget promised (counted against the full compute)

    def at_layer(self, num_tokens: int, num_layers: int, budget: TokenBudget) -> int:
        return 0

    def count(self, state: OneShotState, n: int) -> int:
        """Tokens to keep at the reducing layer (default: all the budget affords from there on)."""
        return min(n, state.budget.max_constant())

    def before(self, state: OneShotState, x: LayerInput) -> None:
        """Called at the layers stepped before the reducing one."""

    @abstractmethod
    def select(self, state: OneShotState, x: LayerInput, k: int) -> Reduction:
        """Reduce the n tokens of ``x`` to at most ``k`` (0 <= k < n)."""

    def start(self, num_tokens: int, num_layers: int, sample: int = 0) -> OneShotState:
        budget = TokenBudget(1.0 if self.cost is None else self.cost, num_layers, num_tokens)
        return OneShotState(budget, self.at_layer(num_tokens, num_layers, budget), sample)

    def active(self, state: OneShotState) -> bool:
        return not state.done and state.at_layer < state.budget.num_layers

    def idle(self, state: OneShotState, num_tokens: int) -> None:
        state.budget.charge(num_tokens)

    def achieved_cost(self, state: OneShotState) -> float:
        return state.budget.achieved()

    def counts(self, state: OneShotState) -> list[int]:
        return list(state.budget.counts)

    def step(self, state: OneShotState, x: LayerInput) -> Reduction | None:
        n = x.hidden.shape[0]
        if state.done or x.layer < state.at_layer or n == 0:
            if not state.done and n:
                self.before(state, x)
            state.budget.charge(n)
            return None
        state.done = True
        k = self.count(state, n)
        if k >= n:
            state.budget.charge(n)
            return None
        reduction = self.select(state, x, max(0, k))
        if reduction.count is None:  # one host read, for methods that cannot say
            reduction.count = int(reduction.keep.sum())
        state.budget.charge(reduction.count)
        state.layer = x.layer
        return reduction
