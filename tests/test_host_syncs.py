"""The reduced prefill makes the host wait for the device only where a token count is decided.

Budget (issue 19): per prefill, at most 2 host reads per layer whose vision-token count changes,
plus 2 in all; none in layers that only pass tokens through; none per decode step. Counted on
any device with ``HostSyncCounter`` (see tests/host_syncs.py), as the difference between the
reduced and the untouched model on the same inputs (the model's own reads are not ours).
"""

from __future__ import annotations

import pytest
import torch
from host_syncs import HostSyncCounter

import framefusion
from framefusion import EVSConfig, FastVConfig, FrameFusionConfig, HoliTom, InputMergeConfig, RandomPruneConfig
from framefusion.tiny_models import build_tiny

from conftest import make_inputs


# ----------------------------------------------------------------------------- the counter itself
def test_counter_sees_every_kind_of_host_read():
    x = torch.arange(10.0)
    mask = x > 4
    reads = [
        lambda: x.sum().item(),
        lambda: bool(x.any()),
        lambda: int(x[3]),
        lambda: x[mask],
        lambda: mask.nonzero(),
        lambda: x.cpu(),
        lambda: x.tolist(),
        lambda: x.numpy(),
        lambda: torch.equal(x, x),
        lambda: x.unique(),
        lambda: x.clone().__setitem__(mask, 0.0),
        lambda: torch.masked_select(x, mask),
        lambda: x.repeat_interleave(torch.ones(10, dtype=torch.long)),
    ]
    for i, read in enumerate(reads):
        with HostSyncCounter() as counter:
            read()
        assert counter.total >= 1, f"read {i} not counted"


def test_counter_ignores_device_only_work_and_host_copies():
    x = torch.randn(6, 4)
    with HostSyncCounter() as counter:
        idx = torch.arange(3)
        y = (x[idx] * 2).softmax(-1).sort(-1).indices  # no read: sizes known to the host
        keep = torch.zeros(6, dtype=torch.bool)
        keep[idx] = True  # long indices: no read
        host = x.cpu()  # one read ...
        (host > 0).nonzero()  # ... then host work is free
        host.tolist()
        int(host[0, 0] > 0)
    assert counter.total == 1, counter.kinds
    assert y.shape == (3, 4)


def test_counter_counts_factories_as_device_tensors():
    with HostSyncCounter() as counter:
        torch.ones(4, dtype=torch.bool).nonzero()  # on a GPU this factory tensor may be on the device
    assert counter.total == 1


# ------------------------------------------------------------------------------------ the engine
@pytest.fixture(scope="module")
def qwen():
    from framefusion.tiny_models import make_synthetic_video

    model, processor = build_tiny("qwen2_vl", num_layers=8)
    video = make_synthetic_video(num_frames=16, size=112, seed=0)
    return model, processor, video


def _prefill_reads(model, inputs) -> HostSyncCounter:
    with torch.no_grad(), HostSyncCounter() as counter:
        model(**inputs)
    return counter


def _changing_layers(per_layer: list[int], tokens: int) -> int:
    before = [tokens, *per_layer[:-1]]
    return sum(a != b for a, b in zip(before, per_layer))


@pytest.mark.parametrize(
    "config",
    [
        FrameFusionConfig(cost=0.3),
        FrameFusionConfig(cost=0.7),
        FrameFusionConfig(cost=0.1),  # merges, then prunes
        FrameFusionConfig(cost=0.3, similarity_threshold=0.99, ratio_threshold=0.0),  # cascades
        FrameFusionConfig(cost=0.3, merge=False),
        FrameFusionConfig(cost=0.3, prune=False),
        FastVConfig(cost=0.3),
        InputMergeConfig(cost=0.3),
        RandomPruneConfig(cost=0.3),
        EVSConfig(cost=0.3),
        HoliTom(cost=0.3, layer=4),  # the input stage and the layer-K merge
    ],
    ids=lambda c: repr(c)[:60],
)
def test_reduced_prefill_reads_the_host_only_where_a_count_is_decided(qwen, config):
    model, processor, video = qwen
    inputs = make_inputs(processor, ["What happens?"], videos=[video])
    untouched = _prefill_reads(model, inputs).total
    with framefusion.apply(model, config) as handle:
        reduced = _prefill_reads(model, inputs)
        report = handle.last_report()
    changing = _changing_layers(report.vision_tokens_per_layer[0], report.vision_tokens[0])
    assert changing >= 1
    extra = reduced.total - untouched
    assert extra <= 2 * changing + 2, (extra, changing, reduced.kinds)


def test_pass_through_layers_and_no_reduction_read_nothing(qwen):
    model, processor, video = qwen
    inputs = make_inputs(processor, ["What happens?"], videos=[video])
    untouched = _prefill_reads(model, inputs).total
    # merging off and the whole budget: one read to start, one to find nothing similar, then the
    # layers pass the tokens through
    with framefusion.apply(model, FrameFusionConfig(cost=1.0, similarity_threshold=1.5)) as handle:
        reduced = _prefill_reads(model, inputs)
        assert set(handle.last_report().vision_tokens_per_layer[0]) == {handle.last_report().vision_tokens[0]}
    assert reduced.total - untouched <= 2, reduced.kinds


@pytest.mark.parametrize("attention,batch", [("sdpa", 1), ("eager", 2)])
def test_decode_steps_read_nothing_more_than_untouched(qwen, attention, batch):
    _, processor, video = qwen
    model, _ = build_tiny("qwen2_vl", num_layers=4, attn_implementation=attention, processor=processor)
    questions = ["What happens?", "Which colour is the square in the end?"][:batch]
    inputs = make_inputs(processor, questions, videos=[video] * batch)

    def decode_reads() -> int:
        totals = []
        for new in (2, 5):
            with torch.no_grad(), HostSyncCounter() as counter:
                model.generate(**inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False)
            totals.append(counter.total)
        return totals[1] - totals[0]  # three decode steps

    untouched = decode_reads()
    with framefusion.apply(model, FrameFusionConfig(cost=0.3)):
        reduced = decode_reads()
    assert reduced <= untouched


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.set_sync_debug_mode)")
def test_cuda_sync_debug_mode_agrees():
    import warnings

    from framefusion.tiny_models import make_synthetic_video

    model, processor = build_tiny("qwen2_vl", num_layers=8)
    model = model.to("cuda")
    inputs = make_inputs(processor, ["What happens?"], videos=[make_synthetic_video(16, 112, 0)]).to("cuda")

    def syncs() -> int:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught, torch.no_grad():
                warnings.simplefilter("always")
                model(**inputs)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        return len(caught)

    untouched = syncs()
    with framefusion.apply(model, FrameFusionConfig(cost=0.3)) as handle:
        reduced = syncs()
        per_layer = handle.last_report().vision_tokens_per_layer[0]
    changing = _changing_layers(per_layer, handle.last_report().vision_tokens[0])
    assert reduced - untouched <= 2 * changing + 2
