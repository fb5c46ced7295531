"""Stacking: methods applied one after another under one shared budget.

``Stack(EVS(cost=0.5), FrameFusion(cost=0.3))``: EVS reduces the vision features at the input to
half, then FrameFusion merges and prunes inside the LLM until the whole forward fits 0.3. Every
stage sees the same books (the tokens each layer actually ran with) measured against its own
cost; the stack's budget is the last stage's cost (a later stage whose cost is above an earlier
one's has no budget to meet and only does what its own rule does regardless, e.g. FrameFusion's
threshold merging: the forward stays under its budget, as in a sweep of ``evs@0.5+framefusion`` at
cost 0.7). A stage runs until it is done (``active`` turns False), and the next one takes over at the
following layer: one stage decides per layer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..algorithm import BudgetView
from .base import LayerInput, Reduction, ReductionMethod, set_fields

__all__ = ["Stack"]


@dataclass
class _StackState:
    states: list  # one per stage
    current: int = 0  # the stage deciding now


@dataclass(frozen=True, init=False)
class Stack(ReductionMethod):
    stages: tuple[ReductionMethod, ...]

    def __init__(self, *stages: ReductionMethod):
        set_fields(self, stages=tuple(stages))
        self.__post_init__()

    def __post_init__(self) -> None:
        if len(self.stages) < 2:
            raise ValueError(f"a Stack needs at least two methods, got {len(self.stages)}")
        for stage in self.stages:
            if not isinstance(stage, ReductionMethod):
                raise TypeError(f"every stage of a Stack must be a reduction method, got {stage!r}")

    @property
    def cost(self) -> float | None:
        return self.stages[-1].cost

    def with_cost(self, cost: float) -> "Stack":
        """The stack with its shared budget (the last stage's cost) at ``cost``."""
        return Stack(*self.stages[:-1], self.stages[-1].with_cost(cost))

    @property
    def name(self) -> str:
        return "+".join(stage.name for stage in self.stages)

    def start(self, budget: BudgetView, sample: int = 0) -> _StackState:
        return _StackState([s.start(budget.with_cost(s.cost), sample) for s in self.stages])

    def active(self, state: _StackState) -> bool:
        while state.current < len(self.stages):
            if self.stages[state.current].active(state.states[state.current]):
                return True
            state.current += 1
        return False

    def step(self, state: _StackState, x: LayerInput) -> Reduction | None:
        if not self.active(state):
            return None
        stage = self.stages[state.current]
        return stage.step(state.states[state.current], dataclasses.replace(x, budget=x.budget.with_cost(stage.cost)))
