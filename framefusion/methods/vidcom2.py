"""VidCom2: per-frame budgets from frame uniqueness, then the most unique tokens of each frame.

Liu et al., "Video Compression Commander: Plug-and-Play Inference Acceleration for Video Large
Language Models", EMNLP 2025, arXiv 2505.14454 (the second video-pruning method in vLLM).

Once, on the vision features at the input of the language model (the first layer that may be
reduced), ``k`` tokens stay: frames that differ more from the whole video get a larger share of
``k``, and within a frame the tokens least like their frame and the video stay
(``algorithm.vidcom2_keep``: the formulas, the paper's constants and where this implementation
chooses). ``k`` is the largest count the budget affords at every layer.

VidCom2's own knob is the retention ratio R (the share of video tokens kept). At the input the
count is the same at every layer, so R is the budget: ``VidCom2(retention=R)`` is ``cost = R``.
Several videos in one prompt are scored as one (one video summary), a simplification.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..algorithm import frame_runs, vidcom2_keep
from .base import LayerInput, Reduction, set_fields
from .checks import cost_or_knob
from .oneshot import OneShotMethod, OneShotState

__all__ = ["VidCom2"]


@dataclass(frozen=True)
class VidCom2(OneShotMethod):
    """cost: budget, in (0, 1]; default 0.3 when ``retention`` is not given.
    retention: VidCom2's R instead of ``cost`` (share of video tokens kept, in (0, 1]), stored as
    that cost."""

    cost: float | None = None
    retention: float | None = None

    name = "vidcom2"

    def __post_init__(self) -> None:
        cost = cost_or_knob("VidCom2", self.cost, "retention", self.retention, lambda r: r, "(0, 1]", "cost = retention: the share of video tokens kept")
        set_fields(self, cost=cost, retention=None)

    def select(self, state: OneShotState, x: LayerInput, k: int) -> Reduction:
        return Reduction("prune", vidcom2_keep(x.hidden, frame_runs(x.frame), k), count=k)
