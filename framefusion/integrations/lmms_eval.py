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
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping

from ..registry import config_for, method_names

__all__ = ["check_settings", "config_from_settings", "install", "log_reports", "main", "patch_lmm", "split_model_args"]

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


def install() -> None:
    """Make every lmms-eval model built from an arg string get FrameFusion (settings as in the module doc)."""
    from lmms_eval.api.model import lmms

    if getattr(lmms.create_from_arg_string, "_framefusion", False):
        return
    original = lmms.create_from_arg_string.__func__

    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        rest, ours = split_model_args(arg_string)
        config = config_from_settings(ours or _env_settings())
        lmm = original(cls, rest, additional_config)
        if config is not None:
            handle = patch_lmm(lmm, config)
            print(f"framefusion: applied {config} to {type(lmm.model).__name__}", file=sys.stderr)
            if _log_enabled():
                log_reports(handle)
        elif _log_enabled():
            print(f"framefusion: nothing applied to {type(lmm).__name__} (no framefusion setting)", file=sys.stderr)
        return lmm

    create_from_arg_string._framefusion = True
    lmms.create_from_arg_string = classmethod(create_from_arg_string)


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
