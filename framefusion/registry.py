"""One registry of methods: the names that ``framefusion eval --methods``, ``framefusion bench
--baselines``, ``compare`` sweeps and the lmms-eval integration (``framefusion_method=``) accept.

A new method is its file in ``framefusion/methods/`` (a frozen dataclass with a validated
``cost``) plus one line in ``METHODS`` below; every command and integration then knows it by name.

Names stack with ``+``: ``evs@0.5+framefusion`` is ``Stack(EVS(cost=0.5), FrameFusion(cost=c))``,
every stage but the last with its own cost after ``@`` and the last at the sweep's cost ``c``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from .methods import EVS, FastV, FastVID, FrameFusion, HoliTom, InputMerge, RandomPrune, ReductionMethod, Stack, UniformPrune, VidCom2

__all__ = ["METHODS", "MethodChoices", "MethodEntry", "check_method_name", "config_for", "method_names"]

#: FrameFusion's own settings (CLI ``--similarity-threshold``/``--ratio-threshold``, lmms-eval
#: ``framefusion_similarity_threshold``/``framefusion_ratio_threshold``)
FRAMEFUSION_OPTIONS = ("similarity_threshold", "ratio_threshold")

# the cost names are checked at: below every stage's own cost, so any valid stack passes
_SMALLEST = 1e-6


@dataclass(frozen=True)
class MethodEntry:
    method: type[ReductionMethod]  # the class; its instances are the configs
    summary: str  # one line, for --help and the docs
    options: tuple[str, ...] = ()  # settings besides cost that the CLI and lmms-eval may pass on
    fixed: dict = field(default_factory=dict)  # settings that make this entry (merge-only: prune=False)

    def make(self, cost: float, **options: Any) -> ReductionMethod:
        """The method at ``cost``; ``options`` it does not take are ignored."""
        return self.method(cost=cost, **self.fixed, **{k: v for k, v in options.items() if k in self.options})


METHODS: dict[str, MethodEntry] = {
    "framefusion": MethodEntry(FrameFusion, "merge, then prune (arXiv 2501.01986)", FRAMEFUSION_OPTIONS),
    "merge-only": MethodEntry(FrameFusion, "FrameFusion's merging alone", FRAMEFUSION_OPTIONS, {"prune": False}),
    "prune-only": MethodEntry(FrameFusion, "FrameFusion's pruning alone", FRAMEFUSION_OPTIONS, {"merge": False}),
    "fastv": MethodEntry(FastV, "prune by attention after layer 2 (arXiv 2403.06764)"),
    "evs": MethodEntry(EVS, "drop the tokens that changed least since the previous frame (arXiv 2510.14624)"),
    "vidcom2": MethodEntry(VidCom2, "per-frame budgets by frame uniqueness, then unique tokens (arXiv 2505.14454)"),
    "fastvid": MethodEntry(FastVID, "temporal segments, then density-peak pruning and merging (arXiv 2503.11187)"),
    "holitom": MethodEntry(HoliTom, "temporal segments and merging, spatial merging at the input, then a merge at layer 18 (arXiv 2505.21334)"),
    "input-merge": MethodEntry(InputMerge, "DyCoke-style temporal merging at the input"),
    "random": MethodEntry(RandomPrune, "random pruning at the input (a floor)"),
    "uniform": MethodEntry(UniformPrune, "every (N/k)-th token (a floor)"),
    "uniform-frames": MethodEntry(UniformPrune, "evenly spaced whole frames (a floor)", fixed={"unit": "frame"}),
}


def method_names() -> list[str]:
    return list(METHODS)


def _entry(name: str) -> MethodEntry:
    entry = METHODS.get(name)
    if entry is None:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)} (stack them with +, e.g. evs@0.5+framefusion)")
    return entry


def _stage_cost(stage: str, full_name: str) -> tuple[str, float]:
    name, at, cost = stage.partition("@")
    if not at:
        raise ValueError(
            f"stage {name!r} of {full_name!r} needs its own cost: every stage but the last is written NAME@COST, "
            f"e.g. {name}@0.5+{full_name.split('+')[-1]}"
        )
    try:
        return name, float(cost)
    except ValueError:
        raise ValueError(f"the cost after '@' in {stage!r} must be a number, got {cost!r}") from None


def config_for(name: str, cost: float = 0.3, **options: Any) -> ReductionMethod:
    """The method called ``name`` at ``cost``. ``options`` a method does not take (e.g. FrameFusion's
    thresholds for FastV) are ignored, so one set of settings serves a whole sweep. ``a@c1+b`` is a
    ``Stack`` of ``a`` at ``c1`` and ``b`` at ``cost``."""
    *earlier, last = name.split("+")
    stages = [_entry(n).make(c, **options) for n, c in (_stage_cost(s, name) for s in earlier)]
    method = _entry(last).make(cost, **options)
    return Stack(*stages, method) if stages else method


def check_method_name(name: str) -> str:
    """``name`` if ``config_for`` takes it, for argparse's ``type=``: else an ArgumentTypeError (a
    ValueError) whose message says why, which argparse prints as it is."""
    try:
        config_for(name, _SMALLEST)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return name


class MethodChoices(list):
    """The registered names, for argparse's ``choices=``: lists (and ``--help`` shows) the names,
    and also admits stacks of them (``evs@0.5+framefusion``)."""

    def __init__(self, names=None):
        super().__init__(method_names() if names is None else names)

    def __contains__(self, name: object) -> bool:
        if list.__contains__(self, name):
            return True
        if not isinstance(name, str) or "+" not in name:
            return False
        try:
            config_for(name, _SMALLEST)  # refuses any stage that is not a registered name
        except ValueError:
            return False
        return True
