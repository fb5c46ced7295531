"""One registry of methods: the names that ``framefusion eval --methods``, ``framefusion bench
--baselines``, ``compare`` sweeps and the lmms-eval integration (``framefusion_method=``) accept.

A new method is its config class (``config.py``, with ``cost`` and ``make_method()``) plus one
line in ``METHODS`` below; every command and integration then knows it by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .config import EVSConfig, FastVConfig, FrameFusionConfig, InputMergeConfig, RandomPruneConfig, UniformPruneConfig

__all__ = ["METHODS", "MethodEntry", "config_for", "method_names"]

#: FrameFusion's own settings, taken by the entries that list them in ``options``
FRAMEFUSION_OPTIONS = ("similarity_threshold", "ratio_threshold")


@dataclass(frozen=True)
class MethodEntry:
    make: Callable[..., Any]  # (cost, **options) -> a config
    summary: str  # one line, for --help and the docs
    options: tuple[str, ...] = ()  # settings besides cost that ``make`` takes


METHODS: dict[str, MethodEntry] = {
    "framefusion": MethodEntry(
        lambda cost, **o: FrameFusionConfig(cost=cost, **o), "merge, then prune (arXiv 2501.01986)", FRAMEFUSION_OPTIONS
    ),
    "merge-only": MethodEntry(
        lambda cost, **o: FrameFusionConfig(cost=cost, prune=False, **o), "FrameFusion's merging alone", FRAMEFUSION_OPTIONS
    ),
    "prune-only": MethodEntry(
        lambda cost, **o: FrameFusionConfig(cost=cost, merge=False, **o), "FrameFusion's pruning alone", FRAMEFUSION_OPTIONS
    ),
    "fastv": MethodEntry(lambda cost: FastVConfig(cost=cost), "prune by attention after layer 2 (arXiv 2403.06764)"),
    "evs": MethodEntry(lambda cost: EVSConfig(cost=cost), "drop the tokens that changed least since the previous frame (arXiv 2510.14624)"),
    "input-merge": MethodEntry(lambda cost: InputMergeConfig(cost=cost), "DyCoke-style temporal merging at the input"),
    "random": MethodEntry(lambda cost: RandomPruneConfig(cost=cost), "random pruning at the input (a floor)"),
    "uniform": MethodEntry(lambda cost: UniformPruneConfig(cost=cost), "every (N/k)-th token (a floor)"),
    "uniform-frames": MethodEntry(
        lambda cost: UniformPruneConfig(cost=cost, unit="frame"), "evenly spaced whole frames (a floor)"
    ),
}


def method_names() -> list[str]:
    return list(METHODS)


def config_for(name: str, cost: float = 0.3, **options: Any) -> Any:
    """The config of method ``name`` at ``cost``. ``options`` the method does not take (e.g.
    FrameFusion's thresholds for FastV) are ignored, so one set of settings serves a whole sweep."""
    entry = METHODS.get(name)
    if entry is None:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return entry.make(cost, **{k: v for k, v in options.items() if k in entry.options})
