"""Input-level temporal merging: merge similar adjacent-frame tokens once, before the first layer.

Follows the temporal stage of DyCoke (Tao et al., "DyCoke: Dynamic Compression of Tokens for Fast
Video Large Language Models", arXiv 2411.15024): redundancy between adjacent frames is removed on
the vision features themselves, before the LLM, with no attention weights needed.

At the input of the first layer (the vision features; on models whose first layers must see every
token, the first layer that may be reduced) the tokens are merged by similarity alone down to
``k``, the largest count the budget affords at every remaining layer, and left alone afterwards.
The merge rule is ``algorithm.merge_to_count``: each token is compared (cosine) with the token at
the same patch position of the previous frame, the most similar pairs merge first (chains join
one group, each group becomes the mean of its members); only when the budget asks for fewer
tokens than there are patch positions do tokens also merge with their neighbour in sequence order.
When the budget affords no vision token at all, every vision token is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..algorithm import merge_to_count
from .base import LayerInput, Reduction, set_fields
from .checks import check_cost
from .oneshot import OneShotMethod, OneShotState

__all__ = ["InputMerge"]


@dataclass(frozen=True)
class InputMerge(OneShotMethod):
    """Input-level temporal merging to the budget; needs no attention weights.

    cost: budget, in (0, 1]. Filled to whole tokens.
    """

    cost: float = 0.3

    name = "input-merge"

    def __post_init__(self) -> None:
        set_fields(self, cost=check_cost(self.cost))

    def select(self, state: OneShotState, x: LayerInput, k: int) -> Reduction:
        if k == 0:
            return Reduction("prune", torch.zeros(x.hidden.shape[0], dtype=torch.bool, device=x.hidden.device), count=0)
        keep, merged, root = merge_to_count(x.hidden, x.patch, k)
        return Reduction("merge", keep, merged, root, k)
