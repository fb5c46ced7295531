"""The interface every token-reduction method implements (pure torch, no transformers import).

A method is a frozen dataclass that is its own validated config (``FrameFusion(cost=0.3)``). The
engine calls it once per decoder layer and sample during prefill, with the vision tokens that are
still present and a read-only view of the sample's budget; the method answers only which of them
stay and, for merges, their new values. It never charges the budget nor reports its own cost: the
engine charges the books from the token counts it sees (``framefusion.ledger``), refuses any
decision that would overspend, and measures the achieved cost itself.

Per-call state lives in the object returned by ``start`` so one method object serves any number
of concurrent calls.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..algorithm import BudgetView

__all__ = ["LayerInput", "Reduction", "ReductionMethod"]


@dataclass(frozen=True)
class LayerInput:
    """The vision tokens of one sample at the input of one decoder layer (sequence order)."""

    layer: int
    hidden: torch.Tensor  # (n, d) hidden states
    frame: torch.Tensor  # (n,) frame index within its video
    patch: torch.Tensor  # (n,) group key: same patch position of the same video
    importance: Callable[[], torch.Tensor]  # lazily: (n,) attention the last query pays each token
    budget: BudgetView | None = None  # the sample's budget as this method sees it (read-only)


@dataclass
class Reduction:
    """What a method does to the tokens of a LayerInput."""

    kind: str  # "merge" or "prune"
    keep: torch.Tensor  # (n,) bool: tokens that stay, in order
    merged: torch.Tensor | None = None  # (keep.sum(), d) new values of the kept tokens, or None
    root: torch.Tensor | None = None  # (n,) for merges: index of the token each one joined
    # keep.sum(), when the method knows it on the host (it decided it). Given, the engine re-packs
    # the tokens without reading anything back from the device; None costs one host read.
    count: int | None = None
    # For merges whose value is not the plain mean of the group (FastVID): the weight of the kept
    # token itself, the joined ones sharing the rest (``algorithm.anchor_means``); root -1 drops.
    anchor_weight: float | None = None


class ReductionMethod(ABC):
    """A token-reduction method applied layer by layer inside the LLM.

    Subclasses are frozen dataclasses whose fields are their settings; ``cost`` is the budget
    (None: no budget promised, the forward is measured against the unreduced compute).
    """

    name = "method"
    cost: float | None = None

    def start(self, budget: BudgetView, sample: int = 0) -> Any:
        """Fresh per-call state for one prefill of batch row ``sample``; ``budget`` stays live
        (it shows every later charge), so a method may keep it. Default: no state."""
        return None

    @abstractmethod
    def step(self, state: Any, x: LayerInput) -> Reduction | None:
        """Decide at layer ``x.layer``; None leaves the tokens as they are."""

    def active(self, state: Any) -> bool:
        """Whether the method may still change tokens (False: the engine stops calling ``step``)."""
        return True

    def with_cost(self, cost: float) -> "ReductionMethod":
        """The same method at budget ``cost`` (for sweeps; validated like any other)."""
        return dataclasses.replace(self, cost=cost)


def set_fields(method: ReductionMethod, **values: Any) -> None:
    """Store validated values on a frozen dataclass (from its ``__post_init__``)."""
    for name, value in values.items():
        object.__setattr__(method, name, value)
