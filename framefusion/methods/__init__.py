"""Token-reduction methods: small objects the engine applies layer by layer."""

from .base import LayerInput, Reduction, ReductionMethod
from .baselines import RandomPrune, UniformPrune
from .evs import EVS
from .fastv import FastV
from .framefusion import FrameFusion
from .input_merge import InputMerge
from .oneshot import OneShotMethod
from .replay import Replay

__all__ = [
    "EVS",
    "FastV",
    "FrameFusion",
    "InputMerge",
    "LayerInput",
    "OneShotMethod",
    "RandomPrune",
    "Reduction",
    "ReductionMethod",
    "Replay",
    "UniformPrune",
]
