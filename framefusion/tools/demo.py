"""The built-in demo: untouched vs FrameFusion on one model and one video, side by side.

By default the model is the small Qwen2-VL shipped in ``framefusion/assets/model`` (trained on
synthetic moving-shape videos by ``scripts/train_synthetic.py``), asked the shipped video's question,
whose answer is known. With ``random_weights=True`` it is a bigger Qwen2-VL architecture with RANDOM
weights built from a config (for timing at realistic sizes; its answers are meaningless).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import FrameFusionConfig
from ..flops import flop_ratio
from .answer import DEFAULT_QUESTION, decode, generate_tokens, reduced
from .timing import spread_cell, timing_caveat

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    model: str
    video: str
    frames: int
    size: int
    video_tokens: int
    prompt_tokens: int
    config: dict
    tokens_per_layer: list[int]
    achieved_cost: float
    flop_speedup: float
    prefill_seconds: dict = field(default_factory=dict)  # {"untouched": [...], "framefusion": [...]}
    generate_seconds: dict = field(default_factory=dict)
    reduction_seconds: float = 0.0
    answers: dict = field(default_factory=dict)
    question: str = ""
    expected: str | None = None  # the known answer (trained model on the shipped video)
    trained: bool = False
    device: str = "cpu"
    dtype: str = "float32"

    def median(self, table: dict, key: str) -> float:
        return statistics.median(table[key])

    def as_dict(self) -> dict:
        return asdict(self)


class _Timer:
    """Times the LLM part of a forward (the language model), prefill only."""

    def __init__(self, module: torch.nn.Module, device: torch.device = torch.device("cpu")):
        self.seconds: list[float] = []
        self._device = device
        self._start = 0.0
        self._hooks = [
            module.register_forward_pre_hook(self._pre),
            module.register_forward_hook(self._post),
        ]
        self._prefill = False

    def _sync(self) -> None:
        if self._device.type == "cuda":  # kernels run asynchronously: wait for them, or time only the launches
            torch.cuda.synchronize(self._device)

    def _pre(self, module, args):
        self._sync()
        self._start = time.perf_counter()

    def _post(self, module, args, output):
        self._sync()
        hidden = getattr(output, "last_hidden_state", None)
        if hidden is not None and hidden.shape[1] > 1:
            self.seconds.append(time.perf_counter() - self._start)

    def remove(self):
        for h in self._hooks:
            h.remove()


@dataclass
class _DemoModel:
    """The model the demo runs, and what it asks it."""

    model: Any
    processor: Any
    name: str  # as the output describes it
    question: str
    expected: str | None  # the known answer (trained model, shipped video)
    new_tokens: int
    frames: int
    size: int  # frame side in pixels


def _trained_model(frames: int | None, size: int | None, question: str | None, video_path, new_tokens: int | None
                   ) -> _DemoModel:  # fmt: skip
    """The shipped trained model, at the frame count and size it was trained on unless told otherwise, asked
    the shipped video's question (its known answer beside it) unless given one."""
    from .answer import load_video_model, shipped_qa
    from .loading import SHIPPED_MODEL, ModelOptions, training_info

    if not (SHIPPED_MODEL / "config.json").is_file():
        raise FileNotFoundError(f"no trained model in {SHIPPED_MODEL}; run scripts/train_synthetic.py or use --random")
    loaded = load_video_model(SHIPPED_MODEL, ModelOptions(device="cpu"))  # moved to --device with --dtype later
    info = training_info(SHIPPED_MODEL)
    expected = None
    if question is None:
        if video_path is not None:
            raise ValueError("with --video, ask a --question (the trained model answers one-word questions)")
        qa = shipped_qa()
        question, expected = qa["question"], qa["answer"]
    c = loaded.model.config.text_config
    n_params = sum(p.numel() for p in loaded.model.parameters())
    name = (
        f"small Qwen2-VL trained on synthetic videos (framefusion/assets/model: {c.num_hidden_layers} layers, "
        f"hidden {c.hidden_size}, {n_params / 1e6:.1f}M parameters)"
    )
    new_tokens = new_tokens or 1  # the one-word answer
    return _DemoModel(loaded.model, loaded.processor, name, question, expected, new_tokens,
                      frames or info["frames"], size or info["size"])  # fmt: skip


