"""Counts the operations that make the host wait for the device, on any device (CPU included).

On a GPU, reading a value (``.item()``, ``bool()``, ``int()``), copying to the host (``.cpu()``,
``.tolist()``, ``.numpy()``) and every operation whose output size depends on the data (``nonzero``,
boolean-mask indexing and assignment, ``masked_select``, ``unique``, ``equal``,
``repeat_interleave`` without ``output_size``) drain the launch queue. On the CPU nothing waits, so
this counter recognises the operations themselves, with two modes stacked: a TorchFunctionMode for
the copies to the host (they never reach the dispatcher on CPU tensors) and a TorchDispatchMode
for the rest.

Work on host copies is free on a GPU and must not count. Tensors are tagged:

- HOST: results of a copy to the host (``.cpu()``; the copy itself counts once; code that means a
  copy to the host says ``.cpu()``, since ``.to(device)`` cannot be told from a no-op on the CPU),
  and results of operations whose tensor inputs are all HOST or NEUTRAL with at least one HOST;
- NEUTRAL: results of factories (``arange``, ``zeros``, ...: no tensor input). On a GPU a factory
  tensor that meets a host tensor in one operation must be on the host too (torch refuses to mix
  devices), so the combination is HOST; a sync-kind operation on a NEUTRAL tensor counts;
- DEVICE: everything else (model inputs, weights, anything derived from them).

A sync-kind operation counts unless its inputs are HOST.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakTensorKeyDictionary

__all__ = ["HostSyncCounter"]

HOST, NEUTRAL, DEVICE = "host", "neutral", "device"

_aten = torch.ops.aten
# Operations whose result size or value the host must read from the device.
_DATA_DEPENDENT = {
    _aten._local_scalar_dense.default,  # item(), bool(), int(), float()
    _aten.nonzero.default,
    _aten.masked_select.default,
    _aten.equal.default,
    _aten.is_nonzero.default,
    _aten._unique2.default,
    _aten.unique_dim.default,
    _aten.unique_consecutive.default,
    _aten.repeat_interleave.Tensor,
}
_BOOL_INDEXED = {_aten.index.Tensor, _aten.index_put.default, _aten.index_put_.default, _aten._index_put_impl_.default}
_TO_HOST_METHODS = {"cpu", "tolist", "numpy"}


def _tensors(tree) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


class _FunctionLevel(TorchFunctionMode):
    def __init__(self, counter: "HostSyncCounter"):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name not in _TO_HOST_METHODS or not args or not isinstance(args[0], torch.Tensor):
            return func(*args, **kwargs)
        source = args[0]
        if self.counter.tag(source) != HOST:
            self.counter.record(f"{name}()")
        result = func(*args, **kwargs)
        if isinstance(result, torch.Tensor):
            if result is source:  # on the CPU the copy is the tensor itself: make it a distinct host copy
                result = result.clone()
            self.counter.tags[result] = HOST
        return result


class _DispatchLevel(TorchDispatchMode):
    def __init__(self, counter: "HostSyncCounter"):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = _tensors((args, kwargs))
        tags = {self.counter.tag(t) for t in inputs}
        tag = DEVICE if DEVICE in tags else HOST if HOST in tags else NEUTRAL
        if tag != HOST and self._syncs(func, args):
            self.counter.record(str(func.overloadpacket.__name__))
        out = func(*args, **kwargs)
        for t in _tensors(out):
            self.counter.tags[t] = tag
        return out

    @staticmethod
    def _syncs(func, args) -> bool:
        if func in _DATA_DEPENDENT:
            return True
        if func in _BOOL_INDEXED:  # args[1]: the list of indices (a bool one is a mask to resolve)
            return any(isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8) for t in args[1])
        return False


class HostSyncCounter:
    """``with HostSyncCounter() as c: ...``; then ``c.total`` and ``c.kinds`` (a Counter by op)."""

    def __init__(self):
        self.tags: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
        self.kinds: Counter = Counter()

    def tag(self, t: torch.Tensor) -> str:
        return self.tags.get(t, DEVICE)

    def record(self, kind: str) -> None:
        self.kinds[kind] += 1

    @property
    def total(self) -> int:
        return sum(self.kinds.values())

    def reset(self) -> None:
        self.kinds.clear()

    def __enter__(self) -> "HostSyncCounter":
        self._modes = [_DispatchLevel(self), _FunctionLevel(self)]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
