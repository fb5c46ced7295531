"""Token-reduction methods: frozen dataclasses that are their own configs; the engine applies them
layer by layer and keeps their books (``framefusion.ledger``)."""

from .base import LayerInput, Reduction, ReductionMethod
from .baselines import RandomPrune, UniformPrune
from .evs import EVS
from .fastv import FastV
from .fastvid import FastVID
from .framefusion import FrameFusion
from .holitom import HoliTom
from .input_merge import InputMerge
from .oneshot import OneShotMethod
from .replay import Replay
from .stack import Stack
from .vidcom2 import VidCom2

__all__ = [
    "EVS",
    "FastV",
    "FastVID",
    "FrameFusion",
    "HoliTom",
    "InputMerge",
    "LayerInput",
    "OneShotMethod",
    "RandomPrune",
    "Reduction",
    "ReductionMethod",
    "Replay",
    "Stack",
    "UniformPrune",
    "VidCom2",
]
