"""Compute budget in token-layers (pure Python).

``cost`` is the share of the unreduced vision-token compute that a forward may use:
``sum over all decoder layers of (vision tokens present at that layer) / (layers * tokens)``.
The budget is kept as whole token-layers so that every decision can be checked exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["TokenBudget"]


@dataclass
class TokenBudget:
    cost: float
    num_layers: int
    num_tokens: int
    counts: list[int] = field(default_factory=list)  # tokens present at each layer so far

    @property
    def total(self) -> float:
        """Token-layers allowed over the whole forward."""
        return self.cost * self.num_layers * self.num_tokens

    @property
    def layer(self) -> int:
        """Index of the next layer to be charged."""
        return len(self.counts)

    def remaining(self) -> float:
        """Token-layers left for the layers from ``self.layer`` on."""
        return self.total - sum(self.counts)

    def max_constant(self) -> int:
        """Largest token count that, kept constant from the next layer to the last, fits the budget."""
        left = self.num_layers - self.layer
        if left <= 0:
            return 0
        return max(0, math.floor(self.remaining() / left))

    def affords(self, count: int, layers: int = 1) -> bool:
        """Whether ``count`` tokens at the next ``layers`` layers fit what is left."""
        return count * layers <= self.remaining()

    def charge(self, count: int) -> None:
        """Record that the next layer runs with ``count`` tokens."""
        self.counts.append(int(count))

    def achieved(self) -> float:
        """Share of the unreduced compute used (layers not yet charged count as unreduced)."""
        if self.num_tokens == 0 or self.num_layers == 0:
            return 1.0
        charged = sum(self.counts) + self.num_tokens * (self.num_layers - self.layer)
        return charged / (self.num_layers * self.num_tokens)
