"""What one reduced prefill did, per sample."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Decision", "ReductionReport"]


@dataclass
class Decision:
    """One recorded reduction of one sample at one layer, in the terms of ``methods.Reduction``.

    ``keep`` and ``root`` index the vision tokens present at that layer (not original positions).
    """

    layer: int
    kind: str
    keep: torch.Tensor
    root: torch.Tensor | None = None

    def cpu(self) -> "Decision":
        return Decision(self.layer, self.kind, self.keep.cpu(), None if self.root is None else self.root.cpu())


@dataclass
class ReductionReport:
    method: str
    num_layers: int
    requested_cost: float | None
    vision_tokens: list[int]  # per sample, before reduction
    vision_tokens_per_layer: list[list[int]]  # per sample, per layer
    achieved_cost: list[float]  # per sample; 1.0 where a sample has no video
    # time spent reducing during prefill: on CUDA the GPU time of the reduction's own kernels
    # (CUDA events around them, read when the report is read), elsewhere wall time
    reduction_seconds: float
    kept_positions: list[list[int]] = field(default_factory=list)  # per sample: sequence positions still there
    decisions: list[list[Decision]] = field(default_factory=list)  # per sample, for replay and pictures

    def summary(self) -> str:
        lines = [f"{self.method}: {self.num_layers} layers, reduction {self.reduction_seconds * 1000:.1f} ms"]
        for i, (n, per_layer, cost) in enumerate(
            zip(self.vision_tokens, self.vision_tokens_per_layer, self.achieved_cost)
        ):
            lines.append(f"  sample {i}: {n} video tokens, per layer {per_layer}, achieved cost {cost:.3f}")
        return "\n".join(lines)
