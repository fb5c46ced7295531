"""Content-blind floors: random and uniform pruning at the input of the first layer.

Any method that looks at the tokens should beat these at the same budget. Both prune once, at
the first layer the engine calls them for, to ``k``, the largest count the budget affords at every
remaining layer (uniform frame pruning: whole frames with at most ``k`` tokens in all).

- Random: ``k`` tokens drawn uniformly without replacement, seeded by ``(seed, number of vision
  tokens)``: deterministic, and a sample gets the same draw alone or anywhere in a batch.
- Uniform, per token: every (N/k)-th token in sequence order (token ``floor((2i+1)N/2k)``).
- Uniform, per frame: evenly spaced whole frames, as temporal subsampling of the video does
  (frame ``floor((2j+1)F/2f)`` of F frames, f as large as the budget allows).

No paper introduces these two: they are the content-blind floors that the papers of the other
methods (FrameFusion, arXiv 2501.01986; FastV, arXiv 2403.06764; DyCoke, arXiv 2411.15024) are
measured against, and uniform frame subsampling is how video LLMs meet a token limit anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..algorithm import random_keep, uniform_frame_keep, uniform_token_keep
from .base import LayerInput, Reduction, set_fields
from .checks import check_cost, check_integer
from .oneshot import OneShotMethod, OneShotState

__all__ = ["RandomPrune", "UniformPrune"]

UNITS = ("token", "frame")


@dataclass(frozen=True)
class RandomPrune(OneShotMethod):
    """Random pruning before the first layer, a floor.

    cost: budget, in (0, 1]. Filled to whole tokens.
    seed: integer >= 0; the draw depends only on it and the number of vision tokens.
    """

    cost: float = 0.3
    seed: int = 0

    name = "random"

    def __post_init__(self) -> None:
        set_fields(self, cost=check_cost(self.cost), seed=check_integer("seed", self.seed, 0, "random seed"))

    def select(self, state: OneShotState, x: LayerInput, k: int) -> Reduction:
        return Reduction("prune", random_keep(x.hidden.shape[0], k, self.seed, x.hidden.device), count=k)


@dataclass(frozen=True)
class UniformPrune(OneShotMethod):
    """Uniform pruning before the first layer, a floor.

    cost: budget, in (0, 1].
    unit: "token" keeps every (N/k)-th token (fills the budget to whole tokens); "frame" keeps
        evenly spaced whole frames (fills it to whole frames, so it may use less).
    """

    cost: float = 0.3
    unit: str = "token"

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {self.unit!r}")
        set_fields(self, cost=check_cost(self.cost))

    @property
    def name(self) -> str:
        return "uniform" if self.unit == "token" else "uniform-frames"

    def select(self, state: OneShotState, x: LayerInput, k: int) -> Reduction:
        if self.unit == "frame":
            return Reduction("prune", uniform_frame_keep(x.frame, k))
        return Reduction("prune", uniform_token_keep(x.hidden.shape[0], k, x.hidden.device), count=k)
