"""The Safety Guidance Trigger: learnable vectors in the model's input-embedding space.

`insert_trigger` splices the vectors into a batch of input embeddings right before each row's
user prompt (row-specific positions, so left/right padding and different prefixes are all fine);
the attention mask gets ones there and the labels -100. `remove_trigger_positions` is its inverse
on hidden states, used by stage 2 to line the teacher's sequence up with the student's.

A trigger is saved as `trigger.safetensors` (the vectors) + `trigger.json` (what it belongs to:
model, hidden size, format, anchor, length); loading it onto a different model or format fails
with a clear message instead of silently doing the wrong thing.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .data.formats import IGNORE_INDEX
from .errors import UserError

TRIGGER_FILE = "trigger.safetensors"
META_FILE = "trigger.json"


class SafetyTrigger(nn.Module):
    """`length` trigger vectors of size `hidden_size`; `tied` = one vector repeated (reference)."""

    def __init__(self, hidden_size: int, length: int = 1, tied: bool = True,
                 init: torch.Tensor | None = None, init_std: float = 0.01, metadata: dict | None = None):
        super().__init__()
        if length < 1:
            raise UserError(f"trigger length must be at least 1, got {length}")
        rows = 1 if tied else length
        if init is None:
            init = torch.randn(rows, hidden_size) * init_std  # N(0, 0.01^2) as in the reference
        elif init.shape != (rows, hidden_size):
            raise UserError(f"trigger init has shape {tuple(init.shape)}, expected {(rows, hidden_size)}")
        self.vectors = nn.Parameter(init.detach().clone().float())
        self.length = length
        self.tied = tied
        self.metadata = dict(metadata or {})

    @property
    def hidden_size(self) -> int:
        return self.vectors.shape[-1]

    def embeddings(self) -> torch.Tensor:
        """(length, hidden) trigger embeddings."""
        return self.vectors.expand(self.length, -1) if self.tied else self.vectors

    def insert(self, inputs_embeds, attention_mask, trigger_pos, labels=None, noise_std: float = 0.0):
        """Insert this trigger (optionally perturbed by N(0, noise_std^2)) into a batch."""
        vectors = self.embeddings()
        if noise_std:
            vectors = vectors + torch.randn_like(vectors) * noise_std
        return insert_trigger(inputs_embeds, attention_mask, vectors, trigger_pos, labels)

    # -- persistence ---------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        from .utils import atomic_write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {**self.metadata, "hidden_size": self.hidden_size, "length": self.length, "tied": self.tied}
        tmp = folder / f".{TRIGGER_FILE}.tmp"
        save_file({"vectors": self.vectors.detach().float().cpu().contiguous()}, str(tmp),
                  metadata={k: json.dumps(v) for k, v in meta.items()})
        tmp.replace(folder / TRIGGER_FILE)
        atomic_write_json(folder / META_FILE, meta)
        return folder / TRIGGER_FILE

    @classmethod
    def load(cls, path: str | Path, model=None, fmt: str | None = None, force: bool = False) -> SafetyTrigger:
        """Load from a folder or .safetensors file; check it fits `model` (its embedding fingerprint
        unless `force`) and the prompt `fmt`."""
        from safetensors import safe_open

        path = Path(path)
        file = path / TRIGGER_FILE if path.is_dir() else path
        if not file.is_file():
            raise UserError(f"trigger not found: {path} (give the folder written by `sgt trigger` "
                            f"or its {TRIGGER_FILE})")
        try:
            with safe_open(str(file), framework="pt") as f:
                vectors = f.get_tensor("vectors")
                meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        except Exception as exc:
            raise UserError(f"{file} is not a trigger file written by sgt ({exc})") from None
        trigger = cls(vectors.shape[-1], int(meta.get("length", vectors.shape[0])),
                      bool(meta.get("tied", vectors.shape[0] == 1)), init=vectors, metadata=meta)
        if model is not None:
            trigger.check_model(model, file, force=force)
        if fmt is not None and meta.get("format") not in (None, fmt):
            raise UserError(f"the trigger {file} was learned for the {meta['format']!r} prompt format, "
                            f"not {fmt!r}; pass --format {meta['format']} or learn a trigger for {fmt}")
        return trigger

    def check_model(self, model, where="the trigger", force: bool = False) -> None:
        """The trigger lives in `model`'s embedding space: another model (even one with the same hidden
        size) is refused, unless `force` (e.g. a fine-tuned copy of the model it was learned on)."""
        from .models import hidden_size, model_name

        size = hidden_size(model)
        if size != self.hidden_size:
            raise UserError(f"{where} has hidden size {self.hidden_size} (learned on "
                            f"{self.metadata.get('model', 'another model')}), but {model_name(model)} has "
                            f"{size}; learn a trigger for this model with `sgt trigger`")
        learned_on = self.metadata.get("embedding_fingerprint")
        if learned_on and not force and embedding_fingerprint(model) != learned_on:
            raise UserError(f"{where} was learned on another model ({self.metadata.get('model', 'unknown')}: its "
                            f"input embeddings differ from {model_name(model)}'s); learn a trigger for this model, "
                            "or pass --force-trigger if this model is a fine-tuned copy of that one")


def embedding_fingerprint(model) -> str:
    """A short hash of the model's input-embedding matrix (rounded to bf16, so that loading the same
    weights in fp32 or bf16 gives the same fingerprint)."""
    import hashlib

    weights = model.get_input_embeddings().weight.detach().to("cpu", torch.bfloat16).contiguous()
    return hashlib.sha256(weights.view(torch.int16).numpy().tobytes()).hexdigest()[:16]


def insert_trigger(inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, vectors: torch.Tensor,
                   trigger_pos: torch.Tensor, labels: torch.Tensor | None = None):
    """Insert `vectors` (k, H) into every row b before position trigger_pos[b].

    Returns (embeds (B, L+k, H), attention_mask (B, L+k), labels (B, L+k) or None). Done with one
    gather so that gradients flow to `vectors` and no Python loop runs over the batch.
    """
    batch, length, hidden = inputs_embeds.shape
    k = vectors.shape[0]
    index = _insertion_index(trigger_pos, length, k)
    extended = torch.cat([inputs_embeds, vectors.to(inputs_embeds.dtype).unsqueeze(0).expand(batch, k, hidden)], 1)
    embeds = extended.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden))
    ones = attention_mask.new_ones(batch, k)
    mask = torch.cat([attention_mask, ones], 1).gather(1, index)
    if labels is not None:
        ignore = labels.new_full((batch, k), IGNORE_INDEX)
        labels = torch.cat([labels, ignore], 1).gather(1, index)
    return embeds, mask, labels


def remove_trigger_positions(hidden: torch.Tensor, trigger_pos: torch.Tensor, k: int) -> torch.Tensor:
    """Drop the k trigger positions from (B, L+k, ...) states so they line up with the plain input."""
    batch, total = hidden.shape[:2]
    i = torch.arange(total - k, device=hidden.device).unsqueeze(0)
    index = torch.where(i < trigger_pos.unsqueeze(1), i, i + k)
    if hidden.dim() == 3:
        index = index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
    return hidden.gather(1, index)


def _insertion_index(trigger_pos: torch.Tensor, length: int, k: int) -> torch.Tensor:
    """index[b, j] = source of output position j in cat([sequence (L), trigger (k)])."""
    j = torch.arange(length + k, device=trigger_pos.device).unsqueeze(0)
    p = trigger_pos.unsqueeze(1)
    return torch.where(j < p, j, torch.where(j < p + k, length + (j - p), j - k))


def text_init(model, tokenizer, text: str, length: int, tied: bool) -> torch.Tensor:
    """Initial trigger vectors from the embeddings of `text` (repeated/cut to the needed rows)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise UserError(f"trigger init text {text!r} has no tokens")
    weights = model.get_input_embeddings().weight.detach().float().cpu()
    vectors = weights[torch.tensor(ids)]
    rows = 1 if tied else length
    if tied:
        return vectors.mean(0, keepdim=True)
    reps = -(-rows // len(ids))
    return vectors.repeat(reps, 1)[:rows]
