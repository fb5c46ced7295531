"""Pure tensor algorithms (no transformers import)."""

from .budget import BudgetView, TokenBudget
from .fastvid import FASTVID_DEFAULTS, anchor_means, fastvid_reduce
from .holitom import HOLITOM_KNN, HOLITOM_TAU, holitom_inner_merge, holitom_input_reduce
from .selection import changed_token_keep, frame_runs, merge_to_count, random_keep, uniform_frame_keep, uniform_token_keep
from .tokens import adjacent_similarity, merge_means, merge_roots, previous_same_patch, top_k_indices, true_indices
from .vidcom2 import VIDCOM2_EPS, VIDCOM2_TAU, vidcom2_keep

__all__ = [
    "BudgetView",
    "FASTVID_DEFAULTS",
    "HOLITOM_KNN",
    "HOLITOM_TAU",
    "TokenBudget",
    "VIDCOM2_EPS",
    "VIDCOM2_TAU",
    "changed_token_keep",
    "adjacent_similarity",
    "anchor_means",
    "fastvid_reduce",
    "frame_runs",
    "holitom_inner_merge",
    "holitom_input_reduce",
    "merge_means",
    "merge_roots",
    "merge_to_count",
    "previous_same_patch",
    "random_keep",
    "top_k_indices",
    "true_indices",
    "uniform_frame_keep",
    "uniform_token_keep",
    "vidcom2_keep",
]
