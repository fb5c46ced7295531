"""Measure the three observations FrameFusion rests on, on any supported model and video.

One forward of the untouched model; a forward pre-hook on every decoder layer reads the hidden
states at that layer's input and reduces them at once to small statistics (nothing N x N, no
hidden states kept), so memory stays linear in the video tokens per layer:

1. **Adjacent similarity.** Per layer, the cosine similarity of each video token with the token at
   the same patch position ``d`` frames earlier (``d`` in ``distances``; ``d = 1`` is the previous
   frame, the only comparison FrameFusion makes) and of a seeded random sample of pairs of distinct
   video tokens: a fixed-bin histogram over [-1, 1], quantiles and the mean of each.
2. **Layer-wise distribution.** How the adjacent similarity distribution changes with depth (a box
   per layer) and the share of video tokens at or above each candidate threshold per layer.
3. **Ranking consistency.** Spearman and Kendall tau-b rank correlation of the per-token adjacent
   similarities between every pair of layers (one vector of length N per layer is kept).

Frames are the model's frames: a Qwen-style temporal patch (2 input frames) counts as one.

**Suggested threshold.** The share of video tokens a threshold ``t`` marks as similar is
``#{tokens with sim >= t} / N`` over all ``N`` video tokens (the share FrameFusion compares with
``ratio_threshold``), measured at the first layer at which FrameFusion merges (layer 0, or the
first reducible layer of the family). The suggestion is the largest ``t``, rounded down to 4
decimals, that marks at least ``target_share`` of the tokens: the ``ceil(target_share * N)``-th
largest adjacent similarity. First-frame tokens have no previous frame, so at most ``(F - 1) / F``
can be marked; a larger target gives the smallest similarity and a note.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..adapters import adapter_for
from ..algorithm.tokens import adjacent_similarity

__all__ = [
    "AnalysisResult",
    "SimilarityStats",
    "analyze",
    "check_settings",
    "kendall_tau_b",
    "plot_result",
    "spearman",
    "suggest_threshold",
    "write_outputs",
]

PAPER_THRESHOLD = 0.6
DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


# --------------------------------------------------------------------------- rank correlation
def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the mean of the ranks they span."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new = np.r_[True, xs[1:] != xs[:-1]] if len(xs) else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(new)
    counts = np.diff(np.r_[starts, len(x)])
    group = np.cumsum(new) - 1
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = (starts + (counts - 1) / 2.0 + 1.0)[group]
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (Pearson correlation of average ranks); NaN if either side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman needs two 1-D sequences of equal length, got {x.shape} and {y.shape}")
    if len(x) < 2:
        return float("nan")
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    den = math.sqrt(float((rx * rx).sum()) * float((ry * ry).sum()))
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def _tie_pairs(sorted_values: np.ndarray) -> int:
    """Pairs of equal values in a sorted 1-D array."""
    if len(sorted_values) == 0:
        return 0
    new = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    counts = np.diff(np.r_[np.flatnonzero(new), len(sorted_values)]).astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _count_inversions(values: np.ndarray) -> int:
    """Pairs i < j with values[i] > values[j] (strict), by a vectorised bottom-up merge sort."""
    n = len(values)
    if n < 2:
        return 0
    a = np.unique(values, return_inverse=True)[1].astype(np.int64).reshape(-1)  # dense ranks
    span = int(a.max()) + 1
    idx = np.arange(n, dtype=np.int64)
    total, width = 0, 1
    while width < n:
        block = idx // (2 * width)
        right = (idx // width) % 2 == 1
        keys = block * span + a  # each half of a block is sorted; keys sort by (block, value)
        left_keys = keys[~right]  # globally sorted
        right_keys, right_block = keys[right], block[right]
        left_end = np.searchsorted(left_keys, (right_block + 1) * span, side="left")
        total += int((left_end - np.searchsorted(left_keys, right_keys, side="right")).sum())
        a = np.sort(keys) - block * span  # merge: sort inside each block of 2 * width
        width *= 2
    return total


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either variable accounted for); O(n log n) memory O(n); NaN if either
    side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"kendall_tau_b needs two 1-D sequences of equal length, got {x.shape} and {y.shape}")
    n = len(x)
    if n < 2:
        return float("nan")
    n0 = n * (n - 1) // 2
    order = np.lexsort((y, x))  # by x, then y: pairs tied in x are never inversions in y
    xs, ys = x[order], y[order]
    n1 = _tie_pairs(xs)
    n2 = _tie_pairs(np.sort(y))
    joint = np.r_[True, (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1])]
    counts = np.diff(np.r_[np.flatnonzero(joint), n]).astype(np.int64)
    n3 = int((counts * (counts - 1) // 2).sum())
    discordant = _count_inversions(ys)
    den = math.sqrt(float(n0 - n1) * float(n0 - n2))
    if den == 0:
        return float("nan")
    return float((n0 - n1 - n2 + n3 - 2 * discordant) / den)


# --------------------------------------------------------------------------- statistics
@dataclass
class SimilarityStats:
    """One distribution of cosine similarities (one layer, one comparison)."""

    count: int
    mean: float | None
    quantiles: list[float | None]  # at AnalysisResult.quantile_levels
    histogram: list[int]  # counts in AnalysisResult.bin_edges

    @classmethod
    def of(cls, values: np.ndarray, edges: np.ndarray, levels: Sequence[float]) -> "SimilarityStats":
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            return cls(0, None, [None] * len(levels), [0] * (len(edges) - 1))
        hist = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0]
        return cls(
            int(values.size),
            float(values.mean()),
            [float(q) for q in np.quantile(values, levels)],
            [int(c) for c in hist],
        )


@dataclass
class AnalysisResult:
    """The numbers behind the three observations (``to_dict()`` is what ``analysis.json`` holds)."""

    model: str
    family: str
    num_layers: int
    video_tokens: int
    frames: int
    prompt_tokens: int
    first_layer: int  # first layer FrameFusion merges at; the suggestion is measured there
    distances: list[int]
    quantile_levels: list[float]
    bin_edges: list[float]
    thresholds: list[float]
    random_pairs: int
    seed: int
    #: comparison name ("d=1", "d=2", ..., "random") -> one SimilarityStats per layer
    stats: dict[str, list[SimilarityStats]]
    #: share_above[layer][i]: share of the video tokens with adjacent similarity >= thresholds[i]
    share_above: list[list[float]]
    #: rank correlation of the per-token adjacent similarities, layer x layer (None where undefined)
    spearman: list[list[float | None]]
    kendall: list[list[float | None]]
    target_share: float
    suggested_threshold: float
    suggested_share: float  # share the suggestion marks at first_layer (>= target_share when reachable)
    paper_threshold_share: float  # share the paper's default 0.6 marks at first_layer
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    #: per layer, the adjacent similarity of every video token that has a previous frame, in
    #: sequence order (the vectors the rank correlations compare); not written to the JSON
    adjacent_similarity: list[np.ndarray] = field(default_factory=list, repr=False)
    #: sequence positions of those tokens
    adjacent_positions: np.ndarray | None = field(default=None, repr=False)

    def comparisons(self) -> list[str]:
        return list(self.stats)

    def median(self, comparison: str) -> list[float | None]:
        """Median similarity per layer of one comparison."""
        i = self.quantile_levels.index(0.5) if 0.5 in self.quantile_levels else None
        if i is None:
            raise ValueError("0.5 is not among the quantile levels")
        return [s.quantiles[i] for s in self.stats[comparison]]

    def to_dict(self) -> dict:
        skip = ("adjacent_similarity", "adjacent_positions")
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        out["stats"] = {name: [asdict(s) for s in per_layer] for name, per_layer in self.stats.items()}
        return _finite(out)

    def summary(self) -> str:
        def fmt(v):
            return "   -  " if v is None else f"{v:6.3f}"

        names = self.comparisons()
        head = f"{'layer':>5} " + " ".join(f"{'median ' + n:>14}" for n in names)
        head += " " + " ".join(f"{'>=' + format(t, 'g'):>7}" for t in self.thresholds)
        lines = [
            f"model {self.model} ({self.family}), {self.num_layers} layers; {self.video_tokens} video tokens "
            f"in {self.frames} frames; {self.random_pairs} random pairs (seed {self.seed})",
            "cosine similarity at each layer's input (median per comparison; share of video tokens at or above "
            "each threshold)",
            head,
        ]
        medians = {n: self.median(n) for n in names}
        for layer in range(self.num_layers):
            row = f"{layer:>5} " + " ".join(f"{fmt(medians[n][layer]):>14}" for n in names)
            row += " " + " ".join(f"{s:7.3f}" for s in self.share_above[layer])
            lines.append(row)
        offdiag = [v for i, r in enumerate(self.spearman) for j, v in enumerate(r) if i != j and v is not None]
        if offdiag:
            lines.append(
                f"rank consistency across layer pairs: Spearman min {min(offdiag):.3f}, "
                f"mean {float(np.mean(offdiag)):.3f}"
            )
        lines.append(
            f"paper default threshold {PAPER_THRESHOLD} marks {self.paper_threshold_share:.3f} of the video tokens "
            f"at layer {self.first_layer}"
        )
        lines.append(
            f"suggested similarity threshold: {self.suggested_threshold:.4f} (marks {self.suggested_share:.3f} of "
            f"the video tokens at layer {self.first_layer}; target share {self.target_share})"
        )
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _finite(obj: Any) -> Any:
    """NaN and infinities become None, so the JSON is standard."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def suggest_threshold(
    similarity: np.ndarray, total_tokens: int, target_share: float
) -> tuple[float, float, str | None]:
    """The rule of the module docstring: ``(threshold, share it marks, note or None)``.

    ``similarity``: adjacent similarities of the tokens that have a previous frame;
    ``total_tokens``: all video tokens (the share's denominator).
    """
    _check_share(target_share)
    sims = np.sort(np.asarray(similarity, dtype=np.float64))[::-1]
    if total_tokens < 1 or sims.size == 0:
        raise ValueError("no adjacent-frame pairs to suggest a threshold from (the video needs at least 2 frames)")
    k = math.ceil(target_share * total_tokens - 1e-9)
    note = None
    if k > sims.size:
        note = (
            f"target share {target_share} is unreachable: only {sims.size / total_tokens:.3f} of the video tokens "
            "have a previous frame; the suggestion marks all of them"
        )
        k = sims.size
    threshold = math.floor(float(sims[k - 1]) * 1e4) / 1e4
    share = float((sims >= threshold).sum()) / total_tokens
    return threshold, share, note


