"""Benchmark: untouched vs reduced, same model and inputs, interleaved, reported as ratios.

For each number of frames and each setting (the untouched model first, then every method and
budget) it measures, over ``repeats`` interleaved rounds after a warm-up round:
- LLM prefill time (the language model's forward at prefill; synchronised before and after on GPU),
- end-to-end time (processor + vision encoder + LLM prefill + ``new_tokens`` decode steps),
- LLM decode tokens per second,
- time inside the reduction (``ReductionReport.reduction_seconds``: GPU time of its kernels on
  CUDA, wall time on CPU) as a share of the reduced prefill,
- KV-cache bytes after prefill, peak GPU memory (on CUDA),
- the FLOP ratio of the prefill under the kept-token schedule: the speed-up a perfect
  implementation would reach, printed beside every measured one.

Each generate is reported as it finishes (``on_measure``), and the rows of whatever was measured
can be taken at any time (``BenchRun.rows``), so an interrupted run still leaves its numbers.
"""

from __future__ import annotations

import contextlib
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..engine import apply
from ..flops import flop_ratio
from .compare import pyplot
from .memory import LiveTensorMemory, kv_cache_layers

__all__ = [
    "BenchRow",
    "BenchRun",
    "Measurement",
    "build_random_model",
    "environment",
    "load_config",
    "random_model",
    "run_bench",
    "shipped_configs",
    "speedup_figure",
    "write_outputs",
]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "assets" / "configs"


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
    from ..tiny_models import build_tiny_processor, tiny_token_ids

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


REDUCTION_COLUMN = "reduction time (GPU time on CUDA, wall on CPU) / prefill"

# What each row of bench.json holds; written into the file under "keys".
ROW_KEYS = {
    "setting": "name of the setting: untouched, or a method at a budget",
    "method": "the setting's method (speedup.png draws one line per method)",
    "frames": "frames of the video",
    "video_tokens": "video tokens in the prompt",
    "prompt_tokens": "tokens in the prompt, video and text",
    "prefill_s": "LLM prefill seconds of each measured round (synchronised on CUDA)",
    "e2e_s": "end-to-end seconds of each measured round: processor, vision encoder, LLM prefill and decode",
    "decode_tokens_per_s": "LLM decode tokens per second (median step time)",
    "reduction_s": (
        "median seconds inside the reduction per prefill (ReductionReport.reduction_seconds): GPU time of "
        "the reduction's own kernels on CUDA (CUDA events, read after the forward), wall time on CPU"
    ),
    "kv_cache_bytes": "bytes of the KV cache after prefill",
    "peak_gpu_bytes": "peak GPU memory in the warm-up round (null on CPU)",
    "peak_tensor_bytes": "CPU: peak bytes of live tensors during one prefill (LiveTensorMemory; null on a GPU)",
    "achieved_cost": "vision-token compute kept, as a share of the untouched model's",
    "tokens_per_layer": "video tokens entering each decoder layer",
    "flop_speedup": "prefill FLOP ratio under the kept-token schedule: what a perfect implementation would reach",
    "prefill_speedup": "untouched median prefill / this setting's",
    "e2e_speedup": "untouched median end-to-end time / this setting's",
    "kv_cache_ratio": "this setting's KV cache bytes / the untouched model's",
    "extra": "free-form additions",
    "prefill_median": "median of prefill_s",
    "e2e_median": "median of e2e_s",
}


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
    method: str = "untouched"
    prefill_speedup: float = 1.0
    e2e_speedup: float = 1.0
    kv_cache_ratio: float = 1.0
    extra: dict = field(default_factory=dict)
    peak_tensor_bytes: int | None = None  # CPU: peak live tensor bytes of one prefill (LiveTensorMemory)

    @property
    def prefill_median(self) -> float:
        return statistics.median(self.prefill_s)

    @property
    def e2e_median(self) -> float:
        return statistics.median(self.e2e_s)


def method_name(config) -> str:
    """The method of a setting's config, as tables and plots name it (None: untouched)."""
    from ..config import FrameFusionConfig

    if config is None:
        return "untouched"
    if isinstance(config, FrameFusionConfig):
        return "prune-only" if not config.merge else "merge-only" if not config.prune else "FrameFusion"
    return type(config).__name__.removesuffix("Config")


