"""FrameFusion inside lmms-eval (https://github.com/EvolvingLMMs-Lab/lmms-eval): no change to lmms-eval.

Run lmms-eval through this module; it behaves exactly like ``python -m lmms_eval`` except that every
model it builds gets ``framefusion.apply`` on its loaded transformers model (``lmm.model``)::

    python -m framefusion.integrations.lmms_eval --model qwen2_5_vl \\
        --model_args pretrained=Qwen/Qwen2.5-VL-7B-Instruct,max_num_frames=64,framefusion_cost=0.3 \\
        --tasks videomme --batch_size 1 --output_path outputs/lmms_eval

Settings, from ``--model_args`` (removed before lmms-eval sees them) or else environment variables:

=====================================  ===============================  ======================================
model_args key                         environment variable             meaning (default)
=====================================  ===============================  ======================================
``framefusion_method``                 ``FRAMEFUSION_METHOD``           a name of ``framefusion.registry``
                                                                        (framefusion, fastv, random, ...) or
                                                                        none (framefusion when a cost is given)
``framefusion_cost``                   ``FRAMEFUSION_COST``             budget in (0, 1] (0.3)
``framefusion_similarity_threshold``   ``FRAMEFUSION_SIMILARITY``       merge threshold (0.6)
``framefusion_ratio_threshold``        ``FRAMEFUSION_RATIO``            cascade threshold (0.1)
=====================================  ===============================  ======================================

With none of them set, nothing is applied (the untouched baseline). ``FRAMEFUSION_LOG=1`` also prints,
to stderr, what was applied (or that nothing was) and every reduced prefill's video tokens per layer and
achieved cost. From Python, on a model object lmms-eval already built:
``patch_lmm(lmm, FrameFusionConfig(cost=0.3))``.

Without this module: framefusion registers itself with lmms-eval (0.6 and later) through the entry-point
group ``lmms_eval.models`` (:func:`manifests`, in ``pyproject.toml``). lmms-eval loads that entry point
when it builds its model registry, which (a) adds the model name ``framefusion``, whose ``base_model=``
argument names the stock class to wrap (``--model framefusion --model_args
base_model=qwen2_5_vl,pretrained=...,framefusion_cost=0.3``), and (b) lets ``framefusion_*`` entries in
``--model_args`` of the stock classes (``--model qwen2_vl --model_args ...,framefusion_cost=0.3``) work
under a plain ``python -m lmms_eval`` / ``lmms-eval`` too. On that path only ``--model_args`` count: the
environment variables are read by this launcher only (a stray ``FRAMEFUSION_COST`` does not change an
lmms-eval run nobody asked framefusion into).

Data-parallel on the CPU (``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N``):
lmms-eval's transformers classes (``qwen2_vl``, ``qwen2_5_vl``, ``llava_hf``, ...) put every process
on ``cuda:<rank>`` and accept only DDP/FSDP on GPUs. Through this launcher or ``--model framefusion``
each process builds its model as a single process would (on the ``device`` of ``--model_args``), and
lmms-eval's evaluator still splits the documents by rank and gathers the results over the gloo group.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Mapping

from ..registry import config_for, method_names

__all__ = [
    "check_settings",
    "config_from_settings",
    "install",
    "log_reports",
    "main",
    "manifests",
    "patch_lmm",
    "split_model_args",
]

KEYS = {
    "framefusion_method": "FRAMEFUSION_METHOD",
    "framefusion_cost": "FRAMEFUSION_COST",
    "framefusion_similarity_threshold": "FRAMEFUSION_SIMILARITY",
    "framefusion_ratio_threshold": "FRAMEFUSION_RATIO",
}
METHODS = (*method_names(), "none")


def _float(key: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {value!r}") from None


def config_from_settings(settings: Mapping[str, str]) -> Any:
    """A method config from ``framefusion_*`` settings (strings); None when nothing should be applied."""
    unknown = sorted(set(settings) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown framefusion setting(s) {unknown}; expected {sorted(KEYS)}")
    method = settings.get("framefusion_method", "framefusion" if settings else "none").strip().lower()
    if method not in METHODS:
        raise ValueError(f"framefusion_method must be one of {list(METHODS)}, got {method!r}")
    if method == "none":
        return None
    cost = _float("framefusion_cost", settings.get("framefusion_cost", "0.3"))
    ff = dict(
        similarity_threshold=_float(
            "framefusion_similarity_threshold", settings.get("framefusion_similarity_threshold", "0.6")
        ),
        ratio_threshold=_float("framefusion_ratio_threshold", settings.get("framefusion_ratio_threshold", "0.1")),
    )
    return config_for(method, cost, **ff)


def split_model_args(arg_string: str | None) -> tuple[str, dict[str, str]]:
    """``"a=1,framefusion_cost=0.3"`` -> ``("a=1", {"framefusion_cost": "0.3"})``."""
    keep, ours = [], {}
    for part in (arg_string or "").split(","):
        key, sep, value = part.partition("=")
        if key.strip().startswith("framefusion_"):
            if not sep:
                raise ValueError(f"model_args entry {part!r} needs a value (key=value)")
            ours[key.strip()] = value.strip()
        elif part:
            keep.append(part)
    return ",".join(keep), ours


def _env_settings() -> dict[str, str]:
    return {key: os.environ[env] for key, env in KEYS.items() if os.environ.get(env)}


def patch_lmm(lmm: Any, config: Any) -> Any:
    """Apply ``config`` to an lmms-eval model object's transformers model (``lmm.model``); returns the handle."""
    from ..engine import apply

    model = getattr(lmm, "model", None)
    if model is None or not hasattr(model, "forward"):
        raise TypeError(f"{type(lmm).__name__} has no loaded transformers model in .model")
    model = getattr(model, "module", model)  # DistributedDataParallel
    handle = apply(model, config, processor=getattr(lmm, "processor", None))
    lmm._framefusion_handle = handle
    return handle


