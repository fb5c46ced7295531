"""Typed, validated configuration: one frozen dataclass per method, each with ``make_method()``.

Every config whose method promises a budget has ``cost``: the share of the unreduced vision-token
compute of the LLM forward, summed over all its decoder layers, that the reduced forward may use,
in (0, 1] (0.3 keeps 30%). The report's achieved cost never exceeds it, except on models whose
first layers cannot be reduced (then no method can go below their share).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["FastVConfig", "FrameFusionConfig", "InputMergeConfig", "RandomPruneConfig", "UniformPruneConfig"]


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got NaN")
    return value


def _cost(value: object) -> float:
    cost = _number("cost", value)
    if not 0.0 < cost <= 1.0:
        raise ValueError(f"cost must be in (0, 1] (share of the vision-token compute kept), got {cost}")
    return cost


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def _integer(name: str, value: object, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer ({what}), got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum} ({what}), got {value}")
    return int(value)


@dataclass(frozen=True)
class FrameFusionConfig:
    """FrameFusion settings (Fu et al., arXiv 2501.01986).

    cost: budget, see the module docstring; in (0, 1].
    similarity_threshold: cosine similarity at or above which a token merges into the token at
        the same patch position of the previous frame; in [-1, 1], or above 1 to turn merging off.
    ratio_threshold: merging repeats at the next layer while at least this share of the vision
        tokens was similar; in [0, 1].
    merge, prune: the ablations; at least one must be True.
        - ``prune=False`` (merge-only, similarity alone): where FrameFusion would prune, it merges
          the most similar tokens instead, down to the same count; it fills the budget like
          FrameFusion and never exceeds it. (Only when the budget affords no vision token at all
          are they all dropped.) With ``cost=1.0`` it is the threshold merging stage alone.
        - ``merge=False`` (prune-only, importance alone): prunes once, at the first layer that may
          be reduced, to the largest count the budget affords at every remaining layer; the
          thresholds are then unused.
    """

    cost: float = 0.3
    similarity_threshold: float = 0.6
    ratio_threshold: float = 0.1
    merge: bool = True
    prune: bool = True

    def __post_init__(self) -> None:
        cost = _cost(self.cost)
        sim = _number("similarity_threshold", self.similarity_threshold)
        if math.isinf(sim) or sim < -1.0:
            raise ValueError(
                f"similarity_threshold must be a finite cosine similarity >= -1 (above 1 turns merging off), got {sim}"
            )
        ratio = _number("ratio_threshold", self.ratio_threshold)
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio_threshold must be in [0, 1] (share of similar tokens), got {ratio}")
        merge = _flag("merge", self.merge)
        prune = _flag("prune", self.prune)
        if not (merge or prune):
            raise ValueError(
                "merge and prune cannot both be False (nothing would be reduced); "
                "allowed: both True (FrameFusion), prune=False (merge-only), merge=False (prune-only)"
            )
        object.__setattr__(self, "cost", cost)
        object.__setattr__(self, "similarity_threshold", sim)
        object.__setattr__(self, "ratio_threshold", ratio)

    def make_method(self):
        from .methods import FrameFusion

        return FrameFusion(
            self.cost, self.similarity_threshold, self.ratio_threshold, merge=self.merge, prune=self.prune
        )


@dataclass(frozen=True)
class FastVConfig:
    """FastV settings (Chen et al., arXiv 2403.06764): every token through the first ``layer``
    layers, then only the ones the last query attended to most (see ``methods.fastv``).

    cost: budget, see the module docstring; in (0, 1]. The kept count is the largest k with
        ``layer*N + (L-layer)*k <= cost*L*N``; if ``cost < layer/L`` pruning moves to the latest
        earlier layer that fits, so the budget always holds. Default 0.3 when ``ratio`` is not given.
    layer: K, the number of leading layers that see every vision token; an integer >= 0
        (FastV's default is 2).
    ratio: FastV's own R instead of ``cost``: the share of vision tokens pruned at layer K,
        in [0, 1]; no budget is then promised (the report still gives the achieved cost).
    """

    cost: float | None = None
    layer: int = 2
    ratio: float | None = None

    def __post_init__(self) -> None:
        layer = _integer("layer", self.layer, 0, "number of leading layers that see every token")
        if self.cost is not None and self.ratio is not None:
            raise ValueError(
                f"give FastVConfig either cost (budget) or ratio (FastV's share pruned), not both; "
                f"got cost={self.cost!r}, ratio={self.ratio!r}"
            )
        if self.ratio is not None:
            ratio = _number("ratio", self.ratio)
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"ratio must be in [0, 1] (share of vision tokens pruned at layer K), got {ratio}")
            object.__setattr__(self, "ratio", ratio)
        else:
            object.__setattr__(self, "cost", 0.3 if self.cost is None else _cost(self.cost))
        object.__setattr__(self, "layer", layer)

    def make_method(self):
        from .methods import FastV

        return FastV(cost=self.cost, layer=self.layer, ratio=self.ratio)


@dataclass(frozen=True)
class EVSConfig:
    """EVS settings (arXiv 2510.14624): drop the video tokens that changed least since the previous
    frame, once, at the input (see ``methods.evs``).

    cost: budget, see the module docstring; in (0, 1]. Default 0.3 when ``rate`` is not given.
    rate: EVS's own pruning rate q instead of ``cost``: the share of video tokens dropped, in
        [0, 1); the same as ``cost = 1 - rate`` (the count is constant from the input on).
    """

    cost: float | None = None
    rate: float | None = None

    def __post_init__(self) -> None:
        if self.cost is not None and self.rate is not None:
            raise ValueError(f"give EVSConfig either cost or rate (= 1 - cost), not both; got cost={self.cost!r}, rate={self.rate!r}")
        if self.rate is not None:
            rate = _number("rate", self.rate)
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"rate must be in [0, 1) (share of video tokens dropped), got {rate}")
            object.__setattr__(self, "rate", None)
            object.__setattr__(self, "cost", _cost(1.0 - rate))
        else:
            object.__setattr__(self, "cost", 0.3 if self.cost is None else _cost(self.cost))

    def make_method(self):
        from .methods import EVS

        return EVS(self.cost)


@dataclass(frozen=True)
class InputMergeConfig:
    """Input-level temporal merging (DyCoke's temporal stage, Tao et al., arXiv 2411.15024): merge
    similar adjacent-frame tokens once, on the vision features before the first layer, to the
    budget; needs no attention weights (see ``methods.input_merge``).

    cost: budget, see the module docstring; in (0, 1]. Filled to whole tokens.
    """

    cost: float = 0.3

    def __post_init__(self) -> None:
        object.__setattr__(self, "cost", _cost(self.cost))

    def make_method(self):
        from .methods import InputMerge

        return InputMerge(self.cost)


@dataclass(frozen=True)
class RandomPruneConfig:
    """Random pruning before the first layer, a floor (see ``methods.baselines``).

    cost: budget, see the module docstring; in (0, 1]. Filled to whole tokens.
    seed: integer >= 0; the draw depends only on it and the number of vision tokens.
    """

    cost: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "cost", _cost(self.cost))
        object.__setattr__(self, "seed", _integer("seed", self.seed, 0, "random seed"))

    def make_method(self):
        from .methods import RandomPrune

        return RandomPrune(self.cost, self.seed)


UNITS = ("token", "frame")


@dataclass(frozen=True)
class UniformPruneConfig:
    """Uniform pruning before the first layer, a floor (see ``methods.baselines``).

    cost: budget, see the module docstring; in (0, 1].
    unit: "token" keeps every (N/k)-th token (fills the budget to whole tokens); "frame" keeps
        evenly spaced whole frames (fills it to whole frames, so it may use less).
    """

    cost: float = 0.3
    unit: str = "token"

    def __post_init__(self) -> None:
        object.__setattr__(self, "cost", _cost(self.cost))
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {self.unit!r}")

    def make_method(self):
        from .methods import UniformPrune

        return UniformPrune(self.cost, self.unit)
