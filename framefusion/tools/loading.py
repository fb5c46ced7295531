"""One model loader for the library and every command: ``load_model(spec) -> (model, processor, description)``.

``spec`` takes every form the commands accept:

- ``None``: the small trained model shipped in ``framefusion/assets/model/`` (also by name,
  ``synthetic-v1``; ``synthetic-v2``: the one trained on synthetic QA v2, ``assets/model_v2/``);
- ``tiny:FAMILY``: a tiny model of a supported family with random weights (``framefusion.tiny_models.zoo``);
- a shipped config name (``framefusion/assets/configs/``): a real-size Qwen2-VL with random weights;
- a local folder saved with ``save_pretrained``;
- a Hugging Face model id, loaded with ``AutoModelForImageTextToText`` / ``AutoProcessor``.

Bad settings raise ``ValueError`` (or ``FileNotFoundError``) with one line that names the value and
what is accepted, before anything slow happens; an unreachable hub is reported after one short request
instead of the minutes of retries a plain ``from_pretrained`` spends offline.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

# the small trained models shipped with framefusion (scripts/train_synthetic.py wrote them): v1's (the
# default, the demo's) and synthetic QA v2's (the accuracy benchmark), each also by name
SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "assets" / "model"
SHIPPED_MODELS = {"synthetic-v1": SHIPPED_MODEL, "synthetic-v2": SHIPPED_MODEL.parent / "model_v2"}
TINY_PREFIX = "tiny:"
DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3")
HUB_TIMEOUT_S = 10.0  # one request decides whether the hub can be reached at all

# what ``describe`` and errors call each kind of model
SHIPPED = "trained on synthetic videos, shipped with framefusion"
TINY = "tiny, random weights"
CONFIG = "random weights"
CHECKPOINT = "checkpoint"


@dataclass(frozen=True)
class ModelOptions:
    """How to load a model, beside which one: the options every model-loading command takes
    (``--device``, ``--dtype``, ``--attn-implementation``, ``--device-map``, ``--trust-remote-code``), and
    the shape of a shipped config (``size``, ``vision_depth``). See :func:`load_model`."""

    device: Any = "auto"
    dtype: Any = "auto"
    attn_implementation: str | None = None
    device_map: Any = None
    trust_remote_code: bool = False
    size: int | None = None
    vision_depth: int | None = None

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`load_model` (values as given: a ``torch.dtype`` is not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def shipped_path(spec: str | Path | None) -> str | Path | None:
    """A shipped model's folder for its name (:data:`SHIPPED_MODELS`), else ``spec`` unchanged."""
    return SHIPPED_MODELS.get(str(spec), spec) if spec is not None else None


def training_info(path: str | Path | None = None) -> dict:
    """The ``training.json`` written beside a model by scripts/train_synthetic.py (default: the shipped
    model's; a shipped model's name works too); ``{}`` when there is none."""
    info = Path(shipped_path(path) or SHIPPED_MODEL) / "training.json"
    return json.loads(info.read_text()) if info.is_file() else {}


def model_forms() -> str:
    """The forms ``--model`` takes, with the names available here (for error messages and help)."""
    from .bench import shipped_configs
    from ..tiny_models.zoo import TINY_FAMILIES

    return (
        f"--model takes a shipped trained model's name ({', '.join(SHIPPED_MODELS)}), "
        f"tiny:FAMILY ({', '.join(sorted(TINY_FAMILIES))}), a shipped config name "
        f"({', '.join(shipped_configs())}; random weights), a local folder saved with save_pretrained, "
        "or a Hugging Face model id"
    )


