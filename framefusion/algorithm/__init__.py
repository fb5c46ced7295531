"""Pure tensor algorithms (no transformers import)."""

from .budget import BudgetView, TokenBudget
from .selection import changed_token_keep, frame_runs, merge_to_count, random_keep, uniform_frame_keep, uniform_token_keep
from .tokens import adjacent_similarity, merge_means, merge_roots, previous_same_patch, top_k_indices, true_indices

__all__ = [
    "BudgetView",
    "TokenBudget",
    "changed_token_keep",
    "adjacent_similarity",
    "frame_runs",
    "merge_means",
    "merge_roots",
    "merge_to_count",
    "previous_same_patch",
    "random_keep",
    "top_k_indices",
    "true_indices",
    "uniform_frame_keep",
    "uniform_token_keep",
]
