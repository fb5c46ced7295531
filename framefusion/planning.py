"""Equal-compute planning: the ``cost`` at which ``m x F`` frames cost no more than ``F`` untouched.

Users reduce tokens to watch more of a video for the compute they already pay. Given one prompt at
the frame count they can afford untouched (``matched``, F frames) and at the one they want
(``wanted``, m x F frames), :func:`plan_cost` solves for the FLOP-priced ``cost`` (``apply(...,
budget="flops")``) that spends exactly the difference::

    vision(mF) + L f(T_mF) + cost * L g(N_mF)  =  vision(F) + L f(T_F + N_F)

with ``f(n)`` one decoder layer's prefill FLOPs over n tokens (:func:`framefusion.flops.layer_flops`),
``g(n) = f(T + n) - f(T)`` what n vision tokens add to it, ``T`` / ``N`` the text / vision tokens and
``vision(.)`` the vision tower's FLOPs (with its projector: they grow with the frames and are not
reduced). ``scope="llm"`` leaves the vision tower out on both sides (the LLM prefill alone, as
token-reduction papers count). The FLOP-priced books refuse any layer that would overspend, so a
reduced run costs at most the target; a method that fills its budget lands just under it.

:func:`measure_prompt` measures a prompt's side of the equation on the model itself: token counts
from the engine's own layouts, the vision FLOPs with ``torch.utils.flop_counter`` (everything the
forward computes outside the language model and its head). :func:`plan_frames` does both frame
counts and plans.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from .flops import FlopPrice, layer_flops

__all__ = ["FramePlan", "PromptCompute", "SCOPES", "describe_plan", "measure_prompt", "plan_cost", "plan_frames"]

SCOPE_NAMES = {"total": "vision tower + LLM prefill", "llm": "LLM prefill"}  # what each scope counts
SCOPES = tuple(SCOPE_NAMES)


@dataclass(frozen=True)
class PromptCompute:
    """One prompt (batch of one) at one frame count, untouched: what its prefill is made of."""

    frames: int
    text_tokens: int  # every token of the prompt that is not a video token (frame labels included)
    vision_tokens: int  # video tokens the LLM receives
    vision_flops: float  # the vision tower and projector, for all the frames


@dataclass(frozen=True)
class FramePlan:
    """The cost that makes ``wanted`` (reduced) cost what ``matched`` costs untouched."""

    wanted: PromptCompute
    matched: PromptCompute
    layers: int
    scope: str  # "total": the vision tower counted on both sides; "llm": the LLM prefill alone
    cost: float  # for apply(model, Method(cost=cost), budget="flops"); 1.0: no reduction needed
    target_flops: float  # matched untouched, in the scope
    config: Any = field(repr=False, compare=False)  # the LLM's config (for the FLOP formulas)

    def flops(self, vision_per_layer: Sequence[int], text_tokens: int | None = None) -> float:
        """The wanted prompt's compute (in the scope) when layer i runs with ``vision_per_layer[i]``
        vision tokens: what a reduced run actually cost, from its report's per-layer counts
        (``text_tokens``: another prompt's text, e.g. another question about the same clip)."""
        if len(vision_per_layer) != self.layers:
            raise ValueError(f"vision_per_layer has {len(vision_per_layer)} entries; the model has {self.layers} layers")
        text = self.wanted.text_tokens if text_tokens is None else text_tokens
        llm = sum(layer_flops(self.config, text + v) for v in vision_per_layer)
        return llm + (self.wanted.vision_flops if self.scope == "total" else 0.0)

    def spent(self, vision_per_layer: Sequence[int], text_tokens: int | None = None) -> float:
        """A run's compute over its target: ``flops(...)`` over what the same prompt (``text_tokens``
        at the wanted frames; its text at the matched frames shifted as the plan's was) costs
        untouched at the matched frames. At most 1 for a run under the plan's cost, whatever its text."""
        text = self.wanted.text_tokens if text_tokens is None else text_tokens
        matched_text = text + self.matched.text_tokens - self.wanted.text_tokens
        target = _untouched(self.config, self.layers, self.scope, self.matched, matched_text)
        return self.flops(vision_per_layer, text) / target

    def untouched_flops(self) -> float:
        """The wanted prompt untouched: what m x F frames cost without reduction."""
        return _untouched(self.config, self.layers, self.scope, self.wanted, self.wanted.text_tokens)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "config"}
        out["untouched_flops"] = self.untouched_flops()
        return out

    def describe(self) -> str:
        return describe_plan(self.as_dict())


