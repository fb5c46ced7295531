"""A long clip through a small model on the CPU, measured: the vision tower chunked or not, FrameFusion or not.

:func:`measure_long_video` makes a synthetic QA v2 clip of ``frames`` frames (1 fps: 600 frames is ten
minutes), loads the shipped ``synthetic-v2`` model (a Qwen2-VL) unless one is given, and measures

- the vision stage alone (``get_video_features``): wall time and peak live tensor memory in one pass and
  in chunks of ``chunk`` frames (:func:`framefusion.chunked_vision`), the bound the chunked peak must stay
  under (the peak of one chunk encoded alone, plus twice the output) and that both give the same features;
- ``generate`` (greedy, ``new_tokens`` tokens; after a warm-up) untouched in one pass, untouched with
  chunking, and FrameFusion(cost) with chunking: the answer, the vision tokens (per layer with
  FrameFusion), wall time and the process's resident memory before and at its peak during a plain call
  (VmRSS after handing freed memory back; VmHWM reset before the call where Linux allows), and the peak
  live tensor memory (:class:`LiveTensorMemory`) of a second, counted call (counting slows it down);
- the KV cache after a prefill under each setting: bytes of each layer's keys and values and the
  tokens they hold (FrameFusion's shortened layers hold the kept tokens only).

``scripts/long_video.py`` runs it at 600 frames and writes ``docs/long_video/``; a test runs it at 120.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import time
from pathlib import Path
from typing import Any

import torch

from ..chunking import chunked_vision
from .memory import LiveTensorMemory, kv_cache_layers

__all__ = [
    "highest_rss_bytes",
    "measure_long_video",
    "peak_rss_bytes",
    "release_freed_memory",
    "reset_peak_rss",
    "rss_bytes",
    "tensor_bytes",
]


def release_freed_memory() -> None:
    """Collect garbage and hand the C allocator's freed memory back to the system (glibc ``malloc_trim``), so
    that the resident memory before a call is what is alive, not what earlier calls left cached."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


_HIGHEST_RSS = [0]  # the highest peak RSS seen before any reset


