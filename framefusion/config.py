"""Typed, validated configuration."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["FrameFusionConfig"]


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got NaN")
    return value


@dataclass(frozen=True)
class FrameFusionConfig:
    """FrameFusion settings.

    cost: share of the unreduced vision-token compute of the LLM forward, summed over all its
        decoder layers, that the reduced forward may use; in (0, 1]. 0.3 keeps 30%.
    similarity_threshold: cosine similarity at or above which a token merges into the token at
        the same patch position of the previous frame; in [-1, 1], or above 1 to turn merging off.
    ratio_threshold: merging repeats at the next layer while at least this share of the vision
        tokens was similar; in [0, 1].
    """

    cost: float = 0.3
    similarity_threshold: float = 0.6
    ratio_threshold: float = 0.1

    def __post_init__(self) -> None:
        cost = _number("cost", self.cost)
        if not 0.0 < cost <= 1.0:
            raise ValueError(f"cost must be in (0, 1] (share of the vision-token compute kept), got {cost}")
        sim = _number("similarity_threshold", self.similarity_threshold)
        if math.isinf(sim) or sim < -1.0:
            raise ValueError(
                f"similarity_threshold must be a finite cosine similarity >= -1 (above 1 turns merging off), got {sim}"
            )
        ratio = _number("ratio_threshold", self.ratio_threshold)
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio_threshold must be in [0, 1] (share of similar tokens), got {ratio}")
        object.__setattr__(self, "cost", cost)
        object.__setattr__(self, "similarity_threshold", sim)
        object.__setattr__(self, "ratio_threshold", ratio)

    def make_method(self):
        from .methods import FrameFusion

        return FrameFusion(self.cost, self.similarity_threshold, self.ratio_threshold)
