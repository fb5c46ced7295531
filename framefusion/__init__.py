"""framefusion: fewer video tokens inside the LLM of video vision-language models.

handle = framefusion.apply(model, framefusion.FrameFusionConfig(cost=0.3))
model.generate(**inputs)          # unchanged
handle.last_report()              # what the last prefill did
handle.remove()                   # the model is as before

Other methods behind the same call, for comparison: FastVConfig, InputMergeConfig,
RandomPruneConfig, UniformPruneConfig, and FrameFusionConfig(merge=False) / (prune=False);
framefusion.tools.compare.compare_methods puts them side by side.
"""

from .adapters import UnsupportedModelError, supported_models
from .config import EVSConfig, FastVConfig, FrameFusionConfig, InputMergeConfig, RandomPruneConfig, UniformPruneConfig
from .engine import FrameFusionHandle, apply
from .methods import (
    EVS,
    FastV,
    FrameFusion,
    InputMerge,
    LayerInput,
    RandomPrune,
    Reduction,
    ReductionMethod,
    Replay,
    UniformPrune,
)
from .report import ReductionReport

__version__ = "0.1.0"

__all__ = [
    "EVS",
    "EVSConfig",
    "FastV",
    "FastVConfig",
    "FrameFusion",
    "FrameFusionConfig",
    "InputMerge",
    "InputMergeConfig",
    "RandomPrune",
    "RandomPruneConfig",
    "UniformPrune",
    "UniformPruneConfig",
    "FrameFusionHandle",
    "LayerInput",
    "Reduction",
    "ReductionMethod",
    "ReductionReport",
    "Replay",
    "UnsupportedModelError",
    "apply",
    "supported_models",
]