def _check_share(target_share: float) -> None:
    ok = isinstance(target_share, (int, float, np.floating)) and not isinstance(target_share, bool)
    if not (ok and 0 < target_share < 1):
        raise ValueError(f"target_share must be in (0, 1), got {target_share!r}")


# --------------------------------------------------------------------------- the analysis
def _same_patch_earlier(frame: torch.Tensor, patch: torch.Tensor, d: int) -> torch.Tensor:
    """Index of the token with the same patch key ``d`` frames earlier, or -1 (no N x N matrix)."""
    span = int(frame.max()) + 1 if frame.numel() else 1
    key = patch.long() * span + frame.long()
    order = torch.argsort(key)
    sorted_key = key[order]
    want = key - d
    at = torch.searchsorted(sorted_key, want).clamp_max(max(key.numel() - 1, 0))
    found = (sorted_key[at] == want) & (frame >= d)
    return torch.where(found, order[at], torch.full_like(at, -1))


def _prepare_inputs(processor, video, question: str, num_frames: int | None):
    from ..tiny_models.zoo import video_inputs
    from .video import as_uint8_video, even_indices

    if video is None:
        raise ValueError(
            "no video in the prompt: pass a (T, H, W, 3) uint8 array, a video file path or processor inputs"
        )
    if isinstance(video, (str, Path)):
        from ..tiny_models import read_video

        video = read_video(video, num_frames=num_frames)
    if isinstance(video, Mapping):
        return dict(video)
    video = as_uint8_video(video)  # uint8, or floats in [0, 1] converted, or a clear error
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be (T, H, W, 3) frames, got shape {video.shape}")
    if num_frames is not None and num_frames != len(video):
        video = video[even_indices(len(video), num_frames)]
    return dict(video_inputs(processor, [question], [video]))


