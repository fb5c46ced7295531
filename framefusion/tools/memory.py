"""Peak memory of live tensors on any device, the CPU included (``torch.cuda.max_memory_allocated`` has no
CPU counterpart, and a process's RSS mixes tensors with the allocator's caching, libraries and Python).

``LiveTensorMemory`` is a ``TorchDispatchMode``: every aten op run while it is active reports its outputs;
each output's storage is counted once (views share it) with its size in bytes, and a ``weakref.finalize`` on
the storage subtracts it when the storage is freed. ``live`` is the bytes of storages made inside the
block and still alive, ``peak`` the most at once. What it sees: every tensor an op returns. What it does
not see: tensors made before the block (weights, the inputs), scratch memory inside one kernel (sdpa's
blocks, a GEMM's packing) and allocator caching. Views and in-place ops add nothing; an op writing into a
tensor made before the block (``out=``, in place) is not counted as new.

    with LiveTensorMemory() as mem:
        model.generate(**inputs)
    mem.peak  # bytes
"""

from __future__ import annotations

import threading
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["LiveTensorMemory", "kv_cache_layers", "mib"]


def mib(n_bytes: float) -> float:
    return n_bytes / 2**20


class LiveTensorMemory(TorchDispatchMode):
    """Bytes of the tensor storages created while active and still alive (``live``), and their peak."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, tuple] = {}  # storage (its C pointer) -> (weak reference, bytes counted)
        self._lock = threading.Lock()  # finalizers may run in any thread

    def reset_peak(self) -> None:
        """Start a new peak from what is alive now."""
        self.peak = self.live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {self._key(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._count(t, inputs)
        return out

    @staticmethod
    def _key(t: torch.Tensor) -> int | None:
        try:
            return t.untyped_storage()._cdata
        except (RuntimeError, NotImplementedError):  # sparse, nested: no plain storage
            return None

    def _count(self, t: torch.Tensor, inputs: set) -> None:
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        key, size = storage._cdata, storage.nbytes()
        with self._lock:
            known = self._sizes.get(key)
            if known is not None and known[0]() is not storage:  # a freed storage's address, reused
                self.live -= known[1]
                known = None
            if known is None:
                if key in inputs:
                    return  # written in place / out=: made before the block, or not by an op seen here
                ref = weakref.ref(storage)
                self._sizes[key] = (ref, size)
                self.live += size
                weakref.finalize(storage, self._free, key, ref)
            elif size != known[1]:  # resized in place
                self._sizes[key] = (known[0], size)
                self.live += size - known[1]
            self.peak = max(self.peak, self.live)

    def _free(self, key: int, ref) -> None:
        with self._lock:
            known = self._sizes.get(key)
            if known is not None and known[0] is ref:
                del self._sizes[key]
                self.live -= known[1]


def kv_cache_layers(cache) -> list[dict[str, int]]:
    """Per decoder layer of a KV cache: ``bytes`` held by its key and value tensors and ``tokens`` cached."""
    rows = []
    for layer in getattr(cache, "layers", []):
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        size = sum(t.numel() * t.element_size() for t in (keys, values) if isinstance(t, torch.Tensor))
        rows.append(dict(bytes=size, tokens=int(keys.shape[-2]) if isinstance(keys, torch.Tensor) else 0))
    return rows