def _random_model(num_layers: int, hidden_size: int, size: int, question: str | None, new_tokens: int | None,
                  frames: int) -> _DemoModel:  # fmt: skip
    """A Qwen2-VL architecture with random weights (8 heads, 2 of them key/value heads, a 2-block vision
    tower), big enough to time; its answers are meaningless."""
    from ..tiny_models import build_tiny_model, build_tiny_processor

    processor = build_tiny_processor("qwen2_vl", max_pixels=size * size)
    model = build_tiny_model(
        "qwen2_vl",
        processor=processor,
        num_layers=num_layers,
        hidden_size=hidden_size,
        num_heads=8,
        num_kv_heads=2,
        intermediate_size=hidden_size * 4,
        vision_depth=2,
    )
    name = f"Qwen2-VL architecture, random weights ({num_layers} layers, hidden {hidden_size})"
    return _DemoModel(model, processor, name, question or DEFAULT_QUESTION, None, new_tokens or 8, frames, size)


def _demo_inputs(demo: _DemoModel, video, device, dtype):
    """The processed prompt (a batch of one), floating tensors (the pixels) in the model's ``dtype``."""
    text = demo.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": demo.question}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    return demo.processor(text=[text], videos=[video], return_tensors="pt").to(device=device, dtype=dtype)


@dataclass
class _Rounds:
    """The interleaved rounds' times (warm-up round left out), last answers and FrameFusion's last report."""

    prefill: dict[str, list[float]]  # LLM prefill seconds per setting, one per timed round
    generate: dict[str, list[float]]  # end-to-end generate seconds per setting
    answers: dict[str, str]
    report: Any


def _interleaved_rounds(demo: _DemoModel, inputs, config, repeats: int, timer: _Timer, progress: bool) -> _Rounds:
    """One warm-up round then ``repeats`` timed ones, each generating untouched then with ``config``:
    interleaved, so a machine that slows down or speeds up affects both alike."""
    from tqdm.auto import tqdm

    settings = {"untouched": None, "framefusion": config}
    rounds = _Rounds({n: [] for n in settings}, {n: [] for n in settings}, {}, None)
    steps = [(r, name) for r in range(repeats + 1) for name in settings]
    for r, name in tqdm(steps, desc="demo (warm-up + interleaved repeats)", disable=not progress):
        with reduced(demo.model, settings[name]) as handle:
            start = time.perf_counter()  # the generate alone: applying and removing the method is not timed
            tokens = generate_tokens(demo.model, inputs, demo.new_tokens, exact_length=True)
            seconds = time.perf_counter() - start
            rounds.answers[name] = decode(demo.processor, tokens)
            if handle is not None:
                rounds.report = handle.last_report()
        if r > 0:  # round 0 warms up: discarded
            rounds.generate[name].append(seconds)
            rounds.prefill[name].append(timer.seconds[-1])
    return rounds


def run_demo(
    config: FrameFusionConfig | None = None,
    video_path: str | Path | None = None,
    frames: int | None = None,
    size: int | None = None,
    num_layers: int = 12,
    hidden_size: int = 512,
    new_tokens: int | None = None,
    repeats: int = 3,
    question: str | None = None,
    progress: bool = True,
    random_weights: bool = False,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "auto",
) -> DemoResult:
    """Untouched vs ``config``. Trained model (default): frames/size as trained, the shipped question;
    ``random_weights``: 16 frames at 448, ``num_layers``/``hidden_size``, a free-form question.
    ``device``: as ``--device`` (``auto``: cuda if available); ``dtype``: ``auto`` is float32."""
    from ..tiny_models import demo_video_path, read_video
    from .loading import resolve_device, resolve_dtype
    from .video import resize_video

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device, torch.float32)
    config = config or FrameFusionConfig()
    trained = None if random_weights else _trained_model(frames, size, question, video_path, new_tokens)
    video_path = Path(video_path) if video_path else demo_video_path()
    frames, size = (trained.frames, trained.size) if trained else (frames or 16, size or 448)
    video = resize_video(read_video(video_path, num_frames=frames), size)  # (T, size, size, 3) uint8
    demo = trained or _random_model(num_layers, hidden_size, size, question, new_tokens, frames)
    demo.model = demo.model.to(device=device, dtype=dtype)
    inputs = _demo_inputs(demo, video, device, dtype)
    timer = _Timer(demo.model.model.language_model, device)
    try:
        rounds = _interleaved_rounds(demo, inputs, config, repeats, timer, progress)
    finally:
        timer.remove()
    return _demo_result(demo, config, inputs, rounds, video_path, len(video), trained is not None, device, dtype)


