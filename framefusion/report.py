"""What one reduced prefill did, per sample: the report, its lazy assembly and the reduction timer.

The report's tensors (kept positions, decisions) stay on the device during the forward and move
to the host when the report is first read (``PendingReport``), so building it never stalls a GPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

__all__ = ["Decision", "PendingReport", "ReductionReport", "ReductionTimer"]


@dataclass
class Decision:
    """One recorded reduction of one sample at one layer, in the terms of ``methods.Reduction``.

    ``keep`` and ``root`` index the vision tokens present at that layer (not original positions).
    """

    layer: int
    kind: str
    keep: torch.Tensor
    root: torch.Tensor | None = None
    anchor_weight: float | None = None  # merges by an anchor rule (see ``methods.Reduction``)

    def cpu(self) -> "Decision":
        root = None if self.root is None else self.root.cpu()
        return Decision(self.layer, self.kind, self.keep.cpu(), root, self.anchor_weight)


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
    budget: str = "token-layers"  # what the costs are shares of: "token-layers" or "flops" (apply's budget)

    def summary(self) -> str:
        lines = [f"{self.method}: {self.num_layers} layers, reduction {self.reduction_seconds * 1000:.1f} ms"]
        for i, (n, per_layer, cost) in enumerate(
            zip(self.vision_tokens, self.vision_tokens_per_layer, self.achieved_cost)
        ):
            unit = " (of the video tokens' FLOPs)" if self.budget == "flops" else ""
            lines.append(f"  sample {i}: {n} video tokens, per layer {per_layer}, achieved cost {cost:.3f}{unit}")
        return "\n".join(lines)


class ReductionTimer:
    """Time inside the reduction. On CUDA: GPU time between events recorded around the reduction's
    kernels, summed when the report is read (reading an event waits for it, so never during the
    forward). Elsewhere: wall time."""

    def __init__(self):
        self.seconds = 0.0
        self.events: list = []

    def start(self, device: torch.device):
        if device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(device))
            return event
        return time.perf_counter()

    def stop(self, mark, device: torch.device) -> None:
        if device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(device))
            self.events.append((mark, event))
        else:
            self.seconds += time.perf_counter() - mark

    def total(self) -> float:
        gpu_ms = 0.0
        for begin, end in self.events:
            end.synchronize()
            gpu_ms += begin.elapsed_time(end)
        return self.seconds + gpu_ms / 1000


@dataclass
class PendingReport:
    """A report whose tensors may still be on the device: built (moved to the host) on first read."""

    build: Callable[[], ReductionReport] | None
    report: ReductionReport | None = None

    def resolve(self) -> ReductionReport:
        if self.report is None:
            self.report, self.build = self.build(), None
        return self.report

    @classmethod
    def ready(cls, report: ReductionReport) -> "PendingReport":
        return cls(None, report)


def pending_report(
    method: str,
    requested_cost: float | None,
    num_layers: int,
    ledgers: list,
    vision_tokens: list[int],
    kept: list[torch.Tensor],
    decisions: list[list[Decision]],
    timer: ReductionTimer,
    offset: int = 0,
    budget: str = "token-layers",
) -> PendingReport:
    """The report of one prefill, read from the engine's books: per sample its ledger (None for a
    row without video), its kept positions (m,) on the device, relative to ``offset``, and its
    decisions. Counts and costs are read now (host values); tensors move when the report is read."""
    per_layer = [[0] * num_layers if ledger is None else ledger.counts for ledger in ledgers]
    achieved = [1.0 if ledger is None else ledger.achieved_cost() for ledger in ledgers]

    def build() -> ReductionReport:
        return ReductionReport(
            method=method,
            num_layers=num_layers,
            requested_cost=requested_cost,
            vision_tokens=vision_tokens,
            vision_tokens_per_layer=per_layer,
            achieved_cost=achieved,
            reduction_seconds=timer.total(),
            kept_positions=[(k + offset).cpu().tolist() for k in kept],
            decisions=[[d.cpu() for d in ds] for ds in decisions],
            budget=budget,
        )

    return PendingReport(build)