@dataclass
class Measurement:
    """One timed generate of one setting, handed to ``on_measure`` as soon as it is done."""

    frames: int
    round: int  # 0 is the warm-up, not counted in the results
    repeats: int
    setting: str
    prefill_s: float
    e2e_s: float
    reduction_s: float
    achieved_cost: float
    prefill_speedup: float  # against the round's first setting (the untouched model)

    def line(self) -> str:
        when = "warm-up" if self.round == 0 else f"round {self.round}/{self.repeats}"
        return (
            f"{self.frames} frames, {when}, {self.setting}: prefill {self.prefill_s:.4f} s "
            f"(speed-up {self.prefill_speedup:.2f}x), end-to-end {self.e2e_s:.3f} s, "
            f"achieved cost {self.achieved_cost:.3f}, reduction {1000 * self.reduction_s:.2f} ms"
        )


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
    return sum(layer["bytes"] for layer in kv_cache_layers(cache))


def _language_model(model):
    base = model.model if hasattr(model, "lm_head") else model
    return base.language_model


@dataclass
class _Samples:
    """What one setting measured at one frame count: a list entry per measured round."""

    method: str
    prefill: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    decode: list[float] = field(default_factory=list)  # mean decode step of each round
    reduction: list[float] = field(default_factory=list)
    report: Any = None  # of the warm-up's extra forward
    kv_bytes: int = 0
    peak_gpu_bytes: int | None = None
    peak_tensor_bytes: int | None = None  # CPU: live tensors at the peak of one prefill


@dataclass
class _FrameSamples:
    frames: int
    video_tokens: int
    prompt_tokens: int
    samples: dict[str, _Samples]  # in the order of the settings, the untouched model first

    def rows(self, text_config) -> list[BenchRow]:
        """Rows of the settings measured at least once; none before the first setting (the
        reference of every ratio) has been."""
        measured = [(name, s) for name, s in self.samples.items() if s.prefill]
        if not measured or measured[0][1] is not next(iter(self.samples.values())):
            return []
        rows = [self._row(name, s, text_config) for name, s in measured]
        base = rows[0]
        for row in rows:
            row.prefill_speedup = base.prefill_median / row.prefill_median
            row.e2e_speedup = base.e2e_median / row.e2e_median
            row.kv_cache_ratio = row.kv_cache_bytes / base.kv_cache_bytes if base.kv_cache_bytes else 1.0
        return rows

    def _row(self, name: str, s: _Samples, text_config) -> BenchRow:
        report = s.report
        untouched = [self.video_tokens] * text_config.num_hidden_layers
        per_layer = report.vision_tokens_per_layer[0] if report else untouched
        text_tokens = self.prompt_tokens - self.video_tokens
        return BenchRow(
            setting=name,
            frames=self.frames,
            video_tokens=self.video_tokens,
            prompt_tokens=self.prompt_tokens,
            prefill_s=list(s.prefill),
            e2e_s=list(s.e2e),
            decode_tokens_per_s=1.0 / statistics.median(s.decode) if s.decode else 0.0,
            reduction_s=statistics.median(s.reduction),
            kv_cache_bytes=s.kv_bytes,
            peak_gpu_bytes=s.peak_gpu_bytes,
            peak_tensor_bytes=s.peak_tensor_bytes,
            achieved_cost=report.achieved_cost[0] if report else 1.0,
            tokens_per_layer=per_layer,
            flop_speedup=flop_ratio(text_config, text_tokens, self.video_tokens, per_layer),
            method=s.method,
        )


QUESTION = "Describe what happens in this video."  # the prompt every bench asks


def prompt_inputs(processor, question: str, video: np.ndarray, device):
    """The processor's inputs for one question about ``video``, through its chat template, on ``device``."""
    from ..tiny_models.zoo import video_message

    return processor.apply_chat_template([video_message(question, video)], add_generation_prompt=True, tokenize=True,
                                         return_dict=True, return_tensors="pt").to(device)  # fmt: skip