def highest_rss_bytes() -> int:
    """The highest resident set size this process reached, resets by :func:`reset_peak_rss` included (after a
    reset, VmHWM and ``ru_maxrss`` only cover the time since)."""
    return max(_HIGHEST_RSS[0], peak_rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set size (Linux: ``5`` to ``/proc/self/clear_refs``); False where
    that is not possible (the peak then covers the whole process). :func:`highest_rss_bytes` keeps the
    highest peak seen before."""
    _HIGHEST_RSS[0] = highest_rss_bytes()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_bytes(field: str) -> int | None:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes, None where /proc is not there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_bytes() -> int | None:
    """Resident set size of this process now (VmRSS), None where /proc is not there."""
    return _status_bytes("VmRSS")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process since start or the last :func:`reset_peak_rss` (VmHWM), else
    ``resource.getrusage``'s ``ru_maxrss`` (the whole process's)."""
    peak = _status_bytes("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def tensor_bytes(value: Any) -> int:
    """Bytes of the distinct storages of the tensors in ``value`` (nested outputs, tuples, lists, dicts)."""
    seen: dict[int, int] = {}

    def walk(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            s = v.untyped_storage()
            seen[s._cdata] = s.nbytes()
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, (tuple, list)):
            for x in v:
                walk(x)

    walk(value)
    return sum(seen.values())


def measure_long_video(frames: int = 600, chunk: int = 16, cost: float = 0.3, new_tokens: int = 4,
                       index: int = 0, model=None, processor=None, unchunked_generate: bool = True) -> dict:  # fmt: skip
    """The measurements described in the module docstring, as a JSON-ready dict (bytes, seconds)."""
    from .. import FrameFusion
    from ..data.synthetic_qa import chat_text
    from ..data.synthetic_qa_v2 import SIZE, make_sample
    from .loading import load_model

    if model is None:
        model, processor, _ = load_model("synthetic-v2", device="cpu")
    sample = make_sample("test", index, num_frames=frames, size=SIZE)
    started = time.perf_counter()
    inputs = processor(text=[chat_text(processor, sample.question)], videos=[sample.video], padding=True,
                       return_tensors="pt")  # fmt: skip
    prepare_s = time.perf_counter() - started
    base = model.model
    video_tokens = int((inputs["input_ids"] == base.config.video_token_id).sum())
    grid = [int(v) for v in inputs["video_grid_thw"][0]]
    out: dict[str, Any] = dict(
        frames=frames, frame_size=list(sample.video.shape[1:3]), chunk_frames=chunk, question=sample.question,
        truth=sample.answer, video_grid_thw=grid, video_tokens=video_tokens,
        prompt_tokens=int(inputs["input_ids"].shape[1]), prepare_s=prepare_s,
        pixel_bytes=tensor_bytes(inputs["pixel_values_videos"]), frames_bytes=int(sample.video.nbytes),
        threads=torch.get_num_threads(),
    )  # fmt: skip
    out["vision"] = _vision_stage(model, inputs, chunk)
    with torch.inference_mode(), chunked_vision(model, frames=chunk):  # warm-up (allocator, kernels)
        model.generate(**inputs, max_new_tokens=1, do_sample=False)
    settings = [("untouched, one pass", None, False)] if unchunked_generate else []
    settings += [
        ("untouched, chunked", None, True),
        (f"FrameFusion(cost={cost}), chunked", FrameFusion(cost=cost), True),
    ]
    out["generate"] = [_generate(model, processor, inputs, name, method, chunk if chunked else None, new_tokens)
                       for name, method, chunked in settings]  # fmt: skip
    return out


def _vision_stage(model, inputs, chunk: int) -> dict:
    """``get_video_features`` in one pass and chunked: wall time (after a warm-up, no counting), peak live
    tensor memory (a second call each, counted), the bound of the chunked peak, and whether they are equal."""
    base = model.model
    pixels, grid = inputs["pixel_values_videos"], inputs["video_grid_thw"]

    def encode(p, g, count: bool):
        release_freed_memory()
        with torch.inference_mode(), LiveTensorMemory() if count else _Nothing() as mem:
            started = time.perf_counter()
            result = base.get_video_features(p, g, return_dict=True)
            seconds = time.perf_counter() - started
        return result, (mem.peak if count else None), seconds

    encode(pixels, grid, False)  # warm-up
    one, _, one_s = encode(pixels, grid, False)
    del one
    one, one_peak, _ = encode(pixels, grid, True)
    with chunked_vision(model, frames=chunk) as handle:
        _, _, chunked_s = encode(pixels, grid, False)
        chunked, chunked_peak, _ = encode(pixels, grid, True)
        chunks = handle.last_chunks
    same = torch.equal(torch.cat(one.pooler_output), torch.cat(chunked.pooler_output)) and torch.equal(
        one.last_hidden_state, chunked.last_hidden_state
    )
    output = tensor_bytes(one)
    del one, chunked
    # one chunk alone: the first chunk's temporal patches, encoded in one pass
    temporal = int(base.config.vision_config.temporal_patch_size)
    t, h, w = (int(v) for v in grid[0])
    first = min(t, chunk // temporal)
    _, chunk_peak, _ = encode(pixels[: first * h * w], torch.tensor([[first, h, w]], dtype=grid.dtype), True)
    return dict(
        peak_one_pass=one_peak, peak_chunked=chunked_peak, seconds_one_pass=one_s, seconds_chunked=chunked_s,
        chunks=chunks, output_bytes=output, peak_one_chunk_alone=chunk_peak,
        bound_chunked=chunk_peak + 2 * output, equal=bool(same),
    )  # fmt: skip


class _Nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None


def _generate(model, processor, inputs, name: str, method, chunk: int | None, new_tokens: int) -> dict:
    """One setting: a timed generate (its peak RSS measured), a second one counting live tensors, a prefill
    whose KV cache is measured."""
    from .. import apply
    from .bench import output_cache

    handle = apply(model, method, processor=processor) if method is not None else None
    chunks = chunked_vision(model, frames=chunk) if chunk is not None else None
    run = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    try:
        release_freed_memory()
        reset = reset_peak_rss()
        before = rss_bytes()
        started = time.perf_counter()
        with torch.inference_mode():
            sequences = model.generate(**inputs, **run)
        seconds = time.perf_counter() - started
        rss = peak_rss_bytes()
        tokens = sequences[0, inputs["input_ids"].shape[1] :].tolist()
        report = handle.last_report() if handle is not None else None
        del sequences
        release_freed_memory()
        with torch.inference_mode(), LiveTensorMemory() as mem:
            counted = model.generate(**inputs, **run)
        same = counted[0, inputs["input_ids"].shape[1] :].tolist() == tokens
        del counted
        with torch.inference_mode():
            cache = kv_cache_layers(output_cache(model(**inputs, use_cache=True, logits_to_keep=1)))
    finally:
        if chunks is not None:
            chunks.remove()
        if handle is not None:
            handle.remove()
    return dict(
        setting=name, tokens=tokens, answer=processor.decode(tokens, skip_special_tokens=True).strip(),
        seconds=seconds, peak_tensor_bytes=mem.peak, counted_run_same_tokens=same, peak_rss_bytes=rss,
        rss_before_bytes=before, rss_peak_reset=reset,
        vision_tokens_per_layer=report.vision_tokens_per_layer[0] if report is not None else None,
        achieved_cost=float(report.achieved_cost[0]) if report is not None else None,
        kv_cache=cache, kv_cache_bytes=sum(r["bytes"] for r in cache),
    )  # fmt: skip
