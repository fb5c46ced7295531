"""Long videos through the vision tower in bounded memory: the tower runs over the frames a chunk at a time.

    handle = framefusion.chunked_vision(model, frames=16)   # or: with framefusion.chunked_vision(...):
    model.generate(**inputs)                                 # unchanged; the same features as one pass
    handle.remove()                                          # the model is exactly as before

A vision tower's activations grow with the frames it is given at once (a 600-frame clip is 600 frames of
attention, MLP and norm activations at every block); the features it returns grow only with the tokens.
Every supported family's tower encodes each frame (Qwen / GLM: each temporal patch) without looking at
the others (each adapter's ``frame_encoders`` says what was checked), so running it over ``frames``
frames at a time and joining the outputs along dim 0 gives the one pass's output, while its peak
activation memory follows the chunk, not the clip.

What is wrapped: the vision encoder module's ``forward`` (``model.model.visual`` for Qwen-VL / GLM-4V,
``vision_tower`` for LLaVA-OneVision / LLaVA-NeXT-Video / InternVL, ``video_tower`` and ``image_tower`` for
Video-LLaVA, ``vision_model`` for SmolVLM), set on the instance with the adapters' ``InstanceAttribute``.
Not ``get_video_features`` itself: ``framefusion.apply`` (Qwen2-VL, LLaVA) and
``framefusion.tools.evaluate.vision_features_reused`` wrap that method and must see each call whole (the
grids and shapes they record, the argument identities they memoise), whichever was applied last; one
level down, the chunking is under all of them in every order, and ``remove`` restores the attribute it
found. What follows the tower in ``get_video_features`` (LLaVA's projection and pooling, InternVL's pixel
shuffle and projector, SmolVLM's connector; Qwen and GLM merge inside the tower) still runs once over
every frame: those are per-token maps whose size follows the features.

The output is joined field by field (``ModelOutput`` fields, tuples, lists: element-wise; tensors:
concatenated along dim 0), so its structure and order are the one call's. Peak memory of the vision
stage: one chunk's activations, or, at the join, the output plus its largest field once more.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
from typing import Any

import torch
from torch import nn

from .adapters import ADAPTERS, UnsupportedModelError
from .adapters.base import FrameEncoder, InstanceAttribute

__all__ = ["ChunkedVision", "chunked_vision", "join_outputs"]

_MARK = "_framefusion_chunked_vision"  # set on the wrapper: a tower is chunked at most once


class ChunkedVision:
    """The handle of :func:`chunked_vision`: ``remove()`` (or leaving the ``with`` block) restores the model.

    frames: the most input frames one encoder call gets
    last_chunks: encoder calls the last wrapped call was split into (1 when it needed no split)

    Copy or pickle the model after ``remove()``: a ``copy.deepcopy`` made while chunked would carry the
    wrapper, which runs the original model's tower (nothing refuses it, unlike ``framefusion.apply``).
    """

    def __init__(self, frames: int, encoders: list[FrameEncoder]):
        self.frames = frames
        self.last_chunks = 0
        self._wrappers = [InstanceAttribute(e.module, "forward", self._wrap(e)) for e in encoders]

    def _wrap(self, encoder: FrameEncoder):
        original = encoder.module.forward  # the instance's own attribute if it has one, else the class's
        signature = inspect.signature(original)

        @functools.wraps(original)
        def forward(*args, **kwargs):
            calls = encoder.split(_arguments(signature, args, kwargs), self.frames)
            if calls is None:
                self.last_chunks = 1
                return original(*args, **kwargs)
            self.last_chunks = len(calls)
            outputs = []
            for call in calls:
                outputs.append(original(**call))
                del call
            calls.clear()
            return join_outputs(outputs, consume=True)

        setattr(forward, _MARK, True)
        return forward

    def remove(self) -> None:
        for wrapper in reversed(self._wrappers):
            wrapper.remove()
        self._wrappers = []

    def __enter__(self) -> "ChunkedVision":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self._wrappers else "removed"
        return f"ChunkedVision(frames={self.frames}, {state})"


def chunked_vision(model: nn.Module, frames: int = 16) -> ChunkedVision:
    """Run ``model``'s vision tower over at most ``frames`` input frames at a time, with the same output.

    ``frames`` counts input frames (a video frame, or an image / image tile); for Qwen-VL and GLM-4V it must
    be a multiple of ``temporal_patch_size`` (2), the frames their tower encodes together. Several videos
    (and images) in one call are packed into chunks in order. Raises ``ValueError`` for a bad ``frames``, for
    a family or encoder class whose frames were not checked to be encoded independently, and when the
    tower is already chunked; ``UnsupportedModelError`` for a model framefusion does not know. Works
    before or after ``framefusion.apply`` and with ``vision_features_reused``, removed in any order."""
    if isinstance(frames, bool) or not isinstance(frames, numbers.Integral) or frames < 1:
        raise ValueError(f"frames={frames!r}: pass a whole number of frames per vision-tower call, at least 1")
    frames = int(frames)
    cls = next((a for a in ADAPTERS if a.matches(model)), None)
    if cls is None:
        names = ", ".join(n for a in ADAPTERS for n in a.model_classes)
        raise UnsupportedModelError(f"chunked_vision does not know {type(model).__name__}; supported: {names}")
    encoders = cls.frame_encoders(model, frames)
    for e in encoders:
        if getattr(vars(e.module).get("forward"), _MARK, False):
            raise ValueError(
                f"{type(e.module).__name__} is already chunked (chunked_vision was applied to this model): "
                "remove that handle first"
            )
    return ChunkedVision(frames, encoders)


def _arguments(signature: inspect.Signature, args: tuple, kwargs: dict) -> dict[str, Any]:
    """A call's arguments by name, ``**kwargs`` spread out (the encoders take no ``*args``)."""
    bound = signature.bind(*args, **kwargs)
    out: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                raise ValueError(f"chunked vision encoding cannot split a call with extra positional arguments {name}")
        else:
            out[name] = value
    return out


