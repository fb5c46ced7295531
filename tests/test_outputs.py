"""Restoring reduced outputs to the input's length, against plain loops on random inputs."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from framefusion.outputs import mask_unscored_labels, restore_rows


@st.composite
def packings(draw):
    """A left-padded re-packed batch: per row, the kept original positions (ascending, the last one
    always kept) of a sequence of ``length`` tokens, the first ``pad`` of them padding."""
    length = draw(st.integers(2, 12))
    batch = draw(st.integers(1, 3))
    rows = []
    for _ in range(batch):
        pad = draw(st.integers(0, length - 1))
        kept = [p for p in range(pad, length - 1) if draw(st.booleans())] + [length - 1]
        rows.append(kept)
    width = max(len(r) for r in rows)
    index = torch.full((batch, width), -1, dtype=torch.long)
    for b, kept in enumerate(rows):
        index[b, width - len(kept) :] = torch.tensor(kept)
    return length, rows, index


@settings(max_examples=60, deadline=None)
@given(packings(), st.integers(0, 3))
def test_restore_rows_matches_a_loop(packing, keep_last):
    length, rows, index = packing
    batch, width = index.shape
    count = width if keep_last == 0 else min(keep_last, width)  # logits_to_keep cuts the last rows
    values = torch.randn(batch, count, 5)
    out = restore_rows(values, index, length)
    out_len = length if count == width else count
    assert out.shape == (batch, out_len, 5)
    for b in range(batch):
        expected = torch.full((out_len, 5), math.nan)
        for slot in range(width - count, width):
            position = int(index[b, slot])
            if position >= 0 and position >= length - out_len:
                expected[position - (length - out_len)] = values[b, slot - (width - count)]
        torch.testing.assert_close(out[b], expected, equal_nan=True, rtol=0, atol=0)


@settings(max_examples=60, deadline=None)
@given(packings())
def test_mask_unscored_labels_matches_a_loop(packing):
    length, rows, index = packing
    labels = torch.randint(0, 50, (len(rows), length))
    masked = mask_unscored_labels(labels, index, length)
    for b, kept in enumerate(rows):
        for t in range(length):
            scored = t == 0 or (t - 1) in kept
            assert int(masked[b, t]) == (int(labels[b, t]) if scored else -100)
