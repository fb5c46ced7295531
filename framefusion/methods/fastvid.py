"""FastVID: dynamic temporal segments, then density-based pruning and merging within each.

Shen et al., "FastVID: Dynamic Density Pruning for Fast Video Large Language Models", NeurIPS 2025,
arXiv 2503.11187.

Once, on the vision features at the input of the language model (the first layer that may be
reduced), the video is cut into segments where adjacent frames stop resembling each other; in
every frame the most salient tokens stay, and in every segment's anchor frames the density peaks
stay too, each absorbing the segment's other tokens most like it (``beta * anchor + (1 - beta) *
mean(joined)``); ``k`` tokens in all (``algorithm.fastvid_reduce``: the formulas, the paper's
constants and what this implementation simplifies). ``k`` is the largest count the budget affords
at every layer. Merged values follow FastVID's anchor rule, so the decision carries
``anchor_weight = beta`` and a replay recomputes the same values.

Salience. The paper ranks a frame's tokens by the vision encoder's [CLS] attention, which the
language model never sees. ``salience="attention"`` (the default) uses the attention the last
prompt token pays each token at the reducing layer (what FastV ranks by, available for every
family); ``salience="features"`` the paper's fallback for [CLS]-free encoders computed from the
features alone (a pseudo-[CLS] query: the frame's mean token, identity projections). Measured on the
shipped model (500 questions), the feature score picks the frame's most typical tokens, the
background: 0.29 / 0.66 / 0.82 at cost 0.1 / 0.2 / 0.3 against 0.86 / 0.98 / 0.99 with attention.

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

SALIENCE = ("attention", "features")


@dataclass(frozen=True)
class FastVID(OneShotMethod):
    """cost: budget, in (0, 1]; default 0.3 when ``retention`` is not given.
    retention: FastVID's r instead of ``cost`` (share of video tokens kept, in (0, 1]).
    salience: "attention" (the last prompt token's attention at the reducing layer) or "features"
        (the pseudo-[CLS] score of the features); see the module docstring.
    The paper's constants (segments ``c``, threshold ``tau``, DTM share ``d``, anchor stride ``p``,
    anchor weight ``beta``, ``knn``) are ``algorithm.FASTVID_DEFAULTS``."""

    cost: float | None = None
    retention: float | None = None
    salience: str = "attention"

    name = "fastvid"

    def __post_init__(self) -> None:
        cost = cost_or_knob("FastVID", self.cost, "retention", self.retention, lambda r: r, "(0, 1]", "cost = retention: the share of video tokens kept")
        if self.salience not in SALIENCE:
            raise ValueError(f"salience must be one of {SALIENCE}, got {self.salience!r}")
        set_fields(self, cost=cost, retention=None)

    def select(self, state: OneShotState, x: LayerInput, k: int) -> Reduction:
        salience = x.importance().to(x.hidden.device) if self.salience == "attention" and k > 0 else None
        keep, merged, root = fastvid_reduce(x.hidden, frame_runs(x.frame), k, salience=salience, **FASTVID_DEFAULTS)
        if merged is None or k == 0:
            return Reduction("prune", keep, count=k)
        return Reduction("merge", keep, merged, root, k, anchor_weight=FASTVID_DEFAULTS["beta"])
