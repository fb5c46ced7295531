"""How far repeated timings agree, and what to tell the user when they do not.

Every command that prints times (``run --compare``, ``demo``, ``bench``, ``compare_methods``'s table)
shows the spread of its repeats and, through :func:`timing_caveat`, one line when its times should not
be trusted: a single measurement, or repeats that disagree by more than :data:`LARGE_SPREAD`.
"""

from __future__ import annotations

from typing import Iterable, Sequence

__all__ = ["LARGE_SPREAD", "spread_cell", "spread_ratio", "spread_text", "timing_caveat"]

# max/min above this: a busy machine or a model so small that noise outweighs the work being timed
LARGE_SPREAD = 1.5

SINGLE_RUN_NOTE = (
    "note: single-run times are indicative only (no repeats to compare); use --repeats N on a quiet machine"
)


def spread_ratio(times: Sequence[float]) -> float | None:
    """max/min of ``times``; None with fewer than two measurements (or a time that is not > 0)."""
    if len(times) < 2 or min(times) <= 0:
        return None
    return max(times) / min(times)


def spread_text(times: Sequence[float]) -> str:
    """``"0.101-0.230 s, 2.28x"`` over the repeats, or ``"one run"``."""
    ratio = spread_ratio(times)
    if ratio is None:
        return "one run"
    return f"{min(times):.3f}-{max(times):.3f} s, {ratio:.2f}x"


def spread_cell(times: Sequence[float]) -> str:
    """``"2.28x"`` (max/min over the repeats) for a table cell, or ``"-"`` for a single run."""
    ratio = spread_ratio(times)
    return "-" if ratio is None else f"{ratio:.2f}x"


def timing_caveat(series: Iterable[Sequence[float]], limit: float = LARGE_SPREAD) -> str | None:
    """The line to print under a table of times, or None when they look trustworthy.

    ``series``: the repeated times of each thing timed (each untouched or reduced setting). A warning
    when any of them varies by more than ``limit`` (max/min); a note when every one is a single run."""
    series = [list(s) for s in series if len(s)]
    if not series:
        return None
    ratios = [r for r in map(spread_ratio, series) if r is not None]
    if ratios and max(ratios) > limit:
        return (
            f"warning: timings vary by {max(ratios):.1f}x between repeats: the machine is busy or the model "
            "is too small to time; use --repeats and a quiet machine"
        )
    if all(len(s) == 1 for s in series):
        return SINGLE_RUN_NOTE
    return None
