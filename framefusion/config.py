"""The ``XConfig`` names: each is the method itself (a method is a frozen dataclass that is its own
validated config), kept so that ``FrameFusionConfig(cost=0.3)`` and ``FrameFusion(cost=0.3)`` are
the same object. See ``framefusion.methods`` for the settings and ``methods.checks`` for what is
allowed.
"""

from __future__ import annotations

from .methods import EVS, FastV, FrameFusion, InputMerge, RandomPrune, UniformPrune

__all__ = ["EVSConfig", "FastVConfig", "FrameFusionConfig", "InputMergeConfig", "RandomPruneConfig", "UniformPruneConfig"]

FrameFusionConfig = FrameFusion
FastVConfig = FastV
EVSConfig = EVS
InputMergeConfig = InputMerge
RandomPruneConfig = RandomPrune
UniformPruneConfig = UniformPrune