def join_outputs(outputs: list, consume: bool = False) -> Any:
    """The chunks' outputs as one call's: tensors concatenated along dim 0, ``ModelOutput`` / dataclass
    fields, tuples and lists element by element, None kept; anything else must be the same in every chunk.
    A tensor found at two places of every chunk's output (``hidden_states[-1]`` is ``last_hidden_state``)
    is joined once and found at both places of the result. ``consume``: set each top-level field of the
    chunks' outputs to None once it is joined, so the join holds one field twice, not all of them."""
    return _join(outputs, {}, consume)


def _join(outputs: list, memo: dict, consume: bool = False) -> Any:
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        # every piece was alive before the join began, so no two live pieces share an id: a safe key
        key = tuple(id(o) for o in outputs)
        if key not in memo:
            memo[key] = _same(outputs) if first.ndim == 0 else torch.cat(outputs, dim=0)
        return memo[key]
    if first is None:
        return _same(outputs)
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        values = {}
        for f in dataclasses.fields(first):
            values[f.name] = _join([getattr(o, f.name) for o in outputs], memo)
            if consume:
                for o in outputs:
                    if isinstance(o, dict) and f.name in o:  # a ModelOutput keeps its values in the dict too
                        dict.__setitem__(o, f.name, None)
                    object.__setattr__(o, f.name, None)
        return type(first)(**values)
    if isinstance(first, (tuple, list)):
        if len({len(o) for o in outputs}) != 1:
            raise ValueError("chunked vision encoding: the chunks' outputs have different lengths")
        joined = [_join([o[i] for o in outputs], memo) for i in range(len(first))]
        return type(first)(*joined) if hasattr(first, "_fields") else type(first)(joined)
    return _same(outputs)


def _same(outputs: list) -> Any:
    first = outputs[0]
    for o in outputs[1:]:
        same = o is first or (torch.equal(o, first) if isinstance(o, torch.Tensor) else o == first)
        if not same:
            raise ValueError(
                f"chunked vision encoding cannot join outputs that differ per chunk ({type(first).__name__})"
            )
    return first