def _input_device(model) -> torch.device:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None and emb.weight.device.type != "meta":
        return emb.weight.device
    return next(model.parameters()).device


@dataclass
class _VideoTokens:
    """The video tokens of the one sample analysed (padding left out), in sequence order.

    positions: (n,) sequence positions; frame: (n,) model frame of each; patch: (n,) the adapter's
    same-place key (equal keys = the same patch position of the same video)."""

    positions: torch.Tensor
    frame: torch.Tensor
    patch: torch.Tensor

    @property
    def count(self) -> int:
        return int(self.positions.numel())

    @property
    def frames(self) -> int:
        return int(self.frame.max()) + 1


def _video_tokens(adapter, inputs: dict[str, Any]) -> _VideoTokens:
    """The sample's video tokens from the adapter's layout; a ValueError for a batch, a prompt without
    video, or a video of one model frame (nothing adjacent to compare)."""
    input_ids = inputs.get("input_ids")
    if input_ids is None or input_ids.ndim != 2:
        raise ValueError("the inputs carry no input_ids of shape (batch, length)")
    if input_ids.shape[0] != 1:
        raise ValueError(f"analyze takes one sample, got a batch of {input_ids.shape[0]}")
    layouts = adapter.video_layouts(inputs)
    layout = layouts[0] if layouts else None
    if layout is None or len(layout) == 0:
        raise ValueError(
            f"no video in the prompt: {adapter.family} found no video tokens in the inputs "
            "(an image or text-only prompt cannot be analysed)"
        )
    mask = inputs.get("attention_mask")
    tokens = _VideoTokens(layout.positions.cpu(), layout.frame.cpu(), layout.patch.cpu())
    if isinstance(mask, torch.Tensor) and mask.ndim == 2:  # (1, L): drop padded slots
        ok = mask[0].bool().cpu()[tokens.positions]
        tokens = _VideoTokens(tokens.positions[ok], tokens.frame[ok], tokens.patch[ok])
    if tokens.frames < 2:
        raise ValueError(
            "the video has 1 frame in the model's input (a Qwen temporal patch of 2 frames counts as one): "
            "adjacent-frame similarity needs at least 2"
        )
    return tokens


