"""Token-reduction methods: small objects the engine applies layer by layer."""

from .base import LayerInput, Reduction, ReductionMethod
from .framefusion import FrameFusion
from .replay import Replay

__all__ = ["FrameFusion", "Replay", "LayerInput", "Reduction", "ReductionMethod"]
