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

from ..algorithm import changed_token_keep
from .base import LayerInput, Reduction
from .oneshot import OneShotMethod, OneShotState

__all__ = ["EVS"]


class EVS(OneShotMethod):
    name = "evs"

    def __init__(self, cost: float):
        self.cost = cost

    def select(self, state: OneShotState, x: LayerInput, k: int) -> Reduction:
        return Reduction("prune", changed_token_keep(x.hidden, x.patch, k), count=k)
