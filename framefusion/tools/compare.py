"""Methods side by side: fidelity to the untouched model against the compute they use.

rows = compare_methods(model, processor, samples, sweep([FrameFusionConfig(), FastVConfig()], [0.2, 0.5]),
                       out_dir="outputs/compare")

For every config (a method at one budget) and every sample, the model generates ``new_tokens``
tokens greedily with the method applied and is compared with the untouched model on the same
sample:

- agreement: share of the generated positions whose token equals the untouched model's;
- prefix agreement: length of the common prefix of the two generations / ``new_tokens``;
- KL: ``KL(untouched || reduced)`` of the first next-token distribution (nats, float64);
- prefill seconds: median wall time of a forward over the prompt (vision tower included), after
  one untimed warm-up forward; prefill spread: the largest max/min of those timed forwards over one
  sample (None with ``repeats=1``), and ``comparison.md`` warns when it is large;
- achieved cost: from the method's report (mean over the sample rows that have video).

Rows are averaged over samples. The first row is the untouched model itself. With ``out_dir`` the
table is written as ``comparison.json`` and ``comparison.md``, and, when matplotlib is installed
(``pip install framefusion[plots]``), ``comparison.png``: fidelity against achieved cost, one line
per method.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from ..engine import apply
from .timing import spread_ratio, timing_caveat

__all__ = [
    "compare_methods",
    "config_dict",
    "method_label",
    "plot_rows",
    "pyplot",
    "save_figure",
    "sweep",
    "write_table",
]

UNTOUCHED = "untouched"


def sweep(configs: Iterable[Any], costs: Iterable[float]) -> list[Any]:
    """Every method at every cost (``method.with_cost(c)``: FastV's ratio gives way to the cost, a
    stack's last stage takes it)."""
    costs = list(costs)
    return [config.with_cost(c) for config in configs for c in costs]


def method_label(config: Any) -> str:
    """The name a method's rows and plot lines go by: its name (FastV's ratio, when set, beside it;
    a stack's earlier stages with their costs)."""
    stages = getattr(config, "stages", None)
    if stages:
        return "+".join(f"{s.name}@{s.cost:g}" for s in stages[:-1]) + f"+{stages[-1].name}"
    name = getattr(config, "name", type(config).__name__)
    if getattr(config, "ratio", None) is not None:
        return f"{name} (R={config.ratio:g})"
    return name


def config_dict(config: Any) -> dict:
    """A config as JSON: its type name and, for a dataclass, its fields."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {"type": type(config).__name__, **dataclasses.asdict(config)}
    return {"type": type(config).__name__}


def _prepare(processor: Any, sample: Any) -> Mapping[str, Any]:
    if isinstance(sample, Mapping):
        return sample
    if isinstance(sample, (tuple, list)) and len(sample) == 2 and isinstance(sample[0], str):
        from ..tiny_models.zoo import video_inputs

        return video_inputs(processor, [sample[0]], [sample[1]])
    raise TypeError(
        "each sample must be processed model inputs (a mapping such as the processor's output) or a "
        f"(question, video frames) pair, got {type(sample).__name__}"
    )


def _sync(model: torch.nn.Module) -> None:
    for p in model.parameters():
        if p.device.type == "cuda":
            torch.cuda.synchronize(p.device)
        return


def _generate(model, inputs, new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy tokens (b, new_tokens) and the first step's logits (b, vocab), float64."""
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    prompt = inputs["input_ids"].shape[1]
    return out.sequences[:, prompt:].cpu(), out.logits[0].double().cpu()


def _prefill_times(model, inputs, repeats: int) -> list[float]:
    times = []
    with torch.no_grad():
        model(**inputs)  # warm-up, untimed
        for _ in range(repeats):
            _sync(model)
            start = time.perf_counter()
            model(**inputs)
            _sync(model)
            times.append(time.perf_counter() - start)
    return times


def _worst_spread(per_sample: Sequence[Sequence[float]]) -> float | None:
    # within one sample only: samples of different lengths take different times by design
    ratios = [r for r in map(spread_ratio, per_sample) if r is not None]
    return max(ratios) if ratios else None


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """(b,) KL(softmax(p) || softmax(q)) in float64; exactly 0 for identical logits."""
    log_p = p_logits.log_softmax(-1)
    log_q = q_logits.log_softmax(-1)
    terms = torch.where(log_p.isneginf(), torch.zeros_like(log_p), log_p.exp() * (log_p - log_q))
    return terms.sum(-1).clamp_min(0.0)


def _prefix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(rows,) length of the common prefix of each row of a and b."""
    same = (a == b).long()
    return same.cumprod(-1).sum(-1)


def _check_compare_arguments(model, samples, configs, new_tokens: int, repeats: int, labels) -> None:
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be >= 1, got {new_tokens}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not samples:
        raise ValueError("samples is empty; give at least one sample")
    if labels is not None and len(labels) != len(configs):
        raise ValueError(f"labels must name every config: {len(labels)} labels for {len(configs)} configs")
    existing = getattr(model, "_framefusion_handle", None)
    if existing is not None and existing.active:
        raise RuntimeError("a reduction method is already applied to this model; call handle.remove() first")


@dataclasses.dataclass
class _Reference:
    """The untouched model on one sample: what every method is compared with."""

    tokens: torch.Tensor  # (b, new_tokens) greedy tokens
    logits: torch.Tensor  # (b, vocab) first next-token logits, float64
    prefill_times: list[float]  # the timed prefill forwards, seconds


def _untouched_row(references: Sequence[_Reference]) -> dict:
    return {
        "label": UNTOUCHED,
        "method": UNTOUCHED,
        "cost": 1.0,
        "achieved_cost": 1.0,
        "agreement": 1.0,
        "prefix_agreement": 1.0,
        "kl": 0.0,
        "prefill_seconds": statistics.mean(statistics.median(r.prefill_times) for r in references),
        "prefill_spread": _worst_spread([r.prefill_times for r in references]),
        "speedup": 1.0,
        "reduction_seconds": 0.0,
        "config": {},
    }


def _method_row(model, config: Any, label: str, prepared: Sequence[Mapping[str, Any]],
                references: Sequence[_Reference], new_tokens: int, repeats: int, base_seconds: float
                ) -> tuple[dict, list[list[float]]]:  # fmt: skip
    """One config's row, averaged over the samples, and every sample's timed prefill forwards (for the caveat)."""
    agreement, prefix, kl, achieved, seconds, reduction = [], [], [], [], [], []
    with apply(model, config) as handle:
        for inputs, ref in zip(prepared, references):
            tokens, logits = _generate(model, inputs, new_tokens)  # (b, new_tokens), (b, vocab)
            report = handle.last_report()
            agreement.extend((tokens == ref.tokens).double().mean(-1).tolist())
            prefix.extend((_prefix(tokens, ref.tokens).double() / new_tokens).tolist())
            kl.extend(_kl(ref.logits, logits).tolist())
            # rows without video have nothing to reduce: they would pull the mean towards 1
            achieved.extend(c for c, n in zip(report.achieved_cost, report.vision_tokens) if n > 0)
            seconds.append(_prefill_times(model, inputs, repeats))
            reduction.append(handle.last_report().reduction_seconds)
        method_name = handle.method.name
    mean_seconds = statistics.mean(map(statistics.median, seconds))
    row = {
        "label": label,
        "method": method_name,
        "cost": getattr(config, "cost", None),
        "achieved_cost": statistics.mean(achieved) if achieved else 1.0,
        "agreement": statistics.mean(agreement),
        "prefix_agreement": statistics.mean(prefix),
        "kl": statistics.mean(kl),
        "prefill_seconds": mean_seconds,
        "prefill_spread": _worst_spread(seconds),
        "speedup": base_seconds / mean_seconds if mean_seconds > 0 else math.inf,
        "reduction_seconds": statistics.mean(reduction),
        "config": config_dict(config),
    }
    return row, seconds


def _write_comparison(model, rows: Sequence[dict], out_dir: str | Path, samples: int, new_tokens: int, repeats: int,
                      timed: Sequence[Sequence[float]]) -> None:  # fmt: skip
    out = Path(out_dir)
    meta = {
        "model": type(model).__name__,
        "samples": samples,
        "new_tokens": new_tokens,
        "repeats": repeats,
        "device": str(next(model.parameters()).device),
    }
    caveat = timing_caveat(timed)
    if caveat:
        meta["timing"] = caveat
    write_table(rows, out, meta)
    plot_rows(rows, out / "comparison.png")


def compare_methods(
    model: torch.nn.Module,
    processor: Any,
    samples: Sequence[Any],
    configs: Sequence[Any],
    new_tokens: int = 8,
    out_dir: str | Path | None = None,
    repeats: int = 1,
    labels: Sequence[str] | None = None,
) -> list[dict]:
    """Compare reduction methods with the untouched model; returns one row (a dict) per config,
    after the untouched model's row.

    samples: processed model inputs (mappings, any batch size) or ``(question, frames)`` pairs
        (processed with ``models.zoo.video_inputs``, which needs a processor whose chat template
        takes video frames).
    configs: method configs (``FrameFusionConfig``, ``FastVConfig``, ...; see ``sweep``) or
        ``ReductionMethod`` objects.
    labels: optional series name per config for the table and plot (default: the method name).
    repeats: timed prefill forwards per sample and method (the median is reported).
    """
    _check_compare_arguments(model, samples, configs, new_tokens, repeats, labels)
    prepared = [_prepare(processor, s) for s in samples]
    references = []
    for inputs in prepared:
        tokens, logits = _generate(model, inputs, new_tokens)
        references.append(_Reference(tokens, logits, _prefill_times(model, inputs, repeats)))
    rows = [_untouched_row(references)]
    timed = [r.prefill_times for r in references]  # every sample's timed forwards, of every row, for the caveat
    for i, config in enumerate(configs):
        label = labels[i] if labels is not None else method_label(config)
        row, seconds = _method_row(model, config, label, prepared, references, new_tokens, repeats,
                                   rows[0]["prefill_seconds"])  # fmt: skip
        rows.append(row)
        timed += seconds
    if out_dir is not None:
        _write_comparison(model, rows, out_dir, len(prepared), new_tokens, repeats, timed)
    return rows


def write_table(rows: Sequence[dict], out_dir: str | Path, meta: Mapping[str, Any] | None = None) -> None:
    """``comparison.json`` (meta + rows) and ``comparison.md`` (one table) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps({**(meta or {}), "rows": list(rows)}, indent=2))
    head = ["method", "cost", "achieved cost", "agreement", "prefix agreement", "KL (nats)", "prefill ms",
            "prefill spread", "speed-up"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cost = "-" if r["cost"] is None else f"{r['cost']:.3g}"
        spread = "-" if r.get("prefill_spread") is None else f"{r['prefill_spread']:.2f}x"
        lines.append(
            f"| {r['label']} | {cost} | {r['achieved_cost']:.3f} | {r['agreement']:.3f} | "
            f"{r['prefix_agreement']:.3f} | {r['kl']:.4g} | {r['prefill_seconds'] * 1000:.1f} | {spread} | "
            f"{r['speedup']:.2f}x |"
        )
    info = {k: v for k, v in (meta or {}).items() if k != "timing"}
    if info:
        lines += ["", ", ".join(f"{k}: {v}" for k, v in info.items())]
    if (meta or {}).get("timing"):  # its own line: the reader must not miss it
        lines += ["", meta["timing"]]
    (out / "comparison.md").write_text("\n".join(lines) + "\n")


def plot_rows(rows: Sequence[dict], path: str | Path) -> bool:
    """Fidelity (agreement and KL) against achieved cost, one line per label. False (with a
    warning) when matplotlib is not installed."""
    plt = pyplot()
    if plt is None:
        return False
    series: dict[str, list[dict]] = {}
    for r in rows:
        series.setdefault(r["label"], []).append(r)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for label, items in series.items():
        items = sorted(items, key=lambda r: r["achieved_cost"])
        x = [r["achieved_cost"] for r in items]
        style = (
            dict(marker="*", markersize=12, linestyle="none", color="black", zorder=5)
            if label == UNTOUCHED
            else dict(marker="o")
        )
        left.plot(x, [r["agreement"] for r in items], label=label, **style)
        right.plot(x, [r["kl"] for r in items], label=label, **style)
    left.set(
        xlabel="achieved cost (share of vision-token compute)", ylabel="agreement with untouched", ylim=(-0.05, 1.05)
    )
    right.set(xlabel="achieved cost (share of vision-token compute)", ylabel="KL(untouched || method), first token")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.suptitle("Fidelity to the untouched model vs compute")
    return save_figure(fig, path)


def pyplot(warn: bool = True):
    """``matplotlib.pyplot`` on the Agg backend (files only, no display), or None when matplotlib is not
    installed (with a warning, unless ``warn`` is False): plots are optional (``framefusion[plots]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if warn:
            warnings.warn("matplotlib is not installed (pip install framefusion[plots]); no plot written", stacklevel=3)
        return None
    return plt


def save_figure(fig, path: str | Path, dpi: int = 100) -> bool:
    """Lay ``fig`` out, write it to ``path`` (its folder created) and close it; True."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return True
