"""A reduced forward returns what the untouched one returns: outputs at the input's length.

The layers run on the tokens that stay, so the language model's last hidden states (and the logits
made from them) have one row per kept slot. The applied model's forward hook puts every row back
at its original position; the rows of removed video tokens hold ``FILL`` (NaN: any use of them is
loud, never a plausible number). With ``labels`` the loss is computed on the restored logits, and a
label whose predicting row (the previous position) was removed is ignored, as padding is.

Only the final outputs are restored (``logits``, ``loss``, a base model's ``last_hidden_state``);
``hidden_states`` and ``attentions`` (``output_hidden_states`` / ``output_attentions``) are
returned as each layer saw them: full length before the first reduced layer, shortened after it,
in the order of the report's ``kept_positions``.
"""

from __future__ import annotations

import torch

__all__ = ["FILL", "mask_unscored_labels", "restore_rows"]

FILL = float("nan")


def restore_rows(rows: torch.Tensor, index: torch.Tensor, length: int) -> torch.Tensor:
    """rows: (b, R, ...) for the last R slots of the re-packed batch, whose original positions are
    ``index[:, -R:]`` (-1: padding), ``index`` being (b, Lc). Returns (b, K, ...) with K = R if R
    was cut by ``logits_to_keep`` (R < Lc) else ``length``: the rows of the last K original
    positions, ``FILL`` where a position was removed."""
    batch, count = rows.shape[:2]
    out_len = length if count == index.shape[1] else count
    first = length - out_len  # original position of output row 0
    position = index[:, -count:].to(rows.device) - first  # (b, R)
    target = torch.where(position >= 0, position, out_len)  # padding and earlier rows: a spare row
    out = rows.new_full((batch, out_len + 1, *rows.shape[2:]), FILL)
    shape = (batch, count) + (1,) * (rows.dim() - 2)
    out.scatter_(1, target.view(shape).expand_as(rows), rows)
    return out[:, :out_len]


def mask_unscored_labels(labels: torch.Tensor, index: torch.Tensor, length: int) -> torch.Tensor:
    """labels: (b, L). -100 where the row that predicts a label (the previous position) was removed."""
    batch = labels.shape[0]
    present = torch.zeros(batch, length + 1, dtype=torch.bool, device=labels.device)
    present.scatter_(1, torch.where(index >= 0, index, length).to(labels.device), True)
    masked = labels.clone()
    masked[:, 1:] = torch.where(present[:, : length - 1], labels[:, 1:], torch.full_like(labels[:, 1:], -100))
    return masked