class _LayerProbe:
    """Forward pre-hooks that reduce each decoder layer's input hidden states at once to statistics:
    per distance ``d`` the similarities of each video token with the same patch ``d`` frames earlier
    (kept whole, as a vector, only for ``d = 1``), and of ``random_pairs`` seeded pairs of distinct
    video tokens. Nothing N x N and no hidden states are kept."""

    def __init__(self, tokens: _VideoTokens, distances: list[int], random_pairs: int, seed: int, bins: int, levels):
        self.tokens, self.distances, self.levels = tokens, distances, levels
        self.prev = {d: _same_patch_earlier(tokens.frame, tokens.patch, d) for d in distances}  # (n,) index or -1
        n = tokens.count
        gen = torch.Generator().manual_seed(seed)
        self.rand_a = torch.randint(0, n, (random_pairs,), generator=gen)
        self.rand_b = (self.rand_a + 1 + torch.randint(0, max(n - 1, 1), (random_pairs,), generator=gen)) % n  # distinct
        self.edges = np.linspace(-1.0, 1.0, bins + 1)
        self.names = [f"d={d}" for d in distances] + ["random"]
        self.stats: dict[str, list[SimilarityStats | None]] = {}
        self.adjacent: list[np.ndarray | None] = []  # per layer: (n_adjacent,) float64 similarities for d = 1
        self.done = False

    def missing_distances(self) -> list[int]:
        return [d for d in self.distances if not bool((self.prev[d] >= 0).any())]

    def measure(self, model, layers: list, inputs: dict[str, Any], progress: bool) -> None:
        """One forward of ``model`` on ``inputs`` with a hook on every layer of ``layers``."""
        from tqdm.auto import tqdm

        self.stats = {name: [None] * len(layers) for name in self.names}
        self.adjacent = [None] * len(layers)
        bar = tqdm(total=len(layers), desc="analyze: layers", disable=not progress)
        hooks = [
            layer.register_forward_pre_hook(self._hook(i, bar), with_kwargs=True) for i, layer in enumerate(layers)
        ]
        try:
            _forward_once(model, inputs)
            self.done = True
        finally:
            for h in hooks:
                h.remove()
            bar.close()
        missing = [i for i, a in enumerate(self.adjacent) if a is None]
        if missing:
            raise RuntimeError(f"decoder layers {missing} were not run by the forward")

    def _hook(self, i: int, bar):
        def hook(module, args, kwargs):
            if self.done or self.adjacent[i] is not None:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]  # (1, L, hidden)
            self._reduce(i, hidden[0, self.tokens.positions.to(hidden.device)])
            bar.update(1)
            return None

        return hook

    def _reduce(self, i: int, x: torch.Tensor) -> None:
        """Statistics of layer ``i`` from ``x`` (n, hidden), the video tokens' hidden states there."""
        for d, name in zip(self.distances, self.names):
            p = self.prev[d].to(x.device)
            sim = adjacent_similarity(x, p)[p >= 0].cpu().numpy()
            self.stats[name][i] = SimilarityStats.of(sim, self.edges, self.levels)
            if d == 1:
                self.adjacent[i] = sim.astype(np.float64)
        pairs = len(self.rand_a)
        pair = torch.cat([x[self.rand_a.to(x.device)], x[self.rand_b.to(x.device)]])  # (2 * pairs, hidden)
        link = torch.cat([torch.full((pairs,), -1), torch.arange(pairs)]).to(x.device)  # row pairs + k -> row k
        sim = adjacent_similarity(pair, link)[pairs:].cpu().numpy()
        self.stats["random"][i] = SimilarityStats.of(sim, self.edges, self.levels)


