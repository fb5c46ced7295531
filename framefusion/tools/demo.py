"""The built-in demo: untouched vs FrameFusion on one model and one video, side by side.

By default the model is the small Qwen2-VL shipped in ``framefusion/assets/model`` (trained on
synthetic moving-shape videos by ``scripts/train_synthetic.py``), asked the shipped video's question,
whose answer is known. With ``random_weights=True`` it is a bigger Qwen2-VL architecture with RANDOM
weights built from a config (for timing at realistic sizes; its answers are meaningless).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import FrameFusionConfig
from ..engine import apply
from ..flops import flop_ratio
from .timing import spread_ratio, timing_caveat

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


def _resize(video: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if video.shape[1] == size and video.shape[2] == size:
        return video
    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC)) for f in video])


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
    from tqdm.auto import tqdm

    from .evaluate import ASSET_MODEL, load_model, training_info
    from .loading import resolve_device, resolve_dtype

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device, torch.float32)
    from ..tiny_models import build_tiny_model, build_tiny_processor, demo_video_path, read_video

    config = config or FrameFusionConfig()
    trained = not random_weights
    expected = None
    if trained:
        if not (ASSET_MODEL / "config.json").is_file():
            raise FileNotFoundError(
                f"no trained model in {ASSET_MODEL}; run scripts/train_synthetic.py or use --random"
            )
        model, processor = load_model(ASSET_MODEL)
        info = training_info(ASSET_MODEL)
        frames, size = frames or info["frames"], size or info["size"]
        if question is None:
            if video_path is not None:
                raise ValueError("with --video, ask a --question (the trained model answers one-word questions)")
            qa = json.loads((demo_video_path().parent / "demo_qa.json").read_text())
            question, expected = qa["question"], qa["answer"]
        new_tokens = new_tokens or 1  # the one-word answer
        c = model.config.text_config
        n_params = sum(p.numel() for p in model.parameters())
        model_name = (
            f"small Qwen2-VL trained on synthetic videos (framefusion/assets/model: {c.num_hidden_layers} layers, "
            f"hidden {c.hidden_size}, {n_params / 1e6:.1f}M parameters)"
        )
    video_path = Path(video_path) if video_path else demo_video_path()
    frames, size = frames or 16, size or 448
    video = _resize(read_video(video_path, num_frames=frames), size)
    if not trained:
        question = question or "What moves in this video, and in which direction?"
        new_tokens = new_tokens or 8
        model_name = f"Qwen2-VL architecture, random weights ({num_layers} layers, hidden {hidden_size})"
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
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    model = model.to(device=device, dtype=dtype)
    inputs = processor(text=[text], videos=[video], return_tensors="pt").to(device=device, dtype=dtype)
    video_tokens = int((inputs["input_ids"] == model.config.video_token_id).sum())
    timer = _Timer(model.model.language_model, device)
    generate_seconds: dict[str, list[float]] = {"untouched": [], "framefusion": []}
    answers, report = {}, None

    def generate(name: str):
        nonlocal report
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        generate_seconds[name].append(time.perf_counter() - start)
        answers[name] = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]

    prefill = {"untouched": [], "framefusion": []}
    steps = [(r, name) for r in range(repeats + 1) for name in ("untouched", "framefusion")]
    for r, name in tqdm(steps, desc="demo (warm-up + interleaved repeats)", disable=not progress):
        if name == "framefusion":
            with apply(model, config) as handle:
                generate(name)
                report = handle.last_report()
        else:
            generate(name)
        if r == 0:  # warm-up round: discard
            generate_seconds[name].pop()
            timer.seconds.pop()
        else:
            prefill[name].append(timer.seconds[-1])
    timer.remove()

    per_layer = report.vision_tokens_per_layer[0]
    text_tokens = inputs["input_ids"].shape[1] - video_tokens
    return DemoResult(
        model=model_name,
        video=str(video_path),
        frames=len(video),
        size=size,
        video_tokens=video_tokens,
        prompt_tokens=int(inputs["input_ids"].shape[1]),
        config=asdict(config),
        tokens_per_layer=per_layer,
        achieved_cost=report.achieved_cost[0],
        flop_speedup=flop_ratio(model.config.text_config, text_tokens, video_tokens, per_layer),
        prefill_seconds=prefill,
        generate_seconds=generate_seconds,
        reduction_seconds=report.reduction_seconds,
        answers=answers,
        question=question,
        expected=expected,
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
        f"  {'LLM prefill spread, max/min':28}{_ratio(prefill['untouched']):>12}"
        f"{_ratio(prefill['framefusion']):>14}  (over {len(prefill['untouched'])} repeats)",
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


def _ratio(times: list[float]) -> str:
    ratio = spread_ratio(times)
    return "-" if ratio is None else f"{ratio:.2f}x"
