"""Concurrency, numerics and memory of the reduction."""

import threading

import pytest
import torch
from conftest import greedy

import framefusion
from framefusion import FrameFusionConfig
from framefusion.algorithm import adjacent_similarity, merge_means, merge_roots, previous_same_patch
from framefusion.tiny_models.zoo import build, video_inputs


def test_two_threads_generating_at_once_get_what_they_get_alone(videos):
    model, processor = build("qwen2_vl", num_layers=4)
    jobs = [
        video_inputs(processor, ["Which way does the red disc move?"], [videos[16]]),
        video_inputs(processor, ["How many shapes?", "Colours?"], [videos[8], videos[2]]),
    ]
    config = FrameFusionConfig(cost=0.3, similarity_threshold=0.9)
    with framefusion.apply(model, config) as handle:
        alone = []
        for inputs in jobs:
            alone.append((*greedy(model, inputs, n=6), handle.last_report().vision_tokens_per_layer))
        results: dict = {}
        barrier = threading.Barrier(len(jobs))

        def work(i):
            barrier.wait()
            for _ in range(3):
                got = greedy(model, jobs[i], n=6)
                results.setdefault(i, []).append((*got, handle.last_report().vision_tokens_per_layer))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i, (tokens, logits, counts) in enumerate(alone):
        assert len(results[i]) == 3
        for t2, l2, c2 in results[i]:
            assert torch.equal(t2, tokens)
            torch.testing.assert_close(l2, logits, atol=1e-5, rtol=1e-5)
            assert c2 == counts  # each thread's report is its own


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_model_gives_finite_logits(videos, dtype):
    model, processor = build("qwen2_vl", num_layers=4, dtype=dtype)
    inputs = video_inputs(processor, ["What moves?", "Colour?"], [videos[16], videos[8]])
    inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(dtype)
    with framefusion.apply(model, FrameFusionConfig(cost=0.3, similarity_threshold=0.8)) as handle:
        tokens, logits = greedy(model, inputs, n=3)
        report = handle.last_report()
    assert torch.isfinite(logits.float()).all()
    assert all(c <= 0.3 for c in report.achieved_cost)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_similarity_and_means_survive_zero_and_huge_vectors(dtype):
    big = 6e4 if dtype == torch.float16 else 1e30
    hidden = torch.tensor([[0.0, 0.0], [0.0, 0.0], [big, big], [big, big], [1.0, -1.0], [0.0, 0.0]], dtype=dtype)
    patch = torch.tensor([0, 0, 1, 1, 2, 2])
    prev = previous_same_patch(patch)
    sim = adjacent_similarity(hidden, prev)
    assert torch.isfinite(sim[prev >= 0]).all()
    assert sim[1] == 0 and sim[3] == pytest.approx(1.0) and sim[5] == 0
    root = merge_roots(sim >= 0.5, prev)
    keep, merged = merge_means(hidden, root)
    assert keep.tolist() == [True, True, True, False, True, True]
    assert torch.isfinite(merged.float()).all()


def _allocations(n: int, d: int = 64, per_frame: int = 256) -> tuple[list[int], int]:
    from torch.profiler import ProfilerActivity, profile

    hidden = torch.randn(n, d)
    patch = torch.arange(n) % per_frame
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        prev = previous_same_patch(patch)
        sim = adjacent_similarity(hidden, prev)
        root = merge_roots(sim >= 0.0, prev)
        merge_means(hidden, root)
    allocations = [e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage > 0]
    return allocations, hidden.numel() * hidden.element_size()


def test_reduction_memory_is_linear_in_tokens():
    """Similarity and merging of a long video allocate O(n d), never an n x n matrix."""
    allocations, hidden_bytes = _allocations(64 * 256)  # 64 frames of 256 tokens
    # an n x n float matrix would be one allocation n / d = 256x the hidden states
    assert max(allocations) <= 1.5 * hidden_bytes
    assert sum(allocations) <= 8 * hidden_bytes  # all allocations, not only those alive at once
    small, _ = _allocations(16 * 256)
    assert sum(allocations) / sum(small) < 5  # 4x the tokens: about 4x the memory, not 16x