def describe_plan(plan: dict[str, Any]) -> str:
    """One line for a plan (``FramePlan.as_dict()``, as run, eval and bench keep it)."""
    w, m = plan["wanted"], plan["matched"]
    return (
        f"{w['frames']} frames ({w['vision_tokens']} video tokens) for the compute of {m['frames']} untouched "
        f"({m['vision_tokens']} tokens), {SCOPE_NAMES[plan['scope']]}: {plan['target_flops'] / 1e9:.4g} GFLOP; "
        f"unreduced {w['frames']} frames would cost {plan['untouched_flops'] / plan['target_flops']:.2f}x that; "
        f"FLOP-priced cost {plan['cost']:.4f}"
    )


def _untouched(config: Any, layers: int, scope: str, prompt: PromptCompute, text_tokens: int) -> float:
    """``prompt``'s compute in the scope with every video token at every layer, beside ``text_tokens``."""
    llm = layers * layer_flops(config, text_tokens + prompt.vision_tokens)
    return llm + (prompt.vision_flops if scope == "total" else 0.0)


def _fixed_and_target(config: Any, wanted: PromptCompute, matched: PromptCompute, layers: int, scope: str):
    """(FLOPs the wanted prompt spends whatever the reduction, FLOPs its vision tokens add at full
    count, the target): the three terms of the module docstring's equation."""
    fixed = layers * layer_flops(config, wanted.text_tokens) + (wanted.vision_flops if scope == "total" else 0.0)
    full = layers * FlopPrice(config, wanted.text_tokens, wanted.vision_tokens).flops(wanted.vision_tokens)
    return fixed, full, _untouched(config, layers, scope, matched, matched.text_tokens)


def plan_cost(
    config: Any, wanted: PromptCompute, matched: PromptCompute, *, layers: int | None = None, scope: str = "total",
    min_cost: float = 0.0,
) -> FramePlan:  # fmt: skip
    """The FLOP-priced cost at which ``wanted`` costs no more than ``matched`` untouched (module
    docstring). ``config``: the LLM's config; ``layers``: its decoder layers (default
    ``config.num_hidden_layers``); ``min_cost``: the least cost the model allows (layers that must see
    every token). Raises ValueError when no cost can: the fixed part alone (the vision tower, the
    text) already costs more, or more than the target leaves for the layers that cannot reduce."""
    if scope not in SCOPES:
        raise ValueError(f"scope={scope!r} is not a planning scope; allowed: {', '.join(map(repr, SCOPES))}")
    if wanted.frames < matched.frames:
        raise ValueError(
            f"the wanted frame count ({wanted.frames}) is below the matched one ({matched.frames}); "
            "plan more frames for the compute of fewer, not the reverse"
        )
    if wanted.frames > matched.frames and wanted.vision_tokens <= matched.vision_tokens:
        raise ValueError(
            f"{wanted.frames} frames gave {wanted.vision_tokens} video tokens and {matched.frames} gave "
            f"{matched.vision_tokens}: the processor samples its own frames (a fixed num_frames or fps), so more "
            "frames would not be seen; let it keep the frames given (e.g. do_sample_frames=False) and plan again"
        )
    layers = config.num_hidden_layers if layers is None else layers
    fixed, full, target = _fixed_and_target(config, wanted, matched, layers, scope)
    cost = 1.0 if full <= 0 else (target - fixed) / full
    if cost >= 1.0:
        cost = 1.0
    elif cost * wanted.vision_tokens < 1 or cost < min_cost:  # not even one video token per layer on average
        what = "the vision tower and the text" if scope == "total" else "the text"
        least = fixed + max(min_cost, 0.0) * full
        raise ValueError(
            f"{wanted.frames} frames cannot cost as little as {matched.frames} untouched ({target / 1e9:.4g} GFLOP, "
            f"{scope}): {what} at {wanted.frames} frames already cost {fixed / 1e9:.4g} GFLOP and the least this "
            f"model allows is {least / 1e9:.4g}; ask for fewer frames"
            + ("" if scope == "llm" else ", or plan with scope='llm' to leave the vision tower out")
        )
    return FramePlan(wanted, matched, layers, scope, cost, target, config)


