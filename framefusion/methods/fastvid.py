"""FastVID: dynamic temporal segments, then density-based pruning and merging within each.

Shen et al., "FastVID: Dynamic Density Pruning for Fast Video Large Language Models", NeurIPS 2025,
arXiv 2503.11187.

Once, on the vision features at the input of the language model (the first layer that may be
reduced), the video is cut into segments where adjacent frames stop resembling each other; in
every frame the most salient tokens stay, and in every segment's anchor frames the density peaks
stay too, each absorbing the segment's other tokens most like it (``beta * anchor + (1 - beta) *
mean(joined)``); ``k`` tokens in all (``algorithm.fastvid_reduce``: the formulas, the paper's
constants and what this implementation simplifies: salience is the pseudo-[CLS] score of the
features, as the paper does for encoders without [CLS]). ``k`` is the largest count the budget
affords at every layer. Merged values follow FastVID's anchor rule, so the decision carries
``anchor_weight = beta`` and a replay recomputes the same values.

FastVID's own knob is the retention ratio r (share of video tokens kept); at the input it is the
budget: ``FastVID(retention=r)`` is ``cost = r``. Costs one host read per sample (the frame sizes).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..algorithm import FASTVID_DEFAULTS, fastvid_reduce, frame_runs
from .base import LayerInput, Reduction, set_fields
from .checks import cost_or_knob
from .oneshot import OneShotMethod, OneShotState

__all__ = ["FastVID"]


@dataclass(frozen=True)
class FastVID(OneShotMethod):
    """cost: budget, in (0, 1]; default 0.3 when ``retention`` is not given.
    retention: FastVID's r instead of ``cost`` (share of video tokens kept, in (0, 1]).
    The paper's constants (segments ``c``, threshold ``tau``, DTM share ``d``, anchor stride ``p``,
    anchor weight ``beta``, ``knn``) are ``algorithm.FASTVID_DEFAULTS``."""

    cost: float | None = None
    retention: float | None = None

    name = "fastvid"

    def __post_init__(self) -> None:
        cost = cost_or_knob("FastVID", self.cost, "retention", self.retention, lambda r: r, "(0, 1]", "cost = retention: the share of video tokens kept")
        set_fields(self, cost=cost, retention=None)

    def select(self, state: OneShotState, x: LayerInput, k: int) -> Reduction:
        keep, merged, root = fastvid_reduce(x.hidden, frame_runs(x.frame), k, **FASTVID_DEFAULTS)
        if merged is None or k == 0:
            return Reduction("prune", keep, count=k)
        return Reduction("merge", keep, merged, root, k, anchor_weight=FASTVID_DEFAULTS["beta"])