def log_reports(handle: Any, stream: Any = None) -> None:
    """Print every reduced prefill's video tokens per layer and achieved cost (to stderr by default).

    A forward hook on the handle's model, removed with the handle; it reads ``handle.last_report()``
    after each forward and prints only reports it has not printed yet (decode steps make none). Lines go
    through ``tqdm.write`` so that they start a line of their own under lmms-eval's progress bar.
    """
    from tqdm import tqdm

    seen = {"report": None, "count": 0}

    def hook(module, args, output):
        report = handle.last_report()
        if report is None or report is seen["report"]:
            return
        seen["report"] = report
        seen["count"] += 1
        rows = zip(report.vision_tokens, report.vision_tokens_per_layer, report.achieved_cost)
        for i, (tokens, per_layer, cost) in enumerate(rows):
            tqdm.write(
                f"framefusion: prefill {seen['count']} sample {i}: {tokens} video tokens, "
                f"per layer {list(per_layer)}, achieved cost {cost:.3f}",
                file=stream or sys.stderr,
            )

    handle._hooks.append(handle.model.register_forward_hook(hook))


def _log_enabled() -> bool:
    return os.environ.get("FRAMEFUSION_LOG", "").strip().lower() not in ("", "0", "false", "no")


def _cpu_data_parallel() -> bool:
    """Several processes (accelerate launch, torchrun) and no GPU: the case lmms-eval's classes refuse."""
    import torch

    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and not torch.cuda.is_available()


class _OneProcess:
    """What an lmms-eval model class's ``__init__`` reads from ``Accelerator()`` when it runs alone."""

    num_processes = 1
    process_index = local_process_index = 0
    is_main_process = is_local_main_process = True

    def __init__(self, *args, **kwargs):
        import torch

        self.device = torch.device("cpu")


@contextlib.contextmanager
def _built_as_one_process(cls: type):
    """On CPU with several processes, let ``cls.__init__`` see one process (its module's ``Accelerator``
    replaced while it runs): the stock classes would move the model to ``cuda:<rank>`` and assert DDP on
    GPUs. lmms-eval's evaluator still splits the documents by rank (``WORLD_SIZE``/``RANK``), builds its
    own ``Accelerator`` for the gathers (gloo with ``ACCELERATE_USE_CPU=true``) and sets the model's rank."""
    module = sys.modules.get(cls.__module__)
    if not _cpu_data_parallel() or module is None or not hasattr(module, "Accelerator"):
        yield
        return
    saved = module.Accelerator
    module.Accelerator = _OneProcess
    try:
        yield
    finally:
        module.Accelerator = saved


_STATE: dict[str, Any] = {}


def _build(cls: type, arg_string: str, additional_config: dict | None, config: Any, data_parallel: bool) -> Any:
    """``cls`` built by lmms-eval's own ``create_from_arg_string`` (as one process on a multi-process CPU
    run when ``data_parallel``), then ``config`` applied (None: untouched)."""
    context = _built_as_one_process(cls) if data_parallel else contextlib.nullcontext()
    create = getattr(cls.create_from_arg_string, "__func__", None)  # a class's own override, else lmms-eval's
    if create is None or getattr(create, "_framefusion", False):
        create = _STATE["create"]
    with context:
        lmm = create(cls, arg_string, additional_config)
    if config is not None:
        handle = patch_lmm(lmm, config)
        print(f"framefusion: applied {config} to {type(lmm.model).__name__}", file=sys.stderr)
        if _log_enabled():
            log_reports(handle)
    elif _log_enabled():
        print(f"framefusion: nothing applied to {type(lmm).__name__} (no framefusion setting)", file=sys.stderr)
    return lmm