def _demo_result(demo: _DemoModel, config, inputs, rounds: _Rounds, video_path: Path, frames: int, trained: bool,
                 device, dtype) -> DemoResult:  # fmt: skip
    ids = inputs["input_ids"]  # (1, prompt tokens)
    video_tokens = int((ids == demo.model.config.video_token_id).sum())
    per_layer = rounds.report.vision_tokens_per_layer[0]  # batch of one: sample 0
    text_tokens = ids.shape[1] - video_tokens
    return DemoResult(
        model=demo.name,
        video=str(video_path),
        frames=frames,
        size=demo.size,
        video_tokens=video_tokens,
        prompt_tokens=int(ids.shape[1]),
        config=asdict(config),
        tokens_per_layer=per_layer,
        achieved_cost=rounds.report.achieved_cost[0],
        flop_speedup=flop_ratio(demo.model.config.text_config, text_tokens, video_tokens, per_layer),
        prefill_seconds=rounds.prefill,
        generate_seconds=rounds.generate,
        reduction_seconds=rounds.report.reduction_seconds,
        answers=rounds.answers,
        question=demo.question,
        expected=demo.expected,
        trained=trained,
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
    )


def format_demo(result: DemoResult) -> str:
    med = statistics.median
    pre_u, pre_f = med(result.prefill_seconds["untouched"]), med(result.prefill_seconds["framefusion"])
    gen_u, gen_f = med(result.generate_seconds["untouched"]), med(result.generate_seconds["framefusion"])
    c = result.config
    prefill = result.prefill_seconds
    lines = [
        "framefusion demo",
        f"  model : {result.model}, {result.dtype} on {result.device}",
        "          (a small model trained on synthetic moving-shape videos: it answers one-word questions about them)"
        if result.trained
        else "          (random weights: the answers are meaningless; this shows tokens kept and time, not accuracy)",
        f"  video : {result.video}, {result.frames} frames at {result.size}x{result.size}"
        f" -> {result.video_tokens} video tokens in a {result.prompt_tokens}-token prompt",
        f"  config: cost={c['cost']} similarity_threshold={c['similarity_threshold']}"
        f" ratio_threshold={c['ratio_threshold']}",
        "",
        f"  video tokens per layer: {result.tokens_per_layer}",
        f"  achieved cost: {result.achieved_cost:.3f} (requested {c['cost']})",
        "",
        f"  {'':28}{'untouched':>12}{'framefusion':>14}{'speed-up':>10}",
        f"  {'LLM prefill, median s':28}{pre_u:12.3f}{pre_f:14.3f}{pre_u / pre_f:9.2f}x",
        f"  {'LLM prefill spread, max/min':28}{spread_cell(prefill['untouched']):>12}"
        f"{spread_cell(prefill['framefusion']):>14}  (over {len(prefill['untouched'])} repeats)",
        f"  {'generate (end to end), s':28}{gen_u:12.3f}{gen_f:14.3f}{gen_u / gen_f:9.2f}x",
        f"  {'FLOP bound (LLM prefill)':28}{'':12}{'':14}{result.flop_speedup:9.2f}x",
        f"  reduction itself: {result.reduction_seconds * 1000:.1f} ms"
        f" ({100 * result.reduction_seconds / pre_f:.1f}% of the reduced prefill)",
        "",
        f"  question: {result.question!r}" + (f" (known answer: {result.expected!r})" if result.expected else ""),
        f"  answer, untouched  : {result.answers['untouched']!r}",
        f"  answer, framefusion: {result.answers['framefusion']!r}",
    ]
    caveat = timing_caveat(result.prefill_seconds.values())
    return "\n".join(lines + ([f"  {caveat}"] if caveat else []))