def measure_prompt(model, inputs: dict, frames: int, processor: Any = None) -> PromptCompute:
    """``inputs`` (the processor's output for one prompt with one video at ``frames`` frames) measured
    on ``model`` by one untouched forward: token counts from the engine's layouts, the vision FLOPs
    counted by ``torch.utils.flop_counter`` (all that runs outside the language model and lm_head).
    Call it on a model without framefusion applied."""
    from .engine import apply
    from .methods import FrameFusion

    if getattr(model, "_framefusion_handle", None) is not None and model._framefusion_handle.active:
        raise RuntimeError("measure_prompt needs the untouched model; call handle.remove() first, then plan")
    ids = inputs["input_ids"]
    if ids.ndim != 2 or ids.shape[0] != 1:
        raise ValueError(f"measure_prompt takes one prompt (input_ids of shape (1, L)); got {tuple(ids.shape)}")
    counter = FlopCounterMode(display=False)
    with apply(model, FrameFusion(cost=1.0), processor=processor) as handle, counter, torch.inference_mode():
        model(**inputs, use_cache=False)  # cost 1.0 keeps every token: this only reads the layout
    report = handle.last_report()
    vision_tokens = report.vision_tokens[0]
    mask = inputs.get("attention_mask")
    valid = int(mask.sum()) if mask is not None else ids.shape[1]
    return PromptCompute(frames, valid - vision_tokens, vision_tokens, _outside_llm(counter, model, handle))


def _outside_llm(counter: FlopCounterMode, model, handle) -> float:
    """FLOPs counted outside the language model and the output head: the vision side. The counter
    names modules ``<model class>.<qualified name>``; the language model is the one holding the
    decoder layers."""
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    layers = handle.adapter.decoder_layers()
    llm = [name for name, m in model.named_modules() if getattr(m, "layers", None) is layers or m is getattr(model, "lm_head", None)]
    inside = sum(counts.get(f"{type(model).__name__}.{name}", 0) for name in llm)
    return float(counts.get("Global", 0) - inside)


def plan_frames(
    model, make_inputs: Callable[[int], dict], frames: int, match_frames: int, *, processor: Any = None,
    scope: str = "total",
) -> FramePlan:  # fmt: skip
    """Measure one prompt at ``frames`` and at ``match_frames`` (``make_inputs(n)``: the processor's
    output with the video at n frames) and plan the cost (:func:`plan_cost`)."""
    for name, value in (("frames", frames), ("match_frames", match_frames)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive whole number of frames; got {value!r}")
    from .adapters import adapter_for

    adapter = adapter_for(model, processor)
    layers = len(adapter.decoder_layers())
    min_cost = adapter.first_reducible_layer({}) / layers
    wanted = measure_prompt(model, make_inputs(frames), frames, processor)
    matched = measure_prompt(model, make_inputs(match_frames), match_frames, processor)
    return plan_cost(adapter.text_config(), wanted, matched, layers=layers, scope=scope, min_cost=min_cost)
