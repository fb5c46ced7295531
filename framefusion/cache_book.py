"""What a reduced prefill leaves in a KV cache, kept on the cache for every call that continues it.

After a reduced prefill, the layers from the first reduced one on hold fewer keys than the prompt
had tokens. Everything transformers derives from the cache length (how many input ids ``generate``
still has to feed, the positions of new tokens, a second chat turn's starting point) must see the
untouched length, while the attention of those layers must see the keys they really hold. So:

- the book (``CacheBook``) records, per shortened layer, its prefill length and which key slots are
  real (left padding of the re-packed batch), and lives on the cache object itself: any later call
  that passes the cache back (decode steps, a second chat turn, a copy of the cache) finds it, in
  any thread and interleaved with other conversations;
- the cache's ``get_seq_length`` reports the untouched length (its class is swapped for a subclass
  that adds the tokens the reduction removed); the layers' own lengths stay true, and so do the
  masks transformers sizes from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["CacheBook", "book_of", "true_length", "write_book"]

_BOOK = "_framefusion_book"


@dataclass
class CacheBook:
    length: int  # tokens the untouched model would have cached after the prefill
    # shortened layer -> (b, keys it held after the prefill) which of them are real tokens
    layer_valid: dict[int, torch.Tensor] = field(default_factory=dict)
    layer_padded: dict[int, bool] = field(default_factory=dict)  # layer -> whether layer_valid has padding

    def removed(self, layer_idx: int) -> int:
        """Tokens the reduction removed from layer ``layer_idx``'s cache (0 for untouched layers)."""
        valid = self.layer_valid.get(layer_idx)
        return 0 if valid is None else self.length - valid.shape[1]

    def select_rows(self, rows: torch.Tensor) -> None:
        """Follow a reordering of the batch rows (beam search) in place."""
        for layer, valid in self.layer_valid.items():
            self.layer_valid[layer] = valid.index_select(0, rows.to(valid.device))


def book_of(cache) -> CacheBook | None:
    return getattr(cache, _BOOK, None) if cache is not None else None


def true_length(cache, layer_idx: int) -> int:
    """Keys really held by layer ``layer_idx`` of ``cache``."""
    layers = getattr(cache, "layers", None)
    if layers is None or layer_idx >= len(layers):
        return 0
    return layers[layer_idx].get_seq_length()


def write_book(cache, book: CacheBook) -> None:
    """Attach ``book`` to ``cache`` and make the cache report untouched lengths from now on."""
    cls = type(cache)
    if not getattr(cls, "_framefusion_untouched_lengths", False):
        cache.__class__ = _untouched_length_class(cls)
    setattr(cache, _BOOK, book)


_CLASSES: dict[type, type] = {}


def _untouched_length_class(base: type) -> type:
    """A subclass of ``base`` (same name) whose ``get_seq_length`` adds the removed tokens back, and
    whose beam reordering also reorders the book."""
    if base not in _CLASSES:

        def get_seq_length(self, layer_idx: int = 0) -> int:
            held = base.get_seq_length(self, layer_idx)
            book = book_of(self)
            return held + book.removed(layer_idx) if book is not None and held else held

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            base.reorder_cache(self, beam_idx)
            book = book_of(self)
            if book is not None:
                book.select_rows(beam_idx)

        _CLASSES[base] = type(
            base.__name__,
            (base,),
            {
                "get_seq_length": get_seq_length,
                "reorder_cache": reorder_cache,
                "_framefusion_untouched_lengths": True,
                "__doc__": base.__doc__,
            },
        )
    return _CLASSES[base]
