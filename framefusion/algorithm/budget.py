"""Compute budget in token-layers (pure Python).

``cost`` is the share of the unreduced vision-token compute that a forward may use:
``sum over all decoder layers of (vision tokens present at that layer) / (layers * tokens)``.
The budget is kept as whole token-layers so that every decision can be checked exactly.

A budget may instead be *priced*: ``price(n)`` is what one layer with ``n`` vision tokens costs,
scaled so that ``price(num_tokens) == num_tokens`` (so ``cost`` keeps its meaning at the ends, and a
layer that keeps every token costs the same in both units). ``framefusion.flops.FlopPrice`` prices a
layer in FLOPs (attention makes that convex in ``n``), which is what equal-compute planning needs:
with it, ``cost`` is a share of the vision tokens' prefill FLOPs, not of their token-layers.

Two objects: ``TokenBudget`` is the books (the engine charges it, once per layer, with the tokens
that layer runs with); ``BudgetView`` is what a method sees of them: the same counts, read-only,
measured against a cost (the method's own; in a stack, each stage's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["BudgetView", "ROUNDING", "TokenBudget"]

# token-layer slack, per token-layer of the whole budget, for float rounding of cost * layers * tokens
# and of prices: the ledger allows it when it charges, a priced view when it decides
ROUNDING = 1e-9


@dataclass
class TokenBudget:
    cost: float
    num_layers: int
    num_tokens: int
    price: Callable[[int], float] | None = None  # one layer's cost of n tokens; None: n (token-layers)
    counts: list[int] = field(default_factory=list)  # tokens present at each layer so far
    used: float = 0  # sum of price(count) over the layers charged so far

    def price_of(self, count: int) -> float:
        """What one layer with ``count`` vision tokens costs, in token-layer equivalents."""
        return count if self.price is None else self.price(count)

    def view(self, cost: float | None = None) -> "BudgetView":
        """Read-only view of these books against ``cost`` (default: the books' own)."""
        return BudgetView(self, self.cost if cost is None else cost)

    @property
    def total(self) -> float:
        """Token-layers allowed over the whole forward."""
        return self.view().total

    @property
    def layer(self) -> int:
        """Index of the next layer to be charged."""
        return len(self.counts)

    def remaining(self) -> float:
        return self.view().remaining()

    def max_constant(self) -> int:
        return self.view().max_constant()

    def affords(self, count: int, layers: int = 1) -> bool:
        return self.view().affords(count, layers)

    def charge(self, count: int) -> None:
        """Record that the next layer runs with ``count`` tokens."""
        self.counts.append(int(count))
        self.used += self.price_of(int(count))

    def achieved(self) -> float:
        """Share of the unreduced compute used (layers not yet charged count as unreduced)."""
        if self.num_tokens == 0 or self.num_layers == 0:
            return 1.0
        charged = self.used + self.num_tokens * (self.num_layers - self.layer)
        return charged / (self.num_layers * self.num_tokens)


class BudgetView:
    """What a method may read of a sample's budget: never charge it (the engine does, from the
    counts it sees). ``cost`` is the share this view measures against."""

    __slots__ = ("_books", "cost")

    def __init__(self, books: TokenBudget, cost: float):
        self._books = books
        self.cost = cost

    def with_cost(self, cost: float | None) -> "BudgetView":
        """The same books against another cost (a stage of a stack; None: the unreduced compute)."""
        return BudgetView(self._books, 1.0 if cost is None else cost)

    @property
    def num_layers(self) -> int:
        return self._books.num_layers

    @property
    def num_tokens(self) -> int:
        """Vision tokens of the sample before any reduction."""
        return self._books.num_tokens

    @property
    def layer(self) -> int:
        """Index of the layer being decided (the next to be charged)."""
        return self._books.layer

    @property
    def priced(self) -> bool:
        """Whether a layer's cost is not simply its token count (see ``price``)."""
        return self._books.price is not None

    def price(self, count: int) -> float:
        """What one layer with ``count`` vision tokens costs, in token-layer equivalents
        (``price(num_tokens) == num_tokens``; ``count`` itself unless the budget is priced)."""
        return self._books.price_of(count)

    @property
    def counts(self) -> tuple[int, ...]:
        """Tokens present at each layer charged so far."""
        return tuple(self._books.counts)

    @property
    def total(self) -> float:
        """Token-layers this view allows over the whole forward."""
        return self.cost * self.num_layers * self.num_tokens

    def remaining(self) -> float:
        """Token-layers left for the layers from ``layer`` on."""
        return self.total - self._books.used

    def max_constant(self) -> int:
        """Largest token count that, kept constant from ``layer`` to the last layer, fits."""
        left = self.num_layers - self.layer
        if left <= 0:
            return 0
        linear = max(0, math.floor(self.remaining() / left))
        if not self.priced:
            return linear
        # A convex price with price(0) = 0 and price(N) = N lies below n up to N and above it after,
        # so the answer lies between the linear count and N: bisect there.
        low, high = sorted((min(linear, self.num_tokens), max(linear, self.num_tokens)))
        if not self.affords(low, left):
            low = 0
        while low < high:  # invariant: low fits
            mid = (low + high + 1) // 2
            low, high = (mid, high) if self.affords(mid, left) else (low, mid - 1)
        return low

    def affords(self, count: int, layers: int = 1) -> bool:
        """Whether ``count`` tokens at the next ``layers`` layers (from ``layer`` on) fit."""
        if not self.priced:
            return count * layers <= self.remaining()
        # float prices: the same slack the ledger allows when it charges (a plan made to spend exactly
        # the remainder must afford it, not miss it by a rounding)
        return self.price(count) * layers <= self.remaining() + ROUNDING * self.num_tokens * self.num_layers