def _forward_once(model, inputs: dict[str, Any]) -> None:
    """The untouched model's forward on ``inputs``: no cache, and only the last position's logits when
    the model can skip the rest (the hooks read the layers' inputs, not the logits)."""
    import inspect

    device = _input_device(model)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    kwargs: dict[str, Any] = {"use_cache": False}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        kwargs["logits_to_keep"] = 1
    with torch.inference_mode():
        model(**batch, **kwargs)


def _rank_correlations(adjacent: list[np.ndarray], progress: bool) -> tuple[list[list], list[list]]:
    """(Spearman, Kendall tau-b) L x L matrices of the per-token adjacent similarities between layers;
    the diagonal is 1, or NaN for a layer whose similarities are all equal (no ranking)."""
    from tqdm.auto import tqdm

    L = len(adjacent)
    rho = [[1.0 if i == j else None for j in range(L)] for i in range(L)]
    tau = [[1.0 if i == j else None for j in range(L)] for i in range(L)]
    pairs = [(i, j) for i in range(L) for j in range(i + 1, L)]
    for i, j in tqdm(pairs, desc="analyze: rank correlation", disable=not progress or not pairs):
        rho[i][j] = rho[j][i] = spearman(adjacent[i], adjacent[j])
        tau[i][j] = tau[j][i] = kendall_tau_b(adjacent[i], adjacent[j])
    for i in range(L):  # a constant vector has no ranking
        if np.ptp(adjacent[i]) == 0:
            rho[i][i] = tau[i][i] = float("nan")
    return rho, tau