def resolve_device(device: Any = "auto"):
    """``device`` as a ``torch.device`` that exists on this machine (``auto``/None: cuda if available)."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not valid (--device takes auto, cpu, cuda or cuda:N)") from err
    if target.type in ("cpu", "meta"):  # meta: shapes only, e.g. to inspect a real size without memory
        return target
    backend = getattr(torch, target.type, None)
    if backend is None or not hasattr(backend, "is_available") or not backend.is_available():
        raise ValueError(f"device {device!r} is not available on this machine (--device takes auto, cpu, cuda or cuda:N)")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if target.index is not None and target.index >= count:
        raise ValueError(
            f"device {device!r} is not available: this machine has {count} {target.type} device(s), "
            f"{target.type}:0 to {target.type}:{count - 1}"
        )
    return target


def resolve_dtype(dtype: Any, device, default):
    """A ``torch.dtype`` for ``dtype`` (a name or a dtype); ``auto``: ``default`` (a dtype, or a
    callable of the device for models built here)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return default(device) if callable(default) else default
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported (--dtype takes {', '.join(DTYPES)})")
    return getattr(torch, dtype)


def check_attn_implementation(attn_implementation: str | None) -> None:
    if attn_implementation is not None and attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"attention implementation {attn_implementation!r} is not supported "
            f"(--attn-implementation takes {', '.join(ATTN_IMPLEMENTATIONS)})"
        )


def load_model(
    spec: str | Path | None = None,
    *,
    device: Any = "auto",
    dtype: Any = "auto",
    attn_implementation: str | None = None,
    device_map: Any = None,
    trust_remote_code: bool = False,
    size: int | None = None,
    vision_depth: int | None = None,
) -> tuple[Any, Any, str]:
    """``(model, processor, description)`` of ``spec`` (see the module docstring), in eval mode.

    ``device``: where the model goes (``auto``: cuda if available). ``dtype``: ``auto`` keeps a
    checkpoint's own dtype, builds tiny models in float32 and shipped configs in bfloat16 on a GPU,
    float32 on the CPU. ``device_map`` (checkpoints only) is handed to ``from_pretrained`` instead of
    ``device`` (e.g. ``"auto"`` to spread a large model with accelerate). ``size`` / ``vision_depth``
    shape a shipped config's processor and vision tower. ``description`` says what the weights are.
    """
    target = resolve_device(device)
    check_attn_implementation(attn_implementation)
    spec = str(shipped_path(spec) or SHIPPED_MODEL)
    if spec.startswith(TINY_PREFIX):
        model, processor = _build_tiny(spec[len(TINY_PREFIX) :], target, dtype, attn_implementation)
        what = TINY
    elif _is_shipped_config(spec):
        model, processor = _build_config(spec, target, dtype, attn_implementation, size, vision_depth)
        what = CONFIG
    else:
        model, processor = _from_pretrained(spec, target, dtype, attn_implementation, device_map, trust_remote_code)
        what = SHIPPED if Path(spec).resolve() in SHIPPED_MODELS.values() else CHECKPOINT
        return model.eval(), processor, what
    if device_map is not None:
        raise ValueError(f"device_map applies to checkpoints (a folder or a Hugging Face id); {spec} is built on the device")
    return model.to(target).eval(), processor, what


def check_model_spec(spec: str | Path | None) -> None:
    """Refuse a ``spec`` that cannot load, without loading it: an unknown tiny family, a missing folder,
    a malformed id, or a hub id that is not cached while the hub cannot be reached (one short request)."""
    if spec is None:
        return
    spec = str(shipped_path(spec))
    if spec.startswith(TINY_PREFIX):
        from ..tiny_models import zoo

        family = spec[len(TINY_PREFIX) :]
        if family not in zoo.TINY_FAMILIES:
            raise ValueError(f"unknown tiny family {family!r}; available: {sorted(zoo.TINY_FAMILIES)}")
    elif not _is_shipped_config(spec):
        if _is_local(spec):
            _check_folder(spec)
        else:
            _check_hub_id(spec)
            if not _in_hub_cache(spec):
                _check_hub_reachable(spec)


def _is_local(spec: str) -> bool:
    return Path(spec).expanduser().exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1


def _check_folder(spec: str) -> None:
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model not found: {spec} (model folder not found: no model in {spec}); {model_forms()}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in the model folder {spec}: not a saved transformers model")


def _in_hub_cache(spec: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(spec, "config.json"), str)


