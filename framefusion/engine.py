"""Applies a reduction method to a transformers model through forward pre-hooks.

Hooks (all removable, no model code copied or replaced):
- on the adapter's input module: at prefill, locate the video tokens and start a per-call state;
  at decode, supply position_ids for hand-written loops;
- on every decoder layer: at prefill, let the method reduce the tokens, then hand the layer the
  shortened hidden states with the matching slices of cos/sin and a mask built from the kept
  tokens; at decode, hand layers whose cache was shortened a mask of their own width.

Per-call state is thread-local, so concurrent calls on one model do not mix. Samples of a batch
are reduced independently and re-packed with left padding that the masks hide.

The jobs around the hooks live beside this module: ``calls`` (per-call state: the batch's token
slots, re-packing, what the cache will hold), ``ledger`` (the budget books the method never
touches), ``masks`` (one mask builder for prefill and decode), ``probe`` (the last query's
attention), ``generation`` (what an enclosing ``generate`` changes) and ``report``.

Host synchronisation: the integer inputs (ids, masks, grids) are read to the host once per prefill
and the video layout is found there; after that the device is read only where a method decides a
count from data (FrameFusion: one read per merging layer and sample). Every tensor size the
engine needs follows from counts the host already knows (``algorithm.true_indices``), so layers
that only pass tokens through and decode steps never wait for the device. The report is moved to
the host when it is read (``last_report()``), not during the forward.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

import torch
from torch import nn

from .adapters import Adapter, VideoLayout, adapter_for
from .cache_book import CacheBook, book_of, true_length, write_book
from .calls import Call, Sample, Step
from .flops import FlopPrice
from .generation import Generation, every_nth_row, row_repeats, wrap_generate
from .masks import causal_mask, continuation_mask
from .methods import FrameFusion, ReductionMethod, Replay
from .outputs import mask_unscored_labels, restore_rows
from .probe import last_query_attention
from .report import PendingReport, ReductionReport, ReductionTimer, pending_report

__all__ = ["FrameFusionHandle", "apply"]

logger = logging.getLogger("framefusion")

SUPPORTED_ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")

# decoder layer -> the handle whose hooks are on it: one reduction per model, however it was applied
_OWNERS: "weakref.WeakKeyDictionary[nn.Module, FrameFusionHandle]" = weakref.WeakKeyDictionary()

_NO_COPY = (
    "a model with framefusion applied cannot be copied or pickled (its hooks hold per-thread state); "
    "call handle.remove() first, copy or save the model (state_dict / save_pretrained work at any time), "
    "then framefusion.apply() to the copy"
)


class FrameFusionHandle:
    """Returned by :func:`apply`; ``remove()`` (or leaving a ``with`` block) restores the model."""

    def __init__(self, model: nn.Module, method: ReductionMethod, adapter: Adapter, budget: str = "token-layers"):
        self.model = model
        self.method = method
        self.adapter = adapter
        self.budget = budget
        text_config = adapter.text_config()
        # FLOP-priced books: one price per row, from its own text and vision token counts
        self._pricing = (lambda text, vision: FlopPrice(text_config, text, vision)) if budget == "flops" else None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._last_report: ReductionReport | None = None
        self._hooks: list = []
        self._warned_no_ids = False
        self._layers = list(adapter.decoder_layers())
        self.num_layers = len(self._layers)
        self._hooks.append(model.register_forward_pre_hook(self._on_model_input, with_kwargs=True))
        self._hooks.append(model.register_forward_hook(self._on_model_output, with_kwargs=True))
        self._hooks.append(adapter.input_module().register_forward_pre_hook(self._on_input, with_kwargs=True))
        for i, layer in enumerate(self._layers):
            self._hooks.append(layer.register_forward_pre_hook(self._layer_hook(i), with_kwargs=True))
            _OWNERS[layer] = self
        self._hooks.extend(adapter.install(self._record))
        if callable(getattr(model, "generate", None)):
            self._hooks.append(wrap_generate(model, self._local))

    # ----------------------------------------------------------------- public
    def remove(self) -> None:
        """Remove every hook; the model is exactly as before. Removing twice is a no-op."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        for layer in self._layers:
            if _OWNERS.get(layer) is self:
                del _OWNERS[layer]
        if getattr(self.model, "_framefusion_handle", None) is self:
            del self.model._framefusion_handle

    @property
    def active(self) -> bool:
        return bool(self._hooks)

    @property
    def requested_cost(self) -> float | None:
        """The method's budget (None: it promises none)."""
        return self.method.cost

    def last_report(self) -> ReductionReport | None:
        """Report of the last prefill in this thread (or, if none, in any thread)."""
        pending = getattr(self._local, "report", None) or self._last_report
        return pending.resolve() if pending is not None else None

    def __enter__(self) -> "FrameFusionHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __deepcopy__(self, memo):
        raise TypeError(_NO_COPY)

    def __reduce_ex__(self, protocol):
        raise TypeError(_NO_COPY)

    # ------------------------------------------------------------------ hooks
    def _record(self, name: str, value: Any) -> None:
        if not hasattr(self._local, "recorded"):
            self._local.recorded = {}
        self._local.recorded[name] = value

    def _on_model_input(self, module, args, kwargs):
        """Take ``labels`` away from the model: the loss is computed on the restored logits."""
        self._local.labels = None
        if kwargs.get("labels") is None:
            return None
        if kwargs.get("return_dict") is False:
            raise ValueError("framefusion: forward with labels needs return_dict=True (the default), got return_dict=False")
        kwargs = dict(kwargs)
        self._local.labels = (kwargs.pop("labels"), {k: kwargs[k] for k in ("num_items_in_batch", "ignore_index") if k in kwargs})
        return args, kwargs

    def _on_model_output(self, module, args, kwargs, output):
        """Outputs at the input's length (see ``framefusion.outputs``), and the loss."""
        labels, self._local.labels = getattr(self._local, "labels", None), None
        call = getattr(self._local, "call", None)
        index = call.index if call is not None and call.prefill_done else None
        if not hasattr(output, "keys"):
            return None
        values = dict(output)
        for key in ("logits", "last_hidden_state"):
            rows = values.get(key)
            if index is not None and isinstance(rows, torch.Tensor) and rows.dim() == 3 and rows.shape[1] > 1:
                values[key] = restore_rows(rows, index, call.length)
        if labels is not None:
            labels, loss_kwargs = labels
            if index is not None:
                labels = mask_unscored_labels(labels, index, call.length)
            vocab = module.config.get_text_config().vocab_size
            values["loss"] = module.loss_function(logits=values["logits"], labels=labels, vocab_size=vocab, **loss_kwargs)
        elif index is None:
            return None
        return type(output)(**values)

    def _on_input(self, module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        cache = _cache(kwargs)
        seen = cache.get_seq_length() if cache is not None else 0
        self._local.call = self._local.step = None
        if seen == 0:
            self._local.call = self._start_call(kwargs, input_ids)
            return None
        book = book_of(cache)
        if book is None and not getattr(self._local, "recorded", None):
            return None  # an unreduced cache and nothing new to reduce: the model's own way is right
        step = Step(book or CacheBook(seen), kwargs.get("attention_mask"), _attention_impl(self.adapter))
        if getattr(self._local, "recorded", None):  # the vision tower ran: a video arrives in a later turn
            self._local.call = self._start_call(kwargs, input_ids, prefix=step)
            if self._local.call is not None:
                return None
        if book is not None:  # the cache reports untouched lengths: positions need no help
            self._local.step = step
        return None

    def _start_call(self, kwargs: dict, input_ids, prefix: "Step | None" = None) -> Call | None:
        if input_ids is None or input_ids.ndim != 2:
            if not self._warned_no_ids:
                self._warned_no_ids = True
                logger.warning(
                    "framefusion: the model was called without input_ids (inputs_embeds only), so the video "
                    "tokens cannot be located and nothing is reduced; pass input_ids as the processor returns them"
                )
            return None
        recorded, self._local.recorded = getattr(self._local, "recorded", {}), {}
        generation = getattr(self._local, "generation", None)
        if generation is not None:  # every cache-free step of one generate call sees the same videos
            recorded = generation.recorded = recorded or generation.recorded
        inputs = dict(recorded, input_ids=input_ids)
        inputs.update({k: v for k, v in kwargs.items() if v is not None})
        host = _host_copies(inputs)  # the one read of the call start: ids, masks, grids
        batch, length = input_ids.shape
        if prefix is not None:  # the mask covers the cached turns too: this call's columns are the last
            host = {k: v[:, -length:] if k == "attention_mask" and v.ndim == 2 else v for k, v in host.items()}
        layouts = self._layouts(host, generation)
        mask = host.get("attention_mask")
        valid = mask.bool() if isinstance(mask, torch.Tensor) and mask.ndim == 2 else torch.ones(batch, length, dtype=torch.bool)
        if layouts is None or all(len(layout) == 0 for layout in layouts):
            if prefix is None:
                self._store_report(self._empty_report(batch, [r.nonzero().flatten().tolist() for r in valid]))
            return None
        device = input_ids.device
        if kwargs.get("use_cache") is not False:
            generation = None  # with a cache every later step continues this prefill: nothing to replay
        method = self.method
        if generation is not None and generation.decisions is not None:
            method = Replay(generation.decisions)
        samples = [Sample.start(method, b, layout, valid[b], self.num_layers, device, self._pricing) for b, layout in enumerate(layouts)]
        padded = not bool(valid.all())
        return Call(
            samples,
            length,
            padded,
            ReductionTimer(),
            method,
            generation=generation,
            prefix=prefix,
            offset=prefix.book.length if prefix is not None else 0,
            valid=kwargs["attention_mask"][:, -length:].bool() if padded else None,
            attention=_attention_impl(self.adapter),
            first_layer=self.adapter.first_reducible_layer(host),
        )

    def _layouts(self, host: dict, generation: Generation | None) -> list[VideoLayout] | None:
        """The adapter's layouts; for a batch that generate() expanded (beams, several return
        sequences: each row repeated e times in a row, so the recorded grids describe every e-th
        row only), those of every e-th row, repeated. Later cache-free steps of the same generate
        call (rows that beams made differ) reuse the e found at the first."""
        repeats = generation.repeats if generation is not None else None
        if repeats is None:
            try:
                return self.adapter.video_layouts(host)
            except ValueError:
                repeats = row_repeats(host)
                if repeats == 1:
                    raise
        if generation is not None:
            generation.repeats = repeats
        layouts = self.adapter.video_layouts(every_nth_row(host, repeats))
        return None if layouts is None else [layout for layout in layouts for _ in range(repeats)]

    def _layer_hook(self, layer_idx: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            call = getattr(self._local, "call", None)
            if call is not None and not call.prefill_done:
                if call.layers_seen == 0:
                    call.cache = _cache(kwargs)
                    _check_cache(call.cache)
                return self._prefill_layer(call, layer_idx, module, hidden, args, kwargs)
            step = getattr(self._local, "step", None)
            if step is not None:
                return self._decode_layer(step, layer_idx, hidden, args, kwargs)
            return None

        return hook

    # ---------------------------------------------------------------- prefill
    def _prefill_layer(self, call: Call, layer_idx: int, layer, hidden, args, kwargs):
        device = hidden.device
        mark = call.timer.start(device)
        call.layers_seen += 1
        if call.prefix is not None:
            call.prefix_held[layer_idx] = true_length(call.cache, layer_idx)
        full_cos, full_sin = kwargs["position_embeddings"]
        batch = hidden.shape[0]
        full_cos, full_sin = full_cos.expand(batch, -1, -1), full_sin.expand(batch, -1, -1)
        before = call.index
        cos, sin = call.positions(full_cos, full_sin)
        hidden = self._reduce(call, layer_idx, layer, hidden, cos, sin)
        result = None
        if call.index is not None:
            if call.index is not before:
                cos, sin = call.positions(full_cos, full_sin)
            kwargs = dict(kwargs)
            kwargs["position_embeddings"] = (cos, sin)
            prefix_valid = call.prefix_valid(layer_idx)
            kwargs["attention_mask"] = self._prefill_mask(call, hidden.dtype, prefix_valid)
            kwargs["position_ids"] = None
            call.book_layer(layer_idx, prefix_valid)
            if args:
                args = (hidden,) + tuple(args[1:])
            else:
                kwargs["hidden_states"] = hidden
            result = args, kwargs
        elif call.prefix is not None:  # not reduced yet here: a continuation over the earlier turns
            result = self._decode_layer(call.prefix, layer_idx, hidden, args, kwargs)
        call.timer.stop(mark, device)
        if layer_idx == self.num_layers - 1:
            self._finish_prefill(call)
        return result

    def _reduce(self, call: Call, layer_idx: int, layer, hidden, cos, sin) -> torch.Tensor:
        """Run the method for every sample at this layer; repack the batch if anything changed;
        charge every row's books with the tokens this layer runs with."""
        scores_cache: list = []

        def importance_for(b: int):
            def compute():
                if not scores_cache:
                    scores_cache.append(self._importance(call, layer_idx, layer, hidden, cos, sin))
                return scores_cache[0][b, call.vision_slots_in_hidden(b)]

            return compute

        reductions = {}
        for b in call.live_samples(layer_idx):
            reduction = call.decide(b, layer_idx, hidden, importance_for(b))
            if reduction is not None:
                reductions[b] = reduction
        if reductions:
            rows = [sample.apply(layer_idx, hidden[b, call.row_slots(b)], reductions.get(b)) for b, sample in enumerate(call.samples)]
            hidden = call.repack(rows, hidden)
        call.charge_books()
        return hidden

    def _importance(self, call: Call, layer_idx: int, layer, hidden, cos, sin) -> torch.Tensor:
        """(b, Lc) attention of each row's last token to every slot, averaged over heads (float32).
        In a call that continues earlier turns, the keys those turns cached share the softmax."""
        cached_keys = cached_valid = None
        if call.prefix is not None and call.prefix_held[layer_idx]:
            cached_keys = call.cache.layers[layer_idx].keys  # (b, kv_heads, P, d)
            cached_valid = call.prefix_valid(layer_idx)  # (b, P)
        valid = call.valid if call.padded else None
        return last_query_attention(self.adapter, layer, hidden, cos, sin, valid, cached_keys, cached_valid)

    def _prefill_mask(self, call: Call, dtype: torch.dtype, prefix_valid: torch.Tensor | None = None):
        """Mask of the present slots (causal, padding hidden), after the keys earlier turns cached
        (``prefix_valid`` (b, P): which of them are real) in a call that continues a conversation."""
        impl = call.attention
        held = 0 if prefix_valid is None else prefix_valid.shape[1]
        key = (impl, dtype, id(call.index), held, id(call.prefix.book) if call.prefix is not None else None)
        if call.mask_cache is not None and call.mask_cache[0] == key:
            return call.mask_cache[1]
        valid = call.valid
        if not call.padded and prefix_valid is None and (impl.startswith("flash") or impl == "sdpa"):
            mask = None  # plain causal: flash's and sdpa's is_causal path
        else:
            keys = valid if prefix_valid is None else torch.cat([prefix_valid, valid], dim=1)  # (b, P + W)
            mask = causal_mask(keys, valid.shape[1], impl, dtype)
        call.mask_cache = (key, mask)
        return mask

    def _finish_prefill(self, call: Call) -> None:
        call.prefill_done = True
        call.mask_cache = call.position_cache = None  # prefill only: do not hold an (Lc x Lc) mask while decoding
        decisions = [sample.decisions for sample in call.samples]
        if call.generation is not None and call.generation.decisions is None:
            call.generation.decisions = decisions
        if call.prefix is not None and call.book is not None:
            self._carry_earlier_layers(call)
        if call.cache is not None and call.book is not None:
            write_book(call.cache, call.book)
        call.cache = None  # do not keep the cache alive from this thread's state
        report = pending_report(
            self.method.name,
            self.method.cost,
            self.num_layers,
            [sample.ledger for sample in call.samples],
            [len(sample.layout) for sample in call.samples],
            [sample.kept for sample in call.samples],
            decisions,
            call.timer,
            call.offset,
            self.budget,
        )
        self._store_report(report)

    def _carry_earlier_layers(self, call: Call) -> None:
        """Layers that earlier turns shortened and this call did not: their bookkeeping grows by
        this call's tokens, all present (the tokens removed before stay removed)."""
        batch, device = call.valid.shape[0], call.valid.device
        earlier = call.prefix.book
        for layer_idx, padded in earlier.layer_padded.items():
            if layer_idx in call.book.layer_valid:
                continue
            now = torch.ones(batch, call.length, dtype=torch.bool, device=device)
            call.book.layer_valid[layer_idx] = torch.cat([call.prefix_valid(layer_idx), now], dim=1)
            call.book.layer_padded[layer_idx] = padded

    def _empty_report(self, batch: int, kept: list[list[int]]) -> PendingReport:
        report = ReductionReport(
            method=self.method.name,
            num_layers=self.num_layers,
            requested_cost=self.method.cost,
            vision_tokens=[0] * batch,
            vision_tokens_per_layer=[[0] * self.num_layers for _ in range(batch)],
            achieved_cost=[1.0] * batch,
            reduction_seconds=0.0,
            kept_positions=kept,
            decisions=[[] for _ in range(batch)],
            budget=self.budget,
        )
        return PendingReport.ready(report)

    def _store_report(self, report: PendingReport) -> None:
        self._local.report = report
        with self._lock:
            self._last_report = report

    # ----------------------------------------------------------------- decode
    def _decode_layer(self, step: Step, layer_idx: int, hidden, args, kwargs):
        book = step.book
        valid = book.layer_valid.get(layer_idx)  # (b, prefill) real key slots of this layer's prefill
        cache = _cache(kwargs)
        if valid is None or cache is None:
            return None  # this layer's cache has every token: the model's own mask is right
        q = hidden.shape[1]
        impl = step.attention
        # The decode columns of the mask are ones (as generate extends it), so the keys are all
        # valid exactly when this layer's prefill slots had no padding: known without a device read.
        if not book.layer_padded[layer_idx] and (impl.startswith("flash") or (impl == "sdpa" and q == 1)):
            mask = None  # plain causal over every cached key: no tensor work per step
        else:
            prefill = valid.shape[1]
            earlier = true_length(cache, layer_idx) - prefill  # tokens cached after the prefill
            key = (id(valid), prefill, earlier, q, hidden.dtype)  # layers reduced together share it
            if key not in step.masks:
                step.masks[key] = continuation_mask(valid, step.mask, earlier, q, impl, hidden.dtype)
            mask = step.masks[key]
        kwargs = dict(kwargs, attention_mask=mask)
        if impl.startswith("flash"):
            kwargs["position_ids"] = None
        return args, kwargs


# --------------------------------------------------------------------- helpers
def _host_copies(inputs: dict) -> dict:
    """``inputs`` with its integer tensors (ids, masks, grids: small) copied to the host in ONE read;
    floating-point tensors (pixels, embeddings) and everything else stay as they are."""
    names = [k for k, v in inputs.items() if isinstance(v, torch.Tensor) and not torch.is_floating_point(v)]
    if not names:
        return dict(inputs)
    device = inputs[names[0]].device
    flat = torch.cat([inputs[k].reshape(-1).to(device=device, dtype=torch.long) for k in names]).cpu()
    host, offset = dict(inputs), 0
    for k in names:
        t = inputs[k]
        host[k] = flat[offset : offset + t.numel()].view(t.shape).to(t.dtype)
        offset += t.numel()
    return host


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


def _attention_impl(adapter: Adapter) -> str:
    impl = getattr(adapter.text_config(), "_attn_implementation", None) or "eager"
    if impl not in SUPPORTED_ATTENTION:
        raise ValueError(
            f"attention implementation {impl!r} is not supported by framefusion; use one of {SUPPORTED_ATTENTION}"
        )
    return impl


def _as_method(config: Any) -> ReductionMethod:
    if config is None:
        return FrameFusion()
    if isinstance(config, ReductionMethod):
        return config
    raise TypeError(
        f"config must be a reduction method such as framefusion.FrameFusion(cost=0.3) (FrameFusionConfig is the "
        f"same class), or framefusion.registry.config_for(name, cost); got {type(config).__name__}"
    )


BUDGET_UNITS = ("token-layers", "flops")


def apply(
    model: nn.Module, config: ReductionMethod | None = None, *, processor: Any = None, budget: str = "token-layers"
) -> FrameFusionHandle:
    """Apply FrameFusion (or another reduction method) to a loaded model, in place and reversibly.

    ``generate`` and ``forward`` are called exactly as before. Returns a handle whose
    ``last_report()`` describes the last prefill and whose ``remove()`` restores the model; the
    handle is also a context manager. ``processor`` (the model's processor or tokenizer) is needed
    only by families whose video frames are told apart from images by text (InternVL, SmolVLM).
    ``budget`` is what ``cost`` is a share of: ``"token-layers"`` (the paper's: vision tokens summed
    over layers) or ``"flops"`` (the vision tokens' prefill FLOPs, attention included; what
    :func:`framefusion.planning.plan_frames` plans in).
    """
    if budget not in BUDGET_UNITS:
        raise ValueError(f"budget={budget!r} is not a budget unit; allowed: {', '.join(map(repr, BUDGET_UNITS))}")
    method = _as_method(config)
    cost = method.cost
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
    owner = next((_OWNERS[layer] for layer in adapter.decoder_layers() if layer in _OWNERS), None)
    if owner is not None and owner.active:
        raise RuntimeError(
            f"framefusion is already applied to this model's decoder (through {type(owner.model).__name__}); "
            "call that handle's remove() first, then apply again"
        )
    handle = FrameFusionHandle(model, method, adapter, budget)
    model._framefusion_handle = handle
    return handle
