"""Arguments shared by several commands."""

from __future__ import annotations

import argparse

from ..config import FrameFusionConfig


def add_config_arguments(p: argparse.ArgumentParser, costs: bool = False) -> None:
    if costs:
        p.add_argument("--costs", type=float, nargs="+", default=[0.3, 0.5, 0.7], help="budgets to run, each in (0, 1]")
    else:
        p.add_argument("--cost", type=float, default=0.3, help="share of vision-token compute to keep, in (0, 1]")
    p.add_argument("--similarity-threshold", type=float, default=0.6, help="merge at or above this cosine")
    p.add_argument("--ratio-threshold", type=float, default=0.1, help="keep merging while this share is similar")


def config_from(args, cost: float | None = None) -> FrameFusionConfig:
    return FrameFusionConfig(args.cost if cost is None else cost, args.similarity_threshold, args.ratio_threshold)


def check_size(size: int) -> None:
    if size < 28 or size % 28:
        raise ValueError(f"--size must be a positive multiple of 28 (patch 14 x merge 2), e.g. 112 or 448, got {size}")
