"""Pure tensor algorithms (no transformers import)."""

from .budget import TokenBudget
from .tokens import adjacent_similarity, merge_means, merge_roots, previous_same_patch, top_k_indices

__all__ = [
    "TokenBudget",
    "adjacent_similarity",
    "merge_means",
    "merge_roots",
    "previous_same_patch",
    "top_k_indices",
]