class BenchRun:
    """One benchmark: every setting (the untouched model first) on the same inputs, interleaved
    round by round after a warm-up round, for each frame count.

    ``run()`` measures all of it; ``rows()`` gives, at any time, the rows of what was measured so
    far, so that an interrupted run can still be written (``complete`` is True only after ``run``).
    ``on_measure`` gets a ``Measurement`` after every generate, warm-up included.
    """

    def __init__(
        self,
        model,
        processor,
        videos: dict[int, np.ndarray],
        settings: Sequence[tuple[str, Any]],
        repeats: int = 3,
        new_tokens: int = 16,
        question: str = QUESTION,
        on_measure: Callable[[Measurement], None] | None = None,
        settings_for: dict[int, Sequence[tuple[str, Any]]] | None = None,
        budget: str = "token-layers",
    ):
        if not settings:
            raise ValueError("no settings to measure")
        self.model, self.processor = model, processor
        self.videos, self.settings = videos, list(settings)
        # per frame count, settings other than ``settings`` (equal compute: untouched alone at F)
        self.settings_for = {f: list(v) for f, v in (settings_for or {}).items()}
        self.budget = budget
        self.repeats, self.new_tokens, self.question = repeats, new_tokens, question
        self.on_measure = on_measure
        self.complete = False
        self._device = next(model.parameters()).device
        self._cuda = self._device.type == "cuda"
        self._measured: dict[int, _FrameSamples] = {}

    def run(self, progress: bool = True) -> list[BenchRow]:
        from tqdm.auto import tqdm

        timer = _LLMTimer(_language_model(self.model), self._cuda)
        total = (self.repeats + 1) * sum(len(self._settings(f)) for f in self.videos)
        bar = tqdm(total=total, desc="bench", disable=not progress)
        try:
            for frames, video in self.videos.items():
                self._run_frames(frames, video, timer, bar)
        finally:
            bar.close()
            timer.remove()
        self.complete = True
        return self.rows()

    def _settings(self, frames: int) -> list[tuple[str, Any]]:
        return self.settings_for.get(frames, self.settings)

    def rows(self) -> list[BenchRow]:
        text_config = self.model.config.get_text_config()
        return [row for state in self._measured.values() for row in state.rows(text_config)]

    def _run_frames(self, frames: int, video: np.ndarray, timer: _LLMTimer, bar) -> None:
        def prepare():
            return prompt_inputs(self.processor, self.question, video, self._device)

        ids = prepare()["input_ids"]
        state = self._measured[frames] = _FrameSamples(
            frames=frames,
            video_tokens=int((ids == self.model.config.video_token_id).sum()),
            prompt_tokens=int(ids.shape[1]),
            samples={name: _Samples(method_name(config)) for name, config in self._settings(frames)},
        )
        for round_ in range(self.repeats + 1):
            reference = None
            for name, config in self._settings(frames):
                prefill, e2e, report = self._generate(config, prepare, timer, state.samples[name], round_ == 0)
                reference = reference or prefill
                if self.on_measure is not None:
                    self.on_measure(
                        Measurement(
                            frames=frames,
                            round=round_,
                            repeats=self.repeats,
                            setting=name,
                            prefill_s=prefill,
                            e2e_s=e2e,
                            reduction_s=report.reduction_seconds if report else 0.0,
                            achieved_cost=report.achieved_cost[0] if report else 1.0,
                            prefill_speedup=reference / prefill,
                        )
                    )
                bar.update()

    def _generate(self, config, prepare, timer: _LLMTimer, samples: _Samples, warm_up: bool):
        """One timed generate of one setting, recorded in ``samples`` unless it is the warm-up,
        which instead measures the KV cache and peak memory once. Returns (prefill s, e2e s, report)."""
        handle = apply(self.model, config, budget=self.budget) if config is not None else None
        try:
            timer.reset()
            if self._cuda:
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            with torch.inference_mode():
                self.model.generate(
                    **prepare(), max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens, do_sample=False
                )
            if self._cuda:
                torch.cuda.synchronize()
            e2e = time.perf_counter() - start
            prefill, decode = timer.prefill[0], list(timer.decode)
            report = handle.last_report() if handle else None
            if warm_up:
                memory = contextlib.nullcontext() if self._cuda else LiveTensorMemory()
                with torch.inference_mode(), memory:
                    out = self.model(**prepare(), use_cache=True, logits_to_keep=1)
                samples.peak_tensor_bytes = None if self._cuda else memory.peak
                samples.kv_bytes = _kv_bytes(output_cache(out))
                del out
                samples.peak_gpu_bytes = torch.cuda.max_memory_allocated() if self._cuda else None
                samples.report = handle.last_report() if handle else None
        finally:
            if handle is not None:
                handle.remove()
        if not warm_up:
            samples.prefill.append(prefill)
            samples.e2e.append(e2e)
            if decode:
                samples.decode.append(sum(decode) / len(decode))
            samples.reduction.append(report.reduction_seconds if report else 0.0)
        return prefill, e2e, report


