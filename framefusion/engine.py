"""Applies a reduction method to a transformers model through forward pre-hooks.

Hooks (all removable, no model code copied or replaced):
- on the adapter's input module: at prefill, locate the video tokens and start a per-call state;
  at decode, supply position_ids for hand-written loops;
- on every decoder layer: at prefill, let the method reduce the tokens, then hand the layer the
  shortened hidden states with the matching slices of cos/sin and a mask built from the kept
  tokens; at decode, hand layers whose cache was shortened a mask of their own width.

Per-call state is thread-local, so concurrent calls on one model do not mix. Samples of a batch
are reduced independently and re-packed with left padding that the masks hide.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .adapters import Adapter, VideoLayout, adapter_for
from .config import FrameFusionConfig
from .methods import LayerInput, ReductionMethod
from .report import Decision, ReductionReport

__all__ = ["FrameFusionHandle", "apply"]

logger = logging.getLogger("framefusion")

SUPPORTED_ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")


@dataclass
class _Sample:
    """One batch row during prefill."""

    layout: VideoLayout
    state: Any  # the method's state, None for a row without video
    kept: torch.Tensor  # original positions of the row's valid tokens still present, ascending
    vision: torch.Tensor  # (len(kept),) ordinal of each in layout, -1 for text
    decisions: list[Decision] = field(default_factory=list)


@dataclass
class _Call:
    """State of one forward/generate call in one thread."""

    samples: list[_Sample]
    length: int  # original sequence length
    index: torch.Tensor | None = None  # (b, Lc) original position per slot, -1 for padding; None: not repacked
    valid: torch.Tensor | None = None  # (b, Lc) slot holds a real token
    mask_cache: tuple | None = None  # (key, mask) of the current prefill mask
    position_cache: tuple | None = None  # (key, (cos, sin)) gathered for the current index
    attention: str = "sdpa"  # the model's attention implementation for this call
    first_layer: int = 0  # layers before it run unreduced (e.g. Qwen3-VL's deepstack layers)
    layer_valid: dict = field(default_factory=dict)  # layer -> (b, Lc) key validity of its prefill cache
    layer_length: dict = field(default_factory=dict)  # layer -> prefill cache length
    cache_ref: Any = None
    prefill_done: bool = False
    decode_mask: torch.Tensor | None = None  # 2-D attention mask of the current decode step
    seconds: float = 0.0
    layers_seen: int = 0


class FrameFusionHandle:
    """Returned by :func:`apply`; ``remove()`` (or leaving a ``with`` block) restores the model."""

    def __init__(self, model: nn.Module, method: ReductionMethod, adapter: Adapter, requested_cost: float | None):
        self.model = model
        self.method = method
        self.adapter = adapter
        self.requested_cost = requested_cost
        self._local = threading.local()
        self._lock = threading.Lock()
        self._last_report: ReductionReport | None = None
        self._hooks: list = []
        self._warned_no_ids = False
        self._layers = list(adapter.decoder_layers())
        self.num_layers = len(self._layers)
        self._hooks.append(adapter.input_module().register_forward_pre_hook(self._on_input, with_kwargs=True))
        for i, layer in enumerate(self._layers):
            self._hooks.append(layer.register_forward_pre_hook(self._layer_hook(i), with_kwargs=True))
        self._hooks.extend(adapter.install(self._record))

    # ----------------------------------------------------------------- public
    def remove(self) -> None:
        """Remove every hook; the model is exactly as before. Removing twice is a no-op."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        if getattr(self.model, "_framefusion_handle", None) is self:
            del self.model._framefusion_handle

    @property
    def active(self) -> bool:
        return bool(self._hooks)

    def last_report(self) -> ReductionReport | None:
        """Report of the last prefill in this thread (or, if none, in any thread)."""
        return getattr(self._local, "report", None) or self._last_report

    def __enter__(self) -> "FrameFusionHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # ------------------------------------------------------------------ hooks
    def _record(self, name: str, value: Any) -> None:
        if not hasattr(self._local, "recorded"):
            self._local.recorded = {}
        self._local.recorded[name] = value

    def _on_input(self, module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        cache = _cache(kwargs)
        seen = cache.get_seq_length() if cache is not None else 0
        if seen == 0:
            self._local.call = self._start_call(kwargs, input_ids)
            return None
        call = getattr(self._local, "call", None)
        if call is None or not call.layer_valid or call.cache_ref is None or call.cache_ref() is not cache:
            self._local.call = None
            return None
        call.decode_mask = kwargs.get("attention_mask")
        if kwargs.get("position_ids") is None:
            # A hand-written decode loop: the model would number the new tokens from the shortened
            # cache. Number them as the untouched model would.
            first = min(call.layer_length)
            untouched = call.length + cache.get_seq_length(first) - call.layer_length[first]
            q = (input_ids if input_ids is not None else kwargs["inputs_embeds"]).shape[1]
            position_ids = self.adapter.decode_position_ids(untouched, q, kwargs)
            if position_ids is not None:
                kwargs = dict(kwargs, position_ids=position_ids)
                return args, kwargs
        return None

    def _start_call(self, kwargs: dict, input_ids) -> _Call | None:
        if input_ids is None or input_ids.ndim != 2:
            if not self._warned_no_ids:
                self._warned_no_ids = True
                logger.warning(
                    "framefusion: the model was called without input_ids (inputs_embeds only), so the video "
                    "tokens cannot be located and nothing is reduced; pass input_ids as the processor returns them"
                )
            return None
        inputs = dict(getattr(self._local, "recorded", {}), input_ids=input_ids)
        inputs.update({k: v for k, v in kwargs.items() if v is not None})
        self._local.recorded = {}
        layouts = self.adapter.video_layouts(inputs)
        batch, length = input_ids.shape
        mask = kwargs.get("attention_mask")
        valid = mask.bool() if isinstance(mask, torch.Tensor) and mask.ndim == 2 else None
        if layouts is None or all(len(layout) == 0 for layout in layouts):
            rows = valid if valid is not None else torch.ones(batch, length, dtype=torch.bool)
            self._store_report(self._empty_report(batch, [r.nonzero().flatten().tolist() for r in rows]))
            return None
        samples = []
        for b, layout in enumerate(layouts):
            row_valid = valid[b] if valid is not None else torch.ones(length, dtype=torch.bool, device=input_ids.device)
            kept = row_valid.nonzero(as_tuple=True)[0]
            last = int(kept[-1]) if kept.numel() else -1
            # Padding is never a vision token, nor the last token (its query drives generation).
            ok = row_valid[layout.positions] & (layout.positions != last)
            layout = VideoLayout(layout.positions[ok], layout.frame[ok], layout.patch[ok])
            ordinal = torch.full((length,), -1, dtype=torch.long, device=input_ids.device)
            ordinal[layout.positions] = torch.arange(len(layout), device=input_ids.device)
            state = self.method.start(len(layout), self.num_layers, sample=b) if len(layout) else None
            samples.append(_Sample(layout, state, kept, ordinal[kept]))
        call = _Call(
            samples,
            length,
            attention=_attention_impl(self.adapter),
            first_layer=self.adapter.first_reducible_layer(inputs),
        )
        call.valid = valid
        return call

    def _layer_hook(self, layer_idx: int):
        def hook(module, args, kwargs):
            call = getattr(self._local, "call", None)
            if call is None:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            if call.cache_ref is None and call.layers_seen == 0:
                cache = _cache(kwargs)
                _check_cache(cache)
                call.cache_ref = weakref.ref(cache) if cache is not None else (lambda: None)
            if not call.prefill_done:
                return self._prefill_layer(call, layer_idx, module, hidden, args, kwargs)
            return self._decode_layer(call, layer_idx, hidden, args, kwargs)

        return hook

    # ---------------------------------------------------------------- prefill
    def _prefill_layer(self, call: _Call, layer_idx: int, layer, hidden, args, kwargs):
        start = time.perf_counter()
        call.layers_seen += 1
        full_cos, full_sin = kwargs["position_embeddings"]
        batch = hidden.shape[0]
        full_cos, full_sin = full_cos.expand(batch, -1, -1), full_sin.expand(batch, -1, -1)

        def positions():
            if call.index is None:
                return full_cos, full_sin
            key = (full_cos.data_ptr(), id(call.index))
            if call.position_cache is None or call.position_cache[0] != key:
                call.position_cache = (key, (_gather(full_cos, call.index), _gather(full_sin, call.index)))
            return call.position_cache[1]

        before = call.index
        cos, sin = positions()
        hidden = self._reduce(call, layer_idx, layer, hidden, cos, sin)
        if call.index is not None:
            if call.index is not before:
                cos, sin = positions()
            kwargs = dict(kwargs)
            kwargs["position_embeddings"] = (cos, sin)
            kwargs["attention_mask"] = self._prefill_mask(call, hidden.dtype)
            kwargs["position_ids"] = None
            call.layer_valid[layer_idx] = call.valid
            call.layer_length[layer_idx] = call.valid.shape[1]
            if args:
                args = (hidden,) + tuple(args[1:])
            else:
                kwargs["hidden_states"] = hidden
        call.seconds += time.perf_counter() - start
        if layer_idx == self.num_layers - 1:
            self._finish_prefill(call)
        return (args, kwargs) if call.index is not None else None

    def _reduce(self, call: _Call, layer_idx: int, layer, hidden, cos, sin) -> torch.Tensor:
        """Run the method for every sample at this layer; repack the batch if anything changed."""
        too_early = layer_idx < call.first_layer
        live = {
            b
            for b, s in enumerate(call.samples)
            if s.state is not None and self.method.active(s.state) and not too_early
        }
        for b, s in enumerate(call.samples):
            if s.state is not None and b not in live:
                self.method.idle(s.state, int((s.vision >= 0).sum()))
        scores_cache: list = []

        def importance_for(b: int):
            def compute():
                if not scores_cache:
                    scores_cache.append(self._importance(call, layer, hidden, cos, sin))
                slots = self._slots(call, b)[call.samples[b].vision >= 0]
                return scores_cache[0][b, slots]

            return compute

        reductions = {}
        for b in sorted(live):
            red = self.method.step(
                call.samples[b].state, self._layer_input(call, b, layer_idx, hidden, importance_for(b))
            )
            if red is not None:
                reductions[b] = red
        if not reductions:
            return hidden
        rows = []
        for b, sample in enumerate(call.samples):
            row = hidden[b, self._slots(call, b)]
            red = reductions.get(b)
            if red is not None:
                sample.decisions.append(
                    Decision(layer_idx, red.kind, red.keep.cpu(), None if red.root is None else red.root.cpu())
                )
                is_vis = sample.vision >= 0
                keep_all = torch.ones(len(sample.kept), dtype=torch.bool, device=row.device)
                keep_all[is_vis] = red.keep.to(row.device)
                if red.merged is not None:
                    row = row.clone()
                    vis_idx = is_vis.nonzero(as_tuple=True)[0][red.keep.to(row.device)]
                    row[vis_idx] = red.merged.to(row.dtype)
                row = row[keep_all]
                sample.kept = sample.kept[keep_all]
                sample.vision = sample.vision[keep_all]
            rows.append(row)
        return self._repack(call, rows, hidden)

    def _layer_input(self, call: _Call, b: int, layer_idx: int, hidden, importance) -> LayerInput:
        sample = call.samples[b]
        is_vis = sample.vision >= 0
        ordinal = sample.vision[is_vis]
        slots = self._slots(call, b)[is_vis]
        return LayerInput(
            layer=layer_idx,
            hidden=hidden[b, slots],
            frame=sample.layout.frame[ordinal],
            patch=sample.layout.patch[ordinal],
            importance=importance,
        )

    def _slots(self, call: _Call, b: int) -> torch.Tensor:
        """Slots of row b's present tokens in the current hidden tensor."""
        sample = call.samples[b]
        if call.index is None:
            return sample.kept
        width = call.index.shape[1]
        return torch.arange(width - len(sample.kept), width, device=sample.kept.device)

    def _repack(self, call: _Call, rows: list[torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
        width = max(r.shape[0] for r in rows)
        batch = len(rows)
        device = hidden.device
        packed = hidden.new_zeros((batch, width, hidden.shape[-1]))
        index = torch.full((batch, width), -1, dtype=torch.long, device=device)
        for b, (row, sample) in enumerate(zip(rows, call.samples)):
            n = row.shape[0]
            if n:
                packed[b, width - n :] = row
                index[b, width - n :] = sample.kept.to(device)
        call.index = index
        call.valid = index >= 0
        call.mask_cache = None
        return packed

    def _importance(self, call: _Call, layer, hidden, cos, sin) -> torch.Tensor:
        """(b, Lc) attention of each row's last token to every slot, averaged over heads (float32)."""
        device = _execution_device(layer, hidden.device)
        if call.valid is None:
            last = torch.full((hidden.shape[0],), hidden.shape[1] - 1, dtype=torch.long)
        else:  # the last real token of each row
            width = call.valid.shape[1]
            last = width - 1 - call.valid.long().flip(1).argmax(1)
        q, k, scaling = self.adapter.attention_probe(
            layer, hidden.to(device), cos.to(device), sin.to(device), last.to(device)
        )
        groups = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(groups, dim=1)  # (b, h, L, d)
        logits = torch.einsum("bhd,bhld->bhl", q.float(), k.float()) * scaling
        if call.valid is not None:
            logits = logits.masked_fill(~call.valid.to(device)[:, None, :], float("-inf"))
        return logits.softmax(dim=-1).mean(dim=1).to(hidden.device)

    def _prefill_mask(self, call: _Call, dtype: torch.dtype):
        impl = call.attention
        key = (impl, dtype, id(call.index))
        if call.mask_cache is not None and call.mask_cache[0] == key:
            return call.mask_cache[1]
        valid = call.valid
        if impl.startswith("flash"):
            mask = None if bool(valid.all()) else valid.long()
        elif impl == "sdpa" and bool(valid.all()):
            mask = None  # plain causal: sdpa's is_causal path
        else:
            width = valid.shape[1]
            causal = torch.ones(width, width, dtype=torch.bool, device=valid.device).tril()
            allowed = causal[None] & valid[:, None, :]
            allowed |= torch.eye(width, dtype=torch.bool, device=valid.device)[None]  # no empty rows
            mask = _as_impl_mask(allowed[:, None], impl, dtype)
        call.mask_cache = (key, mask)
        return mask

    def _finish_prefill(self, call: _Call) -> None:
        call.prefill_done = True
        call.mask_cache = call.position_cache = None  # prefill only: do not hold an (Lc x Lc) mask while decoding
        vision_tokens, per_layer, achieved, kept, decisions = [], [], [], [], []
        for sample in call.samples:
            n = len(sample.layout)
            vision_tokens.append(n)
            if sample.state is None:
                per_layer.append([0] * self.num_layers)
                achieved.append(1.0)
            else:
                per_layer.append(self.method.counts(sample.state))
                achieved.append(self.method.achieved_cost(sample.state))
            kept.append(sample.kept.tolist())
            decisions.append(sample.decisions)
        self._store_report(
            ReductionReport(
                method=self.method.name,
                num_layers=self.num_layers,
                requested_cost=self.requested_cost,
                vision_tokens=vision_tokens,
                vision_tokens_per_layer=per_layer,
                achieved_cost=achieved,
                reduction_seconds=call.seconds,
                kept_positions=kept,
                decisions=decisions,
            )
        )

    def _empty_report(self, batch: int, kept: list[list[int]]) -> ReductionReport:
        return ReductionReport(
            method=self.method.name,
            num_layers=self.num_layers,
            requested_cost=self.requested_cost,
            vision_tokens=[0] * batch,
            vision_tokens_per_layer=[[0] * self.num_layers for _ in range(batch)],
            achieved_cost=[1.0] * batch,
            reduction_seconds=0.0,
            kept_positions=kept,
            decisions=[[] for _ in range(batch)],
        )

    def _store_report(self, report: ReductionReport) -> None:
        self._local.report = report
        with self._lock:
            self._last_report = report

    # ----------------------------------------------------------------- decode
    def _decode_layer(self, call: _Call, layer_idx: int, hidden, args, kwargs):
        valid = call.layer_valid.get(layer_idx)
        if valid is None:
            return None  # this layer's cache has every token: the model's own mask is right
        cache = _cache(kwargs)
        if cache is None:
            return None
        q = hidden.shape[1]
        prefill = call.layer_length[layer_idx]
        earlier = cache.get_seq_length(layer_idx) - prefill  # decode tokens already cached
        step = call.decode_mask
        width = earlier + q
        if isinstance(step, torch.Tensor) and step.ndim == 2 and step.shape[1] >= width:
            new_valid = step[:, step.shape[1] - width :].bool().to(valid.device)
        else:
            new_valid = torch.ones(valid.shape[0], width, dtype=torch.bool, device=valid.device)
        keys = torch.cat([valid, new_valid], dim=1)  # (b, K)
        impl = call.attention
        if impl.startswith("flash"):
            mask = None if bool(keys.all()) else keys.long()
        elif impl == "sdpa" and q == 1 and bool(keys.all()):
            mask = None
        else:
            total = keys.shape[1]
            rows = torch.arange(q, device=keys.device)[:, None] + prefill + earlier
            cols = torch.arange(total, device=keys.device)[None, :]
            allowed = (cols <= rows)[None] & keys[:, None, :]
            allowed[:, torch.arange(q), prefill + earlier + torch.arange(q)] = True
            mask = _as_impl_mask(allowed[:, None], impl, hidden.dtype)
        kwargs = dict(kwargs, attention_mask=mask)
        if impl.startswith("flash"):
            kwargs["position_ids"] = None
        return args, kwargs


# --------------------------------------------------------------------- helpers
def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x: (b, L, d) gathered at index (b, Lc) (padding -1 reads slot 0)."""
    idx = index.clamp_min(0).to(x.device)
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))


def _cache(kwargs: dict):
    """The KV cache a forward was given: ``cache`` from transformers 5.24 on, ``past_key_values``
    before (and as the deprecated alias a caller may still pass)."""
    for name in ("cache", "past_key_values"):
        value = kwargs.get(name)
        if value is not None:
            return value
    return None


def _check_cache(cache) -> None:
    """Shortened layers need caches that grow with what they are given (DynamicLayer)."""
    kinds = {type(layer).__name__ for layer in getattr(cache, "layers", [])}
    if kinds - {"DynamicLayer"}:
        raise ValueError(
            f"framefusion needs the default dynamic KV cache; got {type(cache).__name__} with "
            f"{sorted(kinds)} layers (static, sliding-window, offloaded or quantized caches keep one "
            "length for all layers). Generate without cache_implementation, or call handle.remove() first."
        )


def _as_impl_mask(allowed: torch.Tensor, impl: str, dtype: torch.dtype) -> torch.Tensor:
    if impl == "sdpa":
        return allowed
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def _attention_impl(adapter: Adapter) -> str:
    impl = getattr(adapter.text_config(), "_attn_implementation", None) or "eager"
    if impl not in SUPPORTED_ATTENTION:
        raise ValueError(
            f"attention implementation {impl!r} is not supported by framefusion; use one of {SUPPORTED_ATTENTION}"
        )
    return impl


def _execution_device(layer: nn.Module, fallback: torch.device) -> torch.device:
    """Where ``layer`` computes. Under accelerate dispatch its weights may sit on the meta device
    until its (or its submodules') own hooks load them; their execution device says where."""
    for module in layer.modules():
        hook = getattr(module, "_hf_hook", None)
        device = getattr(hook, "execution_device", None)
        if device is not None:
            return torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    for p in layer.parameters():
        return p.device if p.device.type != "meta" else fallback
    return fallback


def _make_method(config: Any) -> tuple[ReductionMethod, float | None]:
    if config is None:
        config = FrameFusionConfig()
    if isinstance(config, ReductionMethod):
        return config, getattr(config, "cost", None)
    if hasattr(config, "make_method"):
        return config.make_method(), getattr(config, "cost", None)
    raise TypeError(f"config must be a FrameFusionConfig (or a ReductionMethod), got {type(config).__name__}")


def apply(
    model: nn.Module, config: FrameFusionConfig | ReductionMethod | None = None, *, processor: Any = None
) -> FrameFusionHandle:
    """Apply FrameFusion (or another reduction method) to a loaded model, in place and reversibly.

    ``generate`` and ``forward`` are called exactly as before. Returns a handle whose
    ``last_report()`` describes the last prefill and whose ``remove()`` restores the model; the
    handle is also a context manager. ``processor`` (the model's processor or tokenizer) is needed
    only by families whose video frames are told apart from images by text (InternVL, SmolVLM).
    """
    method, cost = _make_method(config)
    adapter = adapter_for(model, processor)
    _attention_impl(adapter)
    layers = len(adapter.decoder_layers())
    first = adapter.first_reducible_layer({})
    if cost is not None and first and cost < first / layers:
        raise ValueError(
            f"cost={cost} is below what {type(model).__name__} allows: its first {first} of {layers} decoder "
            f"layers must see every video token, so cost must be at least {first}/{layers} = {first / layers:.4f}"
        )
    existing = getattr(model, "_framefusion_handle", None)
    if existing is not None and existing.active:
        raise RuntimeError("framefusion is already applied to this model; call handle.remove() first, then apply again")
    handle = FrameFusionHandle(model, method, adapter, cost)
    model._framefusion_handle = handle
    return handle