def _is_shipped_config(spec: str) -> bool:
    from .bench import shipped_configs

    return spec in shipped_configs()


def _build_tiny(family: str, target, dtype, attn_implementation) -> tuple[Any, Any]:
    import torch

    from ..tiny_models import zoo

    if family not in zoo.TINY_FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; available: {sorted(zoo.TINY_FAMILIES)}")
    torch_dtype = resolve_dtype(dtype, target, torch.float32)
    return zoo.build(family, dtype=torch_dtype, attn_implementation=attn_implementation or "sdpa")


def _build_config(name: str, target, dtype, attn_implementation, size, vision_depth) -> tuple[Any, Any]:
    import torch

    from .bench import build_random_model

    def default(device):  # a real size in float32 on a GPU wastes half its memory
        return torch.bfloat16 if device.type == "cuda" else torch.float32

    torch_dtype = resolve_dtype(dtype, target, default)
    # built on the device: a real size built on the CPU first takes minutes to move
    return build_random_model(
        name, torch_dtype, vision_depth, size or 448, device=target, attn_implementation=attn_implementation or "sdpa"
    )


def _from_pretrained(spec, target, dtype, attn_implementation, device_map, trust_remote_code) -> tuple[Any, Any]:
    path = Path(spec).expanduser()
    local = _is_local(spec)
    if local:
        _check_folder(spec)
    kwargs = dict(
        dtype="auto" if dtype in (None, "auto") else resolve_dtype(dtype, target, None),
        device_map=str(target) if device_map is None else device_map,
        trust_remote_code=trust_remote_code,
        **({"attn_implementation": attn_implementation} if attn_implementation else {}),
    )
    if local:
        return _load_pretrained(str(path), local_files_only=True, **kwargs)
    _check_hub_id(spec)
    try:  # already in the local cache: no network at all
        return _load_pretrained(spec, local_files_only=True, **kwargs)
    except OSError:
        pass
    _check_hub_reachable(spec)
    return _load_pretrained(spec, **kwargs)


def _load_pretrained(
    name: str, *, trust_remote_code: bool, local_files_only: bool = False, **model_kwargs
) -> tuple[Any, Any]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(
            name, trust_remote_code=trust_remote_code, local_files_only=local_files_only
        )
        model = AutoModelForImageTextToText.from_pretrained(
            name, trust_remote_code=trust_remote_code, local_files_only=local_files_only, **model_kwargs
        )
    except ImportError as err:  # e.g. flash attention asked for but not installed
        raise ValueError(f"could not load {name}: {_first_line(err)}") from err
    except ValueError as err:  # not an image-text-to-text model, a bad attention implementation, ...
        raise ValueError(f"could not load {name}: {_first_line(err)}") from err
    return model, processor


def _check_hub_id(spec: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError as err:
        raise ValueError(f"model {spec!r} is neither a local folder nor a valid Hugging Face id; {model_forms()}") from err


def _check_hub_reachable(spec: str) -> None:
    """One short request before downloading: offline, ``from_pretrained`` retries each file for minutes."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    hint = "set HF_HUB_OFFLINE=1 to use only the local Hugging Face cache, or pass a local folder saved with save_pretrained"
    if constants.HF_HUB_OFFLINE or os.environ.get("TRANSFORMERS_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise ValueError(
            f"model {spec} is not in the local Hugging Face cache and offline mode (HF_HUB_OFFLINE=1) forbids "
            "downloading it: download it once with network access, or pass a local folder saved with save_pretrained"
        )
    try:
        HfApi().model_info(spec, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return  # exists; from_pretrained says what access it needs
    except RepositoryNotFoundError as err:
        raise ValueError(f"no model {spec} on {constants.ENDPOINT} (or it is private: log in first); {model_forms()}") from err
    except Exception as err:  # any failure to get an answer at all: DNS, refused, timeout, proxy
        raise ValueError(
            f"cannot reach {constants.ENDPOINT} to download {spec} ({_first_line(err)}): {hint}"
        ) from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