def run_bench(model, processor, videos: dict[int, np.ndarray], settings: Sequence[tuple[str, Any]], *,
              progress: bool = True, **options) -> list[BenchRow]:  # fmt: skip
    """``videos`` maps a frame count to (T, H, W, 3) frames; ``settings`` are (name, config) pairs,
    config None meaning untouched; ``options``: :class:`BenchRun`'s (``repeats``, ``new_tokens``,
    ``question``, ``on_measure``). Returns one row per frame count and setting (see ``BenchRun``)."""
    return BenchRun(model, processor, videos, settings, **options).run(progress)


def matched_rows(rows: Sequence[BenchRow], plans: dict[int, Any], match_frames: int) -> list[dict]:
    """Equal compute: each reduced setting at a wanted frame count against the untouched model at
    ``match_frames`` (``plans``: the :class:`~framefusion.planning.FramePlan` of each wanted count):
    end-to-end and LLM-prefill time ratios (> 1: faster than the matched untouched run), peak memory
    ratio (GPU only), and the compute spent against the plan's target."""
    base = next((r for r in rows if r.frames == match_frames and r.method == "untouched"), None)
    if base is None:
        return []
    out = []
    for r in rows:
        plan = plans.get(r.frames)
        if plan is None or r.method == "untouched":
            continue
        out.append(dict(
            setting=r.setting, frames=r.frames, match_frames=match_frames, cost=plan.cost, scope=plan.scope,
            spent_vs_target=plan.spent(r.tokens_per_layer),
            e2e_vs_matched=base.e2e_median / r.e2e_median, prefill_vs_matched=base.prefill_median / r.prefill_median,
            peak_memory_vs_matched=_peak(r) / _peak(base) if _peak(r) and _peak(base) else None,
            kv_cache_vs_matched=r.kv_cache_bytes / base.kv_cache_bytes if base.kv_cache_bytes else None,
        ))  # fmt: skip
    return out


def _peak(row: BenchRow) -> int | None:
    """GPU: peak allocated bytes of the generate; CPU: peak live tensor bytes of a prefill."""
    return row.peak_gpu_bytes or row.peak_tensor_bytes


