"""Validation of method settings: every bad value gets an error naming it and what is allowed.

``cost`` of every method that promises a budget: the share of the unreduced vision-token compute
of the LLM forward, summed over all its decoder layers, that the reduced forward may use, in
(0, 1] (0.3 keeps 30%).
"""

from __future__ import annotations

import math

__all__ = ["check_cost", "check_flag", "check_integer", "check_number", "cost_or_knob"]


def check_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got NaN")
    return value


def check_cost(value: object) -> float:
    cost = check_number("cost", value)
    if not 0.0 < cost <= 1.0:
        raise ValueError(f"cost must be in (0, 1] (share of the vision-token compute kept), got {cost}")
    return cost


def check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def check_integer(name: str, value: object, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer ({what}), got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum} ({what}), got {value}")
    return int(value)


def cost_or_knob(method: str, cost: object, knob: str, value: object, to_cost, allowed: str, meaning: str) -> float:
    """The budget of a method that also takes its paper's own knob (EVS's rate, VidCom2's
    retention): at most one of the two; the knob must lie in ``allowed`` (written as an interval),
    i.e. ``to_cost(value)`` in (0, 1]; neither gives the default 0.3."""
    if cost is not None and value is not None:
        raise ValueError(f"give {method} either cost or {knob} ({meaning}), not both; got cost={cost!r}, {knob}={value!r}")
    if value is None:
        return 0.3 if cost is None else check_cost(cost)
    as_cost = to_cost(check_number(knob, value))
    if not 0.0 < as_cost <= 1.0:
        raise ValueError(f"{knob} must be in {allowed} ({meaning}), got {value}")
    return as_cost