def _result(
    model, adapter, inputs, probe: _LayerProbe, first_layer: int, thresholds, target_share, seed, notes, progress
) -> AnalysisResult:
    """The measured statistics with the rank correlations and the suggested threshold at the first
    layer FrameFusion merges at (a note when the target share cannot be reached)."""
    adjacent, n, L = probe.adjacent, probe.tokens.count, len(probe.adjacent)
    rho, tau = _rank_correlations(adjacent, progress)
    base = adjacent[min(first_layer, L - 1)]  # (n_adjacent,) similarities at the first merging layer
    threshold, share, note = suggest_threshold(base, n, target_share)
    return AnalysisResult(
        model=type(model).__name__,
        family=adapter.family,
        num_layers=L,
        video_tokens=n,
        frames=probe.tokens.frames,
        prompt_tokens=int(inputs["input_ids"].shape[1]),
        first_layer=first_layer,
        distances=probe.distances,
        quantile_levels=probe.levels,
        bin_edges=[float(e) for e in probe.edges],
        thresholds=thresholds,
        random_pairs=len(probe.rand_a),
        seed=seed,
        stats=probe.stats,  # type: ignore[arg-type]
        share_above=[[float((a >= t).sum()) / n for t in thresholds] for a in adjacent],
        spearman=rho,
        kendall=tau,
        target_share=float(target_share),
        suggested_threshold=threshold,
        suggested_share=share,
        paper_threshold_share=float((base >= PAPER_THRESHOLD).sum()) / n,
        notes=notes + ([note] if note else []),
        adjacent_similarity=adjacent,  # type: ignore[arg-type]
        adjacent_positions=probe.tokens.positions[probe.prev[1] >= 0].numpy(),
    )


