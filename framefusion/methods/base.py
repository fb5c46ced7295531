"""The interface every token-reduction method implements (pure torch, no transformers import).

The engine calls a method once per decoder layer and sample during prefill, with the vision tokens
that are still present; the method answers which of them stay and, for merges, their new values.
Per-call state lives in the object returned by ``start`` so one method object serves any number
of concurrent calls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import torch

__all__ = ["LayerInput", "Reduction", "ReductionMethod"]


@dataclass
class LayerInput:
    """The vision tokens of one sample at the input of one decoder layer (sequence order)."""

    layer: int
    hidden: torch.Tensor  # (n, d) hidden states
    frame: torch.Tensor  # (n,) frame index within its video
    patch: torch.Tensor  # (n,) group key: same patch position of the same video
    importance: Callable[[], torch.Tensor]  # lazily: (n,) attention the last query pays each token


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


class ReductionMethod(ABC):
    """A token-reduction method applied layer by layer inside the LLM."""

    name: str = "method"

    @abstractmethod
    def start(self, num_tokens: int, num_layers: int, sample: int = 0) -> Any:
        """Fresh state for one prefill of sample ``sample`` (batch row) with ``num_tokens`` vision tokens."""

    @abstractmethod
    def step(self, state: Any, x: LayerInput) -> Reduction | None:
        """Decide at one layer; None leaves the tokens as they are. Must charge the budget."""

    @abstractmethod
    def active(self, state: Any) -> bool:
        """Whether the method may still change tokens."""

    @abstractmethod
    def idle(self, state: Any, num_tokens: int) -> None:
        """Record a layer passed with ``num_tokens`` tokens and no step call: once ``active`` is
        False, or before the model's first reducible layer."""

    @abstractmethod
    def achieved_cost(self, state: Any) -> float:
        """Share of the unreduced vision-token compute used so far."""

    @abstractmethod
    def counts(self, state: Any) -> list[int]:
        """Vision tokens present at each layer so far."""
