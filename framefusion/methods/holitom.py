"""HoliTom: temporal and spatial merging at the LLM input, then one merge inside the LLM.

Shao et al., "HoliTom: Holistic Token Merging for Fast Video Large Language Models", NeurIPS 2025,
arXiv 2505.21334.

Two reductions per sample (the rules: ``algorithm.holitom``):

1. At the input (layer 0, or the first layer the engine calls the method at, layer ``a``): the
   frames are segmented so that the most tokens repeat across every frame of their segment at the
   same patch position; those merge into their first occurrence (temporal merging), and the rest
   is reduced to ``c`` tokens: the non-repeating tokens of each frame by salience, the merged ones
   of each segment by DPC-kNN clustering. Salience: the paper's vision-encoder attention is not
   visible to the LLM, so ``salience="attention"`` (default) uses the attention the last query
   token pays each vision token at this first layer (one extra attention row) and
   ``salience="features"`` FastVID's feature-only pseudo-[CLS] score. Measured on the shipped
   model (500 questions, cost 0.1 / 0.2 / 0.3): 0.94 / 0.99 / 0.99 with attention, 0.62 / 0.85 /
   0.96 with the feature score, which keeps each frame's most typical tokens (the background).
2. At layer ``K`` (``layer``): the ``floor(R n)`` tokens (``merge_ratio`` R) the last query token
   attended to least in layer ``K - 1`` (as FastV; layer K's own where K-1 was not stepped) merge
   into their most similar kept token (cosine), each group becoming its mean. ``K >= L`` (the
   model's layer count): no inner stage.

Budget (``cost``), as ``docs/peers_notes.md``'s ``cost = r (K + (L - K)(1 - R)) / L``: ``c`` is the
largest count with ``(K - a) c + (L - K) c2(c) <= remaining``, where ``c2(c) = c - floor(R c)``
and ``remaining`` the token-layers the budget has left at layer ``a`` (``BudgetView.remaining``;
a priced budget prices each term with ``BudgetView.price``);
without an inner stage ``c = BudgetView.max_constant()``. At layer K the method keeps
``min(n, max_constant())`` of the n tokens present: at least ``c2(c)`` as planned (the integer
rounding of c may leave room for a token or so more), fewer merges where the input stage kept fewer
than ``c`` (temporal merging alone went below it) or where ``c`` is capped at N (a large cost), and
none when the budget affords every token (so ``cost=1`` is the identity).
Every merge is a plain mean, so ``Replay`` reproduces the decisions.

Native knob: ``HoliTom(retention=r)`` is the paper's retention ratio (``RETAIN_RATIO``): the input
keeps ``round(r N)`` tokens and layer K merges ``floor(R n)`` as the paper does; the cost then
depends on the model's L, ``r (K + (L - K)(1 - R)) / L`` (e.g. r = 0.15 on a 28-layer LLM with
K = 18, R = 0.5: 0.123), so no budget is promised (``cost`` None; the report measures it).

Host reads: one at the input stage (the segmentation decides the count after temporal merging);
none at layer K.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from ..algorithm import BudgetView, HOLITOM_KNN, HOLITOM_TAU, holitom_inner_merge, holitom_input_reduce
from .base import LayerInput, Reduction, ReductionMethod, set_fields
from .checks import check_cost, check_integer, check_number

__all__ = ["HoliTom"]

INPUT, INNER, DONE = "input", "inner", "done"
SALIENCES = ("features", "attention")


@dataclass
class _State:
    num_layers: int
    stage: str = INPUT
    scores: Any = None  # the last query's attention at layer K - 1


@dataclass(frozen=True)
class HoliTom(ReductionMethod):
    """HoliTom settings (Shao et al., arXiv 2505.21334).

    cost: budget, in (0, 1]; default 0.3 when ``retention`` is not given.
    retention: the paper's retention ratio r instead of ``cost`` (share of video tokens kept at the
        input, in (0, 1]); no budget is then promised (module docstring).
    layer: K, the decoder layer at whose input the inner merge happens; an int >= 1 (the paper's
        LLaVA-OneVision-7B setting: 18 of 28). ``K >= L``: no inner stage.
    merge_ratio: R, the share of the vision tokens present at layer K merged into the others, in
        [0, 1) (paper: 0.5).
    tau: cosine similarity above which a token repeats its predecessor at the same patch position
        (temporal merging), in [-1, 1] (paper setting 0.8).
    knn: neighbours of the DPC-kNN density, an int >= 1 (7).
    salience: how the non-repeating tokens are ranked at the input: "attention" (the last query's
        attention at the first layer) or "features" (FastVID's pseudo-[CLS] score of the
        features); the paper's vision-encoder attention is not available.
    """

    cost: float | None = None
    retention: float | None = None
    layer: int = 18
    merge_ratio: float = 0.5
    tau: float = HOLITOM_TAU
    knn: int = HOLITOM_KNN
    salience: str = "attention"

    name = "holitom"

    def __post_init__(self) -> None:
        layer = check_integer("layer", self.layer, 1, "the decoder layer of the inner merge")
        knn = check_integer("knn", self.knn, 1, "neighbours of the DPC-kNN density")
        ratio = check_number("merge_ratio", self.merge_ratio)
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"merge_ratio must be in [0, 1) (share of the vision tokens merged at layer K), got {ratio}")
        tau = check_number("tau", self.tau)
        if not -1.0 <= tau <= 1.0:
            raise ValueError(f"tau must be in [-1, 1] (a cosine similarity), got {tau}")
        if self.salience not in SALIENCES:
            raise ValueError(f"salience must be one of {', '.join(SALIENCES)}, got {self.salience!r}")
        if self.cost is not None and self.retention is not None:
            raise ValueError(
                f"give HoliTom either cost (budget) or retention (the paper's share kept at the input), not both; "
                f"got cost={self.cost!r}, retention={self.retention!r}"
            )
        cost, retention = self.cost, None
        if self.retention is not None:
            retention = check_number("retention", self.retention)
            if not 0.0 < retention <= 1.0:
                raise ValueError(f"retention must be in (0, 1] (share of video tokens kept at the input), got {retention}")
        else:
            cost = 0.3 if cost is None else check_cost(cost)
        set_fields(self, cost=cost, retention=retention, layer=layer, merge_ratio=ratio, tau=tau, knn=knn)

    def with_cost(self, cost: float) -> "HoliTom":
        """At budget ``cost`` (the paper's retention, if set, gives way to it)."""
        return dataclasses.replace(self, cost=cost, retention=None)

    def start(self, budget: BudgetView, sample: int = 0) -> _State:
        return _State(budget.num_layers)

    def active(self, state: _State) -> bool:
        return state.stage != DONE

    def _kept_at_k(self, n: int) -> int:
        return n - math.floor(self.merge_ratio * n)

    def input_count(self, budget: BudgetView, n: int) -> int:
        """Tokens to keep at the input stage (``budget.layer`` is that layer)."""
        first, last = budget.layer, budget.num_layers
        if self.cost is None:
            return min(n, math.floor(self.retention * budget.num_tokens + 0.5))
        if not first < self.layer < last:
            return min(n, budget.max_constant())
        remaining = budget.remaining()

        def fits(c: int) -> bool:  # grows with c: bisect for the largest that fits
            return (self.layer - first) * budget.price(c) + (last - self.layer) * budget.price(self._kept_at_k(c)) <= remaining

        low, high = 0, n
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(mid) else (low, mid - 1)
        return low

    def step(self, state: _State, x: LayerInput) -> Reduction | None:
        n = x.hidden.shape[0]
        if state.stage == DONE or n == 0:
            return None
        if state.stage == INPUT:
            return self._input(state, x, n)
        if x.layer < self.layer:
            if x.layer == self.layer - 1:
                state.scores = x.importance()
            return None
        return self._inner(state, x, n)

    def _input(self, state: _State, x: LayerInput, n: int) -> Reduction | None:
        budget = x.budget
        c = self.input_count(budget, n)
        inner_next = x.layer < self.layer < budget.num_layers and self.merge_ratio > 0
        state.stage = INNER if inner_next else DONE
        if c >= n:
            return None
        if c == 0:
            state.stage = DONE
            return Reduction("prune", torch.zeros(n, dtype=torch.bool, device=x.hidden.device), count=0)
        salience = x.importance().to(x.hidden.device).float() if self.salience == "attention" else None
        keep, merged, root, count = holitom_input_reduce(
            x.hidden, x.frame, x.patch, c, salience=salience, tau=self.tau, knn=self.knn
        )
        return Reduction("merge", keep, merged, root, count)

    def _inner(self, state: _State, x: LayerInput, n: int) -> Reduction | None:
        state.stage = DONE
        if self.cost is None:
            keep_count = self._kept_at_k(n)
        else:  # c was planned to fit, so what is left affords at least c2(c) from here on
            keep_count = min(n, x.budget.max_constant())
        if keep_count >= n:
            return None
        if keep_count == 0:  # only when the budget affords nothing from here on
            return Reduction("prune", torch.zeros(n, dtype=torch.bool, device=x.hidden.device), count=0)
        scores = state.scores
        state.scores = None
        if scores is None or scores.shape[0] != n:
            scores = x.importance()
        keep, merged, root = holitom_inner_merge(x.hidden, scores.to(x.hidden.device).float(), keep_count)
        return Reduction("merge", keep, merged, root, keep_count)