def analyze(
    model,
    processor,
    video,
    question: str = "Describe what happens in this video.",
    distances: Sequence[int] = (1, 2, 4, 8),
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    target_share: float = 0.3,
    random_pairs: int = 4096,
    seed: int = 0,
    bins: int = 40,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    num_frames: int | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> AnalysisResult:
    """Run one forward of the untouched ``model`` on ``video`` and measure the three observations.

    ``video``: ``(T, H, W, 3)`` uint8 frames, a video file (``num_frames`` sampled uniformly), or a
    mapping of processor inputs for one sample (then ``question`` is not used). ``distances``: frame
    gaps compared (1, the previous frame, is always included). ``thresholds``: candidate similarity
    thresholds for the share-per-layer table. ``target_share``: the share of video tokens the
    suggested threshold should mark at the first merging layer (see the module docstring).
    With ``out_dir`` writes ``analysis.json`` and, when matplotlib is installed, three PNG plots.
    """
    distances, thresholds, random_pairs, bins, levels = check_settings(
        distances, thresholds, target_share, random_pairs, bins, quantiles
    )
    adapter = adapter_for(model, processor)
    inputs = _prepare_inputs(processor, video, question, num_frames)
    tokens = _video_tokens(adapter, inputs)
    first_layer = int(adapter.first_reducible_layer(inputs))
    probe = _LayerProbe(tokens, distances, random_pairs, seed, bins, levels)
    notes = [
        f"no token pairs {d} frames apart: the video has {tokens.frames} frames in the model's input"
        for d in probe.missing_distances()
    ]
    probe.measure(model, list(adapter.decoder_layers()), inputs, progress)
    result = _result(model, adapter, inputs, probe, first_layer, thresholds, target_share, seed, notes, progress)
    if out_dir is not None:
        write_outputs(result, out_dir)
    return result


def check_settings(
    distances: Sequence[int] = (1, 2, 4, 8),
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    target_share: float = 0.3,
    random_pairs: int = 4096,
    bins: int = 40,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
) -> tuple[list[int], list[float], int, int, list[float]]:
    """Validate :func:`analyze`'s settings (ValueError naming the bad value and what is allowed).

    Returns ``(distances with 1, thresholds, random_pairs, bins, quantile levels with 0.5)``."""
    distances = sorted({1, *(_positive_int(d, "distances") for d in distances)})
    thresholds = [float(t) for t in thresholds]
    if not thresholds or any(not math.isfinite(t) or not -1 <= t <= 1 for t in thresholds):
        raise ValueError(f"thresholds must be a non-empty list of values in [-1, 1], got {list(thresholds)}")
    _check_share(target_share)
    random_pairs = _positive_int(random_pairs, "random_pairs", allow_zero=True)
    bins = _positive_int(bins, "bins")
    levels = sorted({float(q) for q in quantiles} | {0.5})
    if any(not 0 <= q <= 1 for q in levels):
        raise ValueError(f"quantiles must be in [0, 1], got {list(quantiles)}")
    return distances, thresholds, random_pairs, bins, levels


def _positive_int(value, name: str, allow_zero: bool = False) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < (0 if allow_zero else 1):
        raise ValueError(f"{name}: each must be an integer >= {0 if allow_zero else 1}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- outputs
def write_outputs(result: AnalysisResult, out_dir: str | Path) -> dict[str, Path]:
    """``analysis.json`` and, with matplotlib, ``adjacent_similarity.png``, ``layer_distribution.png``
    and ``ranking_consistency.png`` in ``out_dir``; records the paths in ``result.files``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = plot_result(result, out)
    paths["json"] = out / "analysis.json"
    result.files = {k: str(v) for k, v in paths.items()}
    paths["json"].write_text(json.dumps(result.to_dict(), indent=1))
    return paths


def plot_result(result: AnalysisResult, out_dir: str | Path) -> dict[str, Path]:
    """The three plots; an empty dict (with a warning) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed (pip install framefusion[plots]); no plots written", stacklevel=2)
        return {}
    out = Path(out_dir)
    plots = {
        "adjacent_similarity": _plot_similarity_by_distance,
        "layer_distribution": _plot_layer_distribution,
        "ranking_consistency": _plot_rank_consistency,
    }
    paths = {}
    for name, draw in plots.items():
        fig = draw(result, plt)
        fig.tight_layout()
        paths[name] = out / f"{name}.png"
        fig.savefig(paths[name], dpi=110)
        plt.close(fig)
    return paths


def _plot_similarity_by_distance(result: AnalysisResult, plt):
    """1. adjacent vs farther vs random: the median (25-75% band) per layer, and histograms at up to
    four layers (the first, the first merging one, the middle and the last)."""
    from matplotlib.ticker import MaxNLocator

    L = result.num_layers
    layers = np.arange(L)
    q = result.quantile_levels
    i25, i50, i75 = (q.index(v) if v in q else None for v in (0.25, 0.5, 0.75))
    names = [n for n in result.comparisons() if any(s.count for s in result.stats[n])]
    near = [n for n in names if n != "random"]
    colors = {n: plt.cm.viridis(k / max(len(near) - 1, 1)) for k, n in enumerate(near)}
    colors["random"] = "tab:red"
    shown = sorted({0, result.first_layer, L // 2, L - 1} & set(range(L)))[:4]
    fig, axes = plt.subplots(1, 1 + len(shown), figsize=(4.2 * (1 + len(shown)), 3.6))
    ax = axes[0]

    def per_layer(stats, index):  # (L,) the quantile ``index`` of each layer, NaN where nothing was compared
        return np.array([np.nan if x.count == 0 else x.quantiles[index] for x in stats], dtype=float)

    for name in names:
        s = result.stats[name]
        ax.plot(layers, per_layer(s, i50), marker=".", color=colors[name], label=name)
        if i25 is not None and i75 is not None:
            ax.fill_between(layers, per_layer(s, i25), per_layer(s, i75), color=colors[name], alpha=0.15)
    ax.set(xlabel="layer", ylabel="cosine similarity", title="median (25-75% band)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    edges = np.array(result.bin_edges)
    centers = (edges[1:] + edges[:-1]) / 2
    for ax, layer in zip(axes[1:], shown):
        for name in names:
            s = result.stats[name][layer]
            if s.count:
                ax.step(centers, np.array(s.histogram) / s.count, where="mid", color=colors[name], label=name)
        ax.set(xlabel="cosine similarity", ylabel="share of pairs", title=f"layer {layer}", xlim=(-1, 1))
    fig.suptitle(f"{result.model}: same patch, d frames apart vs random video tokens")
    return fig


def _adjacent_boxes(result: AnalysisResult) -> list[dict[str, Any]]:
    """One matplotlib ``bxp`` box per layer from the adjacent similarity's quantiles: whiskers at 5/95%,
    box at 25/75%, the median and the mean (a missing level falls back to the median)."""
    q = result.quantile_levels
    boxes = []
    for layer, s in enumerate(result.stats["d=1"]):
        qs = dict(zip(q, s.quantiles))
        boxes.append(
            {
                "label": str(layer),
                "whislo": qs.get(0.05, qs[0.5]),
                "q1": qs.get(0.25, qs[0.5]),
                "med": qs[0.5],
                "q3": qs.get(0.75, qs[0.5]),
                "whishi": qs.get(0.95, qs[0.5]),
                "mean": s.mean,
                "fliers": [],
            }
        )
    return boxes


def _plot_layer_distribution(result: AnalysisResult, plt):
    """2. the adjacent-similarity distribution per layer (boxes, with the suggested threshold), and the
    share of video tokens at or above each candidate threshold per layer (a layers x thresholds map)."""
    from matplotlib.ticker import MaxNLocator

    L = result.num_layers
    left_w, right_w = max(4.5, 0.3 * L + 2), max(4.5, 0.6 * len(result.thresholds) + 1.5)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(left_w + right_w, 4.2), gridspec_kw={"width_ratios": [left_w, right_w]}
    )
    left.bxp(_adjacent_boxes(result), showmeans=True, showfliers=False)
    left.axhline(result.suggested_threshold, color="tab:orange", ls="--", lw=1, label="suggested threshold")
    left.set(xlabel="layer", ylabel="adjacent-frame cosine", title="adjacent similarity per layer (5/25/50/75/95%)")
    if L > 24:
        for k, label in enumerate(left.get_xticklabels()):
            label.set_visible(k % max(L // 12, 1) == 0)
    left.legend(fontsize=8)
    share = np.array(result.share_above)  # (L, thresholds)
    im = right.imshow(share, aspect="auto", cmap="magma", vmin=0, vmax=1, origin="upper")
    right.set_xticks(range(len(result.thresholds)), [format(t, "g") for t in result.thresholds])
    right.set(xlabel="threshold", ylabel="layer", title="share of video tokens >= threshold")
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    if L <= 16 and len(result.thresholds) <= 8:
        for (r, c), v in np.ndenumerate(share):
            right.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    fig.colorbar(im, ax=right)
    return fig


def _plot_rank_consistency(result: AnalysisResult, plt):
    """3. Spearman and Kendall tau-b between every pair of layers (values written when L <= 12)."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, (title, mat) in zip(axes, (("Spearman", result.spearman), ("Kendall tau-b", result.kendall))):
        m = np.array([[np.nan if v is None else v for v in row] for row in mat], dtype=float)  # (L, L)
        im = ax.imshow(m, cmap="coolwarm", vmin=-1, vmax=1)
        ax.set(xlabel="layer", ylabel="layer", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if result.num_layers <= 12:
            for (r, c), v in np.ndenumerate(m):
                if np.isfinite(v):
                    ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax)
    fig.suptitle("rank correlation of the per-token adjacent-frame similarity between layers")
    return fig
