"""Benchmark: untouched vs reduced, same model and inputs, interleaved, reported as ratios.

For each number of frames and each setting (the untouched model first, then every method and
budget) it measures, over ``repeats`` interleaved rounds after a warm-up round:
- LLM prefill time (the language model's forward at prefill; CUDA events on GPU),
- end-to-end time (processor + vision encoder + LLM prefill + ``new_tokens`` decode steps),
- LLM decode tokens per second,
- time inside the reduction (from the report) as a share of the reduced prefill,
- KV-cache bytes after prefill, peak GPU memory (on CUDA),
- the FLOP ratio of the prefill under the kept-token schedule: the speed-up a perfect
  implementation would reach, printed beside every measured one.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .engine import apply
from .flops import flop_ratio

__all__ = [
    "BenchRow",
    "build_random_model",
    "load_config",
    "random_model",
    "run_bench",
    "shipped_configs",
    "write_outputs",
]

CONFIG_DIR = Path(__file__).resolve().parent / "assets" / "configs"


def shipped_configs() -> list[str]:
    """Names of the real-architecture configs shipped with framefusion (random weights)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name: str, vision_depth: int | None = None, token_ids: dict | None = None):
    """The transformers config of a shipped architecture; ``token_ids`` override its special tokens."""
    from transformers import Qwen2VLConfig

    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown config {name!r}; shipped: {shipped_configs()}")
    spec = json.loads(path.read_text())
    spec = {k: v for k, v in spec.items() if not k.startswith("_") and k != "model_type"}
    if vision_depth is not None:
        spec["vision_config"] = dict(spec["vision_config"], depth=vision_depth)
    config = Qwen2VLConfig(**spec)
    if token_ids:
        config.image_token_id = token_ids["image"]
        config.video_token_id = token_ids["video"]
        config.vision_start_token_id = token_ids["vision_start"]
        config.vision_end_token_id = token_ids["vision_end"]
        config.text_config.eos_token_id = token_ids["eos"]
        config.text_config.pad_token_id = token_ids["pad"]
    return config


def build_random_model(
    name: str,
    dtype: torch.dtype = torch.bfloat16,
    vision_depth: int | None = None,
    size: int = 448,
    device: str | torch.device = "cpu",
    attn_implementation: str = "sdpa",
    seed: int = 0,
):
    """A shipped real-size config with random weights, and a processor whose token ids match it.

    The tokenizer is framefusion's tiny offline one: its special-token ids are written into the
    config; the LLM keeps its real shape (vocabulary size included).
    """
    from .models import build_tiny_processor, tiny_token_ids

    processor = build_tiny_processor("qwen2_vl", max_pixels=size * size)
    config = load_config(name, vision_depth, tiny_token_ids(processor))
    return random_model(config, dtype, device, attn_implementation, seed), processor


def random_model(
    config, dtype: torch.dtype, device: str | torch.device = "cpu", attn_implementation: str = "sdpa", seed: int = 0
):
    """A Qwen2-VL of ``config`` with seeded random weights, created on ``device`` in ``dtype``.

    Created where it will run: a 7B shape takes seconds this way on a GPU, while built on the CPU
    and then moved it did not finish in 5 minutes. On the CPU the weights are those of a plain
    seeded ``_from_config``; on a GPU they come from its own generator (deterministic, not equal).
    """
    from transformers import Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration._from_config(
            config, dtype=dtype, attn_implementation=attn_implementation
        )
    return model.eval()


@dataclass
class BenchRow:
    setting: str
    frames: int
    video_tokens: int
    prompt_tokens: int
    prefill_s: list[float]
    e2e_s: list[float]
    decode_tokens_per_s: float
    reduction_s: float
    kv_cache_bytes: int
    peak_gpu_bytes: int | None
    achieved_cost: float
    tokens_per_layer: list[int]
    flop_speedup: float
    prefill_speedup: float = 1.0
    e2e_speedup: float = 1.0
    kv_cache_ratio: float = 1.0
    extra: dict = field(default_factory=dict)

    @property
    def prefill_median(self) -> float:
        return statistics.median(self.prefill_s)

    @property
    def e2e_median(self) -> float:
        return statistics.median(self.e2e_s)


