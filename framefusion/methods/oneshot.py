"""Shared machinery of the methods that reduce once, at one layer, to a budgeted count.

The reduction happens at the first layer the engine calls ``step`` for at or after ``at_layer``
(later than asked only on models whose first layers must see every token). From then on the
count stays constant, so the budget check is exact: ``BudgetView.max_constant`` tokens.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

from ..algorithm import BudgetView
from .base import LayerInput, Reduction, ReductionMethod

__all__ = ["OneShotMethod", "OneShotState"]


@dataclass
class OneShotState:
    at_layer: int  # reduce at the first stepped layer >= this
    num_layers: int
    sample: int = 0
    done: bool = False
    layer: int | None = None  # where it reduced (None: not reduced)
    extra: Any = None  # method-specific (FastV: the previous layer's scores)


class OneShotMethod(ReductionMethod):
    """Reduce once; subclasses say where (``at_layer``), to how many (``count``) and how (``select``)."""

    def at_layer(self, budget: BudgetView) -> int:
        return 0

    def count(self, budget: BudgetView, n: int) -> int:
        """Tokens to keep at the reducing layer (default: all the budget affords from there on)."""
        return min(n, budget.max_constant())

    def before(self, state: OneShotState, x: LayerInput) -> None:
        """Called at the layers stepped before the reducing one."""

    @abstractmethod
    def select(self, state: OneShotState, x: LayerInput, k: int) -> Reduction:
        """Reduce the n tokens of ``x`` to at most ``k`` (0 <= k < n)."""

    def start(self, budget: BudgetView, sample: int = 0) -> OneShotState:
        return OneShotState(self.at_layer(budget), budget.num_layers, sample)

    def active(self, state: OneShotState) -> bool:
        return not state.done and state.at_layer < state.num_layers

    def step(self, state: OneShotState, x: LayerInput) -> Reduction | None:
        n = x.hidden.shape[0]
        if state.done or x.layer < state.at_layer or n == 0:
            if not state.done and n:
                self.before(state, x)
            return None
        state.done = True
        k = self.count(x.budget, n)
        if k >= n:
            return None
        reduction = self.select(state, x, max(0, k))
        state.layer = x.layer
        return reduction
