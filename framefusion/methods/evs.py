"""EVS, Efficient Video Sampling: drop the tokens that did not change since the previous frame.

Bagrov et al., "Efficient Video Sampling: Pruning Temporally Redundant Tokens for Faster VLM
Inference", arXiv 2510.14624 (the default video-pruning method of vLLM, SGLang and TensorRT-LLM).

Once, on the vision features at the input of the language model, each token is compared (cosine)
with the token at the same patch position of the previous frame of its video; the ``k`` tokens
that changed most stay (the first frame of every video has nothing to compare with and stays
first), every other one is dropped. ``k`` is the largest count the budget affords at every layer.

EVS's own knob is the pruning rate ``q`` (the share of video tokens dropped). At the input the
count is the same at every layer, so ``q`` is the budget ``cost = 1 - q``: ``EVSConfig(rate=q)``
keeps ``floor((1 - q) N)`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..algorithm import changed_token_keep
from .base import LayerInput, Reduction, set_fields
from .checks import cost_or_knob
from .oneshot import OneShotMethod, OneShotState

__all__ = ["EVS"]


@dataclass(frozen=True)
class EVS(OneShotMethod):
    """EVS: once, at the input, keep the video tokens that changed most since the previous frame.

    cost: budget, in (0, 1]. Default 0.3 when ``rate`` is not given.
    rate: EVS's own pruning rate q instead of ``cost``: the share of video tokens dropped, in
        [0, 1); the same as ``cost = 1 - rate`` (the count is constant from the input on), and
        stored as that cost.
    """

    cost: float | None = None
    rate: float | None = None

    name = "evs"

    def __post_init__(self) -> None:
        cost = cost_or_knob("EVS", self.cost, "rate", self.rate, lambda q: 1.0 - q, "[0, 1)", "cost = 1 - rate: the share of video tokens dropped")
        set_fields(self, cost=cost, rate=None)

    def select(self, state: OneShotState, x: LayerInput, k: int) -> Reduction:
        return Reduction("prune", changed_token_keep(x.hidden, x.patch, k), count=k)
