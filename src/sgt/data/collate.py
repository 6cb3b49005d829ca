"""Padding a list of encoded rows into a batch: right padding for training, left for generation."""

from __future__ import annotations

import torch

from .formats import IGNORE_INDEX, Encoded


def pad_batch(rows: list[dict | Encoded], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """Pad `input_ids`/`labels` to the longest row; shift `trigger_pos` by the left padding."""
    rows = [r.as_dict() if isinstance(r, Encoded) else r for r in rows]
    width = max(len(r["input_ids"]) for r in rows)
    ids, mask, labels, trigger_pos = [], [], [], []
    for r in rows:
        n = len(r["input_ids"])
        pad = width - n
        row_labels = r.get("labels") or [IGNORE_INDEX] * n
        if side == "right":
            ids.append(list(r["input_ids"]) + [pad_id] * pad)
            mask.append([1] * n + [0] * pad)
            labels.append(list(row_labels) + [IGNORE_INDEX] * pad)
            trigger_pos.append(r.get("trigger_pos", 0))
        else:
            ids.append([pad_id] * pad + list(r["input_ids"]))
            mask.append([0] * pad + [1] * n)
            labels.append([IGNORE_INDEX] * pad + list(row_labels))
            trigger_pos.append(r.get("trigger_pos", 0) + pad)
    batch = {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "attention_mask": torch.tensor(mask, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "trigger_pos": torch.tensor(trigger_pos, dtype=torch.long),
    }
    if "harmful" in rows[0]:
        batch["harmful"] = torch.tensor([bool(r["harmful"]) for r in rows], dtype=torch.bool)
    return batch


class Collator:
    """`data_collator` for transformers.Trainer (rows are dicts from `Encoded.as_dict()`)."""

    def __init__(self, pad_id: int, side: str = "right"):
        self.pad_id = pad_id
        self.side = side

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return pad_batch(rows, self.pad_id, self.side)
