"""framefusion: fewer video tokens inside the LLM of video vision-language models.

handle = framefusion.apply(model, framefusion.FrameFusionConfig(cost=0.3))
model.generate(**inputs)          # unchanged
handle.last_report()              # what the last prefill did
handle.remove()                   # the model is as before
"""

from .adapters import UnsupportedModelError, supported_models
from .config import FrameFusionConfig
from .engine import FrameFusionHandle, apply
from .methods import FrameFusion, LayerInput, Reduction, ReductionMethod, Replay
from .report import ReductionReport

__version__ = "0.1.0"

__all__ = [
    "FrameFusion",
    "FrameFusionConfig",
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