def install(environment: bool = True, data_parallel: bool = True) -> None:
    """Make every lmms-eval model built from an arg string get FrameFusion (settings as in the module doc).

    ``environment``: also read the ``FRAMEFUSION_*`` variables (the launcher does; the entry point does
    not). ``data_parallel``: build the stock classes as one process each on a multi-process CPU run (the
    launcher does; through the entry point only runs with ``framefusion_*`` model_args get it)."""
    from lmms_eval.api.model import lmms

    _STATE["environment"] = _STATE.get("environment", False) or environment
    _STATE["data_parallel"] = _STATE.get("data_parallel", False) or data_parallel
    if getattr(lmms.create_from_arg_string, "_framefusion", False):
        return
    _STATE["create"] = lmms.create_from_arg_string.__func__

    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        rest, ours = split_model_args(arg_string)
        config = config_from_settings(ours or (_env_settings() if _STATE["environment"] else {}))
        return _build(cls, rest, additional_config, config, _STATE["data_parallel"] or bool(ours))

    create_from_arg_string._framefusion = True
    lmms.create_from_arg_string = classmethod(create_from_arg_string)


def _framefusion_lmm_class() -> type:
    """The class lmms-eval finds under ``--model framefusion`` (see :func:`manifests`)."""
    if "class" in _STATE:
        return _STATE["class"]
    from lmms_eval.api.model import lmms

    class FrameFusionLMM(lmms):
        """``--model framefusion --model_args base_model=NAME,<NAME's arguments>,framefusion_*=...``: lmms-eval's
        model ``NAME`` (e.g. qwen2_vl, qwen2_5_vl, llava_hf) with a framefusion method applied (FrameFusion at
        cost 0.3 unless the ``framefusion_*`` entries say otherwise; ``framefusion_method=none``: untouched).
        Building it returns the ``NAME`` object itself, so lmms-eval runs ``NAME``'s own code."""

        is_simple = True  # what the registry checks of this class; the object built is NAME's, with NAME's flag

        @classmethod
        def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
            from lmms_eval.models import get_model

            install(environment=False, data_parallel=False)
            rest, ours = split_model_args(arg_string)
            parts = [p for p in rest.split(",") if p]
            base = [p.partition("=")[2].strip() for p in parts if p.partition("=")[0].strip() == "base_model"]
            if not base or not base[-1] or base[-1] == "framefusion":
                raise ValueError("--model framefusion needs base_model=<an lmms-eval model name> in --model_args, "
                                 "e.g. base_model=qwen2_5_vl,pretrained=Qwen/Qwen2.5-VL-7B-Instruct,framefusion_cost=0.3")  # fmt: skip
            rest = ",".join(p for p in parts if p.partition("=")[0].strip() != "base_model")
            config = config_from_settings({"framefusion_method": "framefusion", **ours})
            return _build(get_model(base[-1]), rest, additional_config, config, True)

        def loglikelihood(self, requests):  # never called: the object built is the base model's
            raise NotImplementedError

        def generate_until(self, requests):
            raise NotImplementedError

        def generate_until_multi_round(self, requests):
            raise NotImplementedError

    FrameFusionLMM.__module__ = __name__
    FrameFusionLMM.__qualname__ = "FrameFusionLMM"
    _STATE["class"] = FrameFusionLMM
    return FrameFusionLMM


def __getattr__(name: str) -> Any:
    if name == "FrameFusionLMM":  # made on first use: it subclasses lmms-eval's lmms
        return _framefusion_lmm_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def manifests() -> list:
    """Entry point of the group ``lmms_eval.models`` (lmms-eval >= 0.6 loads it with its model registry):
    registers ``--model framefusion`` and makes ``framefusion_*`` model_args work on the stock classes
    (:func:`install` with ``environment=False``)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    install(environment=False, data_parallel=False)
    return [ModelManifest(model_id="framefusion", simple_class_path=f"{__name__}.FrameFusionLMM")]


def check_settings(argv: list[str]) -> None:
    """Raise ValueError for a bad ``framefusion_*`` setting in ``--model_args`` (or the environment).

    lmms-eval 0.7.3 catches errors raised while it builds the model, only logs them and still exits 0,
    so the launcher checks the settings before handing over.
    """
    values = [a.partition("=")[2] for a in argv if a.startswith("--model_args=")]
    values += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--model_args"]
    for value in values or [""]:
        _, ours = split_model_args(value)
        config_from_settings(ours or _env_settings())


def main(argv: list[str] | None = None) -> None:
    """``python -m lmms_eval ...`` with :func:`install` applied first."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        check_settings(args)
    except ValueError as err:
        print(f"framefusion: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        import lmms_eval  # noqa: F401
    except ImportError:
        raise SystemExit("lmms-eval is not installed: pip install lmms-eval (see docs/lmms_eval.md)") from None
    install()
    sys.argv = [sys.argv[0], *args]
    try:
        from lmms_eval.cli.dispatch import main as lmms_main
    except ImportError:  # older lmms-eval
        from lmms_eval.__main__ import cli_evaluate as lmms_main
    lmms_main()


if __name__ == "__main__":
    main()
