"""framefusion: fewer video tokens inside the LLM of video vision-language models.

handle = framefusion.apply(model, framefusion.FrameFusion(cost=0.3))
model.generate(**inputs)          # unchanged
handle.last_report()              # what the last prefill did
handle.remove()                   # the model is as before

A method is its own config (``FrameFusionConfig`` is another name for ``FrameFusion``). Other
methods behind the same call: FastV, EVS, VidCom2, FastVID, HoliTom, InputMerge, RandomPrune, UniformPrune, FrameFusion(merge=False)
/ (prune=False), and Stack(...) of them under one budget; ``framefusion.registry`` names them all and
framefusion.tools.compare.compare_methods puts them side by side.
"""

from .adapters import UnsupportedModelError, supported_models
from .config import EVSConfig, FastVConfig, FrameFusionConfig, InputMergeConfig, RandomPruneConfig, UniformPruneConfig
from .engine import FrameFusionHandle, apply
from .ledger import BudgetExceededError
from .methods import (
    EVS,
    FastV,
    FastVID,
    FrameFusion,
    HoliTom,
    InputMerge,
    LayerInput,
    RandomPrune,
    Reduction,
    ReductionMethod,
    Replay,
    Stack,
    UniformPrune,
    VidCom2,
)
from .report import ReductionReport
from .chunking import chunked_vision

__version__ = "0.2.0"

__all__ = [
    "EVS",
    "EVSConfig",
    "BudgetExceededError",
    "FastV",
    "FastVConfig",
    "FastVID",
    "FrameFusion",
    "FrameFusionConfig",
    "HoliTom",
    "InputMerge",
    "InputMergeConfig",
    "RandomPrune",
    "RandomPruneConfig",
    "Stack",
    "UniformPrune",
    "UniformPruneConfig",
    "VidCom2",
    "FrameFusionHandle",
    "LayerInput",
    "Reduction",
    "ReductionMethod",
    "ReductionReport",
    "Replay",
    "UnsupportedModelError",
    "apply",
    "chunked_vision",
    "supported_models",
]
