"""The engine's books for one sample of one prefill: the method's state and the budget it spends.

The method decides; the ledger charges. At every decoder layer the sample runs with some number of
vision tokens, and the ledger charges exactly that (after the layer's reduction, if any), so the
per-layer counts and the achieved cost in the report are measured, not declared. A method whose
decision would leave more tokens than its budget has left is refused at that layer, before the
layer runs: no method can overspend.
"""

from __future__ import annotations

from typing import Any, Callable

from .algorithm import TokenBudget
from .algorithm.budget import ROUNDING
from .methods.base import LayerInput, Reduction, ReductionMethod

__all__ = ["BudgetExceededError", "Ledger"]


class BudgetExceededError(RuntimeError):
    """A method decided to keep more tokens than its budget affords (a bug in the method)."""


class Ledger:
    """One sample's books: ``decide`` asks the method, ``charge`` records a layer's token count."""

    def __init__(
        self, method: ReductionMethod, num_tokens: int, num_layers: int, sample: int = 0,
        price: Callable[[int], float] | None = None,
    ):  # fmt: skip
        self.method = method
        cost = 1.0 if method.cost is None else method.cost
        self.books = TokenBudget(cost, num_layers, num_tokens, price)
        self.view = self.books.view()
        self.state: Any = method.start(self.view, sample)

    def active(self) -> bool:
        return self.method.active(self.state)

    def decide(self, layer: int, hidden, frame, patch, importance) -> Reduction | None:
        """The method's decision at ``layer`` for these (n,) tokens (``hidden`` (n, d))."""
        return self.method.step(self.state, LayerInput(layer, hidden, frame, patch, importance, self.view))

    def charge(self, count: int) -> None:
        """The layer being decided runs with ``count`` vision tokens."""
        books = self.books
        price = books.price_of(count)
        if self.method.cost is not None and price > books.remaining() + ROUNDING * books.num_tokens * books.num_layers:
            unit, priced = ("token-layers", "") if books.price is None else ("priced token-layers", f" (price {price:.1f})")
            raise BudgetExceededError(
                f"{self.method.name} left {count} video tokens{priced} at layer {books.layer}, but its "
                f"budget (cost={self.method.cost} of {books.num_layers} layers x {books.num_tokens} tokens) has "
                f"{books.remaining():.1f} {unit} left; a method may not decide more than it affords"
            )
        books.charge(count)

    @property
    def counts(self) -> list[int]:
        """Vision tokens present at each layer so far."""
        return list(self.books.counts)

    def achieved_cost(self) -> float:
        return self.books.achieved()