class _LLMTimer:
    """Times the language model's forward calls: prefill (q > 1) and decode (q == 1) apart."""

    def __init__(self, module: torch.nn.Module, cuda: bool):
        self.cuda = cuda
        self.prefill: list[float] = []
        self.decode: list[float] = []
        self._hooks = [
            module.register_forward_pre_hook(self._pre, with_kwargs=True),
            module.register_forward_hook(self._post, with_kwargs=True),
        ]

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _pre(self, module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        self._q = embeds.shape[1] if embeds is not None else 1
        self._start = self._now()

    def _post(self, module, args, kwargs, output):
        elapsed = self._now() - self._start
        (self.prefill if self._q > 1 else self.decode).append(elapsed)

    def reset(self) -> None:
        self.prefill.clear()
        self.decode.clear()

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()


def output_cache(output):
    """The KV cache of a model output (``cache`` from transformers 5.24 on, ``past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _kv_bytes(cache) -> int:
    total = 0
    for layer in getattr(cache, "layers", []):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def _language_model(model):
    base = model.model if hasattr(model, "lm_head") else model
    return base.language_model


def run_bench(
    model,
    processor,
    videos: dict[int, np.ndarray],
    settings: Sequence[tuple[str, Any]],
    repeats: int = 3,
    new_tokens: int = 16,
    question: str = "Describe what happens in this video.",
    progress: bool = True,
) -> list[BenchRow]:
    """``videos`` maps a frame count to (T, H, W, 3) frames; ``settings`` are (name, config) pairs,
    config None meaning untouched. Returns one row per frame count and setting."""
    from tqdm.auto import tqdm

    from .models.zoo import video_message

    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    timer = _LLMTimer(_language_model(model), cuda)
    text_config = model.config.get_text_config()
    rows: list[BenchRow] = []
    total = len(videos) * (repeats + 1) * len(settings)
    bar = tqdm(total=total, desc="bench", disable=not progress)
    try:
        for frames, video in videos.items():
            conversation = [video_message(question, video)]

            def prepare(conversation=conversation):
                inputs = processor.apply_chat_template(
                    conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
                )
                return inputs.to(device)

            inputs = prepare()
            video_tokens = int((inputs["input_ids"] == model.config.video_token_id).sum())
            prompt_tokens = int(inputs["input_ids"].shape[1])
            measured = {name: {"prefill": [], "e2e": [], "decode": [], "reduction": []} for name, _ in settings}
            reports, kv, peak = {}, {}, {}
            for round_ in range(repeats + 1):
                for name, config in settings:
                    handle = apply(model, config) if config is not None else None
                    try:
                        timer.reset()
                        if cuda:
                            torch.cuda.reset_peak_memory_stats()
                        start = time.perf_counter()
                        with torch.inference_mode():
                            batch = prepare()
                            model.generate(
                                **batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
                            )
                        if cuda:
                            torch.cuda.synchronize()
                        e2e = time.perf_counter() - start
                        report = handle.last_report() if handle else None
                        if round_ == 0:  # warm-up; also measure the cache once
                            with torch.inference_mode():
                                out = model(**prepare(), use_cache=True, logits_to_keep=1)
                            kv[name] = _kv_bytes(output_cache(out))
                            del out
                            peak[name] = torch.cuda.max_memory_allocated() if cuda else None
                            reports[name] = handle.last_report() if handle else None
                        else:
                            m = measured[name]
                            m["prefill"].append(timer.prefill[0])
                            m["e2e"].append(e2e)
                            if timer.decode:
                                m["decode"].append(sum(timer.decode) / len(timer.decode))
                            m["reduction"].append(report.reduction_seconds if report else 0.0)
                    finally:
                        if handle is not None:
                            handle.remove()
                    bar.update()
            base = None
            for name, _ in settings:
                m, report = measured[name], reports[name]
                per_layer = report.vision_tokens_per_layer[0] if report else [video_tokens] * text_config.num_hidden_layers
                row = BenchRow(
                    setting=name,
                    frames=frames,
                    video_tokens=video_tokens,
                    prompt_tokens=prompt_tokens,
                    prefill_s=m["prefill"],
                    e2e_s=m["e2e"],
                    decode_tokens_per_s=1.0 / statistics.median(m["decode"]) if m["decode"] else 0.0,
                    reduction_s=statistics.median(m["reduction"]),
                    kv_cache_bytes=kv[name],
                    peak_gpu_bytes=peak[name],
                    achieved_cost=report.achieved_cost[0] if report else 1.0,
                    tokens_per_layer=per_layer,
                    flop_speedup=flop_ratio(text_config, prompt_tokens - video_tokens, video_tokens, per_layer),
                )
                base = base or row
                row.prefill_speedup = base.prefill_median / row.prefill_median
                row.e2e_speedup = base.e2e_median / row.e2e_median
                row.kv_cache_ratio = row.kv_cache_bytes / base.kv_cache_bytes if base.kv_cache_bytes else 1.0
                rows.append(row)
    finally:
        bar.close()
        timer.remove()
    return rows


def format_table(rows: Sequence[BenchRow]) -> str:
    head = (
        "| frames | setting | video tokens | achieved cost | LLM prefill s (min-max) | prefill speed-up | FLOP bound "
        "| share of bound | e2e s | e2e speed-up | reduction % of prefill | KV cache | decode tok/s |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        lines.append(
            f"| {r.frames} | {r.setting} | {r.video_tokens} | {r.achieved_cost:.3f} "
            f"| {r.prefill_median:.3f} ({min(r.prefill_s):.3f}-{max(r.prefill_s):.3f}) | {r.prefill_speedup:.2f}x "
            f"| {r.flop_speedup:.2f}x | {100 * r.prefill_speedup / r.flop_speedup:.0f}% | {r.e2e_median:.3f} "
            f"| {r.e2e_speedup:.2f}x | {100 * r.reduction_s / r.prefill_median:.1f}% "
            f"| {r.kv_cache_ratio:.2f} | {r.decode_tokens_per_s:.1f} |"
        )
    return "\n".join(lines)


def write_outputs(rows: Sequence[BenchRow], out_dir: str | Path, meta: dict | None = None) -> dict[str, Path]:
    """bench.json, bench.md and (with matplotlib) speedup.png and tokens_per_layer.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md"}
    payload = {"meta": meta or {}, "rows": [dict(asdict(r), prefill_median=r.prefill_median, e2e_median=r.e2e_median) for r in rows]}
    paths["json"].write_text(json.dumps(payload, indent=2))
    paths["markdown"].write_text(format_table(rows) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return paths
    fig, ax = plt.subplots(figsize=(6, 4))
    for frames in sorted({r.frames for r in rows}):
        sub = [r for r in rows if r.frames == frames and r.achieved_cost < 1.0]
        if not sub:
            continue
        sub.sort(key=lambda r: r.achieved_cost)
        costs = [r.achieved_cost for r in sub]
        line = ax.plot(costs, [r.prefill_speedup for r in sub], "o-", label=f"{frames} frames: measured")[0]
        ax.plot(costs, [r.flop_speedup for r in sub], "--", color=line.get_color(), label=f"{frames} frames: FLOP bound")
    ax.set_xlabel("achieved cost (share of vision-token compute)")
    ax.set_ylabel("LLM prefill speed-up vs untouched")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths["speedup"] = out / "speedup.png"
    fig.savefig(paths["speedup"], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    frames = max(r.frames for r in rows)
    for r in rows:
        if r.frames == frames:
            ax.step(range(len(r.tokens_per_layer)), r.tokens_per_layer, where="post", label=r.setting)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("video tokens")
    ax.set_title(f"video tokens per layer ({frames} frames)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths["tokens"] = out / "tokens_per_layer.png"
    fig.savefig(paths["tokens"], dpi=120)
    plt.close(fig)
    return paths