def format_matched(matched: Sequence[dict]) -> str:
    """The equal-compute table (markdown)."""
    if not matched:
        return ""
    lines = ["| setting | frames | for the compute of | cost (FLOP-priced) | compute spent / target | end-to-end speed vs matched "
             "| LLM prefill speed vs matched | KV cache vs matched | peak memory vs matched (GPU: allocated; CPU: prefill's live tensors) |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for m in matched:
        peak = "-" if m["peak_memory_vs_matched"] is None else f"{m['peak_memory_vs_matched']:.2f}x"
        kv = "-" if m["kv_cache_vs_matched"] is None else f"{m['kv_cache_vs_matched']:.2f}x"
        lines.append(f"| {m['setting']} | {m['frames']} | {m['match_frames']} untouched ({m['scope']}) | {m['cost']:.4f} | "
                     f"{m['spent_vs_target']:.4f} | {m['e2e_vs_matched']:.2f}x | {m['prefill_vs_matched']:.2f}x | {kv} | {peak} |")  # fmt: skip
    return "\n".join(lines)


def environment(model) -> dict:
    """What measured times depend on besides the settings: device, dtype, attention, versions."""
    import transformers

    param = next(model.parameters())
    cuda = param.device.type == "cuda"
    return {
        "device": str(param.device),
        "device_name": torch.cuda.get_device_name(param.device) if cuda else platform.processor() or "cpu",
        "dtype": str(param.dtype).removeprefix("torch."),
        "attn_implementation": model.config._attn_implementation,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
    }


def format_table(rows: Sequence[BenchRow]) -> str:
    head = (
        "| frames | setting | video tokens | achieved cost | LLM prefill s (min-max) | prefill speed-up | FLOP bound "
        f"| share of bound | e2e s | e2e speed-up | {REDUCTION_COLUMN} | KV cache | decode tok/s | rounds |"
    )
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        lines.append(
            f"| {r.frames} | {r.setting} | {r.video_tokens} | {r.achieved_cost:.3f} "
            f"| {r.prefill_median:.3f} ({min(r.prefill_s):.3f}-{max(r.prefill_s):.3f}) | {r.prefill_speedup:.2f}x "
            f"| {r.flop_speedup:.2f}x | {100 * r.prefill_speedup / r.flop_speedup:.0f}% | {r.e2e_median:.3f} "
            f"| {r.e2e_speedup:.2f}x | {100 * r.reduction_s / r.prefill_median:.1f}% "
            f"| {r.kv_cache_ratio:.2f} | {r.decode_tokens_per_s:.1f} | {len(r.prefill_s)} |"
        )
    return "\n".join(lines)


def format_markdown(rows: Sequence[BenchRow], meta: dict) -> str:
    """bench.md: what was measured and where, then the table."""
    title = "# framefusion bench"
    if meta.get("complete") is False:
        title += f" (INCOMPLETE: stopped by {meta.get('stopped_by', 'an error')}; the rows hold the rounds finished)"
    facts = [f"- {key}: `{value}`" if key == "command" else f"- {key}: {value}" for key, value in meta.items()
             if key != "matched"]  # fmt: skip
    note = (
        f"{REDUCTION_COLUMN}: the reduction's own time per prefill; on CUDA the GPU time of its "
        "kernels (CUDA events), on CPU wall time. FLOP bound: the prefill speed-up a perfect "
        "implementation of the kept-token schedule would reach."
    )
    parts = [title, "\n".join(facts), format_table(rows), note]
    if meta.get("matched"):
        parts += ["## Equal compute (against the untouched model at the matched frame count)", format_matched(meta["matched"])]
    return "\n\n".join(parts) + "\n"


def bench_payload(rows: Sequence[BenchRow], meta: dict | None = None) -> dict:
    """What bench.json holds (and ``--json`` prints)."""
    return {
        "meta": dict(meta or {}),
        "keys": ROW_KEYS,
        "rows": [dict(asdict(r), prefill_median=r.prefill_median, e2e_median=r.e2e_median) for r in rows],
    }


def write_outputs(rows: Sequence[BenchRow], out_dir: str | Path, meta: dict | None = None) -> dict[str, Path]:
    """bench.json, bench.md and (with matplotlib, when there are rows) speedup.png and tokens_per_layer.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    paths = {"json": out / "bench.json", "markdown": out / "bench.md"}
    paths["json"].write_text(json.dumps(bench_payload(rows, meta), indent=2))
    paths["markdown"].write_text(format_markdown(rows, meta))
    plt = pyplot(warn=False)
    if plt is None or not rows:
        return paths
    for key, figure, name in (
        ("speedup", speedup_figure(rows), "speedup.png"),
        ("tokens", tokens_figure(rows), "tokens_per_layer.png"),
    ):
        paths[key] = out / name
        figure.savefig(paths[key], dpi=120)
        plt.close(figure)
    return paths


def method_lines(rows: Sequence[BenchRow]) -> dict[tuple[int, str], list[BenchRow]]:
    """The reduced rows by (frames, method), each sorted by achieved cost: one plotted line each."""
    lines: dict[tuple[int, str], list[BenchRow]] = {}
    for r in sorted(rows, key=lambda r: r.frames):
        if r.method != "untouched":
            lines.setdefault((r.frames, r.method), []).append(r)
    for sub in lines.values():
        sub.sort(key=lambda r: r.achieved_cost)
    return lines


def speedup_figure(rows: Sequence[BenchRow]):
    """Measured prefill speed-up against achieved cost, one solid line per method (and frame
    count), with that method's FLOP bound dashed in the same colour."""
    plt = pyplot(warn=False)
    fig, ax = plt.subplots(figsize=(6, 4))
    several_frames = len({r.frames for r in rows}) > 1
    for (frames, method), sub in method_lines(rows).items():
        label = f"{method}, {frames} frames" if several_frames else method
        costs = [r.achieved_cost for r in sub]
        line = ax.plot(costs, [r.prefill_speedup for r in sub], "o-", label=f"{label}: measured")[0]
        ax.plot(costs, [r.flop_speedup for r in sub], "--", color=line.get_color(), label=f"{label}: FLOP bound")
    ax.set_xlabel("achieved cost (share of vision-token compute)")
    ax.set_ylabel("LLM prefill speed-up vs untouched")
    ax.grid(alpha=0.3)
    if ax.get_lines():
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def tokens_figure(rows: Sequence[BenchRow]):
    """Video tokens entering each decoder layer, one step line per setting, at the most frames."""
    plt = pyplot(warn=False)
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
    return fig
