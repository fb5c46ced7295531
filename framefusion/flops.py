"""FLOPs of an LLM prefill under a tokens-per-layer schedule (the ideal that timings are held to)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

__all__ = ["FlopPrice", "layer_flops", "prefill_flops", "flop_ratio"]


def layer_flops(config: Any, n: int) -> float:
    """Multiply-adds x 2 of one decoder layer over ``n`` tokens at prefill (causal attention).

    Counts the q/k/v/o projections, the two attention products over the causal half, and a gated
    MLP (three d x f matrices), which is the shape of Qwen2, Llama and their relatives; for a mixture
    of experts, the experts each token runs (the router's d x experts product is left out).
    """
    d = config.hidden_size
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    f = config.intermediate_size
    if getattr(config, "num_experts_per_tok", None) and getattr(config, "moe_intermediate_size", None):
        f = config.num_experts_per_tok * config.moe_intermediate_size  # a mixture of experts: the experts that run
    projections = 2 * n * d * (heads * head_dim + 2 * kv * head_dim) + 2 * n * heads * head_dim * d
    attention = 2 * 2 * heads * head_dim * n * (n + 1) / 2
    mlp = 3 * 2 * n * d * f
    return float(projections + attention + mlp)


def prefill_flops(config: Any, text_tokens: int, vision_per_layer: Sequence[int]) -> float:
    """Total over layers, with ``text_tokens`` plus ``vision_per_layer[i]`` tokens at layer i."""
    return sum(layer_flops(config, text_tokens + v) for v in vision_per_layer)


def flop_ratio(config: Any, text_tokens: int, vision_tokens: int, vision_per_layer: Sequence[int]) -> float:
    """Untouched / reduced prefill FLOPs: the speed-up a perfect implementation would reach."""
    full = prefill_flops(config, text_tokens, [vision_tokens] * len(vision_per_layer))
    return full / prefill_flops(config, text_tokens, vision_per_layer)


@dataclass(frozen=True)
class FlopPrice:
    """One decoder layer's FLOPs for ``n`` vision tokens beside ``text_tokens`` others, as a budget
    price (``algorithm.TokenBudget.price``): ``layer_flops(T + n) - layer_flops(T)`` scaled so that
    ``num_tokens`` vision tokens cost ``num_tokens``. Attention makes it convex in ``n``: halving the
    tokens saves more than half their FLOPs, so a FLOP-priced budget affords more tokens than a
    token-layer budget at the same cost, and spends exactly the FLOPs it is given."""

    config: Any  # the LLM's config (hidden_size, heads, intermediate_size, ...)
    text_tokens: int
    num_tokens: int

    def flops(self, n: int) -> float:
        """FLOPs the ``n`` vision tokens add to one layer (their own rows and the text's attention to them)."""
        return layer_flops(self.config, self.text_tokens + n) - layer_flops(self.config, self.text_tokens)

    def __call__(self, n: int) -> float:
        full = self.flops(self.num_tokens)
        return n if full <= 0 else self.num_tokens * self.flops(n) / full
