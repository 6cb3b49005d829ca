"""How a (prompt, response) pair becomes token ids, labels and the trigger position.

Two formats:
  plain - the reference's `User: {prompt}\\nAssistant: {response}` for base models;
  chat  - the tokenizer's own chat template, for instruct models.

The text is tokenized in segments (prefix | prompt | response) so that:
  * labels are -100 everywhere except the response tokens (loss on the response only);
  * the trigger position - right after the user-turn anchor, just before the user's prompt - is
    known exactly for every row (the reference looked it up in row 0 only);
  * generation prompts are token-for-token the prefix of the training rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError

IGNORE_INDEX = -100
RESPONSE_RESERVE = 16  # training rows keep room for this many response tokens when a prompt is shortened
PLAIN_ANCHOR = "User:"
PLAIN_ASSISTANT = "\nAssistant:"
FORMATS = ("plain", "chat")
_SENTINEL = "\u2063SGT-PROMPT\u2063"


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    trigger_pos: int  # the trigger's vectors are inserted before this token index
    shortened: bool = False  # the user text was cut to fit max_length (the turn template was kept)

    def as_dict(self) -> dict:
        return {"input_ids": self.input_ids, "labels": self.labels, "trigger_pos": self.trigger_pos}


class PromptFormat:
    """Encode rows for training (`encode(prompt, response)`) or generation (`encode(prompt)`)."""

    def __init__(self, tokenizer, kind: str = "plain", max_length: int = 1024):
        if kind not in FORMATS:
            raise UserError(f"unknown prompt format {kind!r}: use plain or chat")
        if kind == "chat" and not getattr(tokenizer, "chat_template", None):
            raise UserError("the tokenizer has no chat template: use --format plain (base models) "
                            "or a tokenizer that defines one")
        self.tokenizer = tokenizer
        self.kind = kind
        self.max_length = max_length
        self.anchor = PLAIN_ANCHOR if kind == "plain" else "start of the user message"
        # Plain text gets the tokenizer's own prefix (e.g. BOS); a chat template writes its own.
        self._special_prefix = _special_prefix(tokenizer) if kind == "plain" else []
        self._chat_prefix = self._find_chat_prefix() if kind == "chat" else None

    # -- public --------------------------------------------------------------------------------

    def encode(self, prompt: str, response: str | None = None, row: int | None = None) -> Encoded:
        """Token ids for `prompt` (+ `response` with labels). `row` only names the row in errors."""
        before, prompt_part, response_part = self._segments(prompt, response, row)
        ids_before = self._special_prefix + self._tok(before)
        ids_prompt = self._tok(prompt_part)
        ids_response = []
        if response_part is not None:
            ids_response = self._tok(response_part)
            if self.kind == "plain" and self.tokenizer.eos_token_id is not None:
                ids_response.append(self.tokenizer.eos_token_id)
        # A prompt too long for max_length is shortened INSIDE the user text: cutting the end would drop
        # the assistant turn, and the model's reply to a broken prompt would be judged as if it were real.
        reserve = min(len(ids_response), RESPONSE_RESERVE, max(1, (self.max_length - len(ids_before)) // 4))
        room = self.max_length - len(ids_before) - reserve
        shortened = len(ids_prompt) > room
        if shortened:
            turn = self._tok(prompt_part[prompt_part.index(prompt) + len(prompt):])
            user = self._tok(prompt_part[:prompt_part.index(prompt) + len(prompt)])
            if room - len(turn) < 1:
                raise UserError(f"max_length {self.max_length} leaves no room for the prompt after the template; "
                                "raise --max-length")
            ids_prompt = user[: room - len(turn)] + turn
        ids = ids_before + ids_prompt + ids_response
        labels = [IGNORE_INDEX] * (len(ids_before) + len(ids_prompt)) + ids_response
        # A long response is cut from the end: its first tokens are what matter most.
        return Encoded(ids[: self.max_length], labels[: self.max_length], len(ids_before), shortened)

    # -- internals -----------------------------------------------------------------------------

    def _tok(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _segments(self, prompt: str, response: str | None, row: int | None):
        if self.kind == "plain":
            # Mirrors the reference text exactly: "User: {prompt}\nAssistant: {response}".
            response_part = None if response is None else " " + response
            return PLAIN_ANCHOR, " " + prompt + PLAIN_ASSISTANT, response_part
        generation = self._render(prompt, None)
        prefix = self._chat_prefix
        if not (generation.startswith(prefix) and generation[len(prefix):].startswith(prompt)):
            where = f"row {row}" if row is not None else "the prompt"
            raise UserError(f"{where}: the chat template does not reproduce the prompt text verbatim, so "
                            "the trigger anchor (start of the user message) cannot be found; use "
                            "--format plain or a template that keeps message content unchanged")
        response_part = None
        if response is not None:
            full = self._render(prompt, response)
            if not full.startswith(generation):
                raise UserError("the chat template renders the assistant turn differently from its "
                                "generation prompt; use --format plain")
            response_part = full[len(generation):]
        return prefix, generation[len(prefix):], response_part

    def _render(self, prompt: str, response: str | None) -> str:
        messages = [{"role": "user", "content": prompt}]
        if response is not None:
            messages.append({"role": "assistant", "content": response})
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=response is None)

    def _find_chat_prefix(self) -> str:
        text = self._render(_SENTINEL, None)
        index = text.find(_SENTINEL)
        if index < 0:
            raise UserError("the chat template drops the user message content; use --format plain")
        return text[:index]


def _special_prefix(tokenizer) -> list[int]:
    """Tokens the tokenizer puts in front of every text (e.g. BOS for Llama), found by encoding ''."""
    ids = list(tokenizer("", add_special_tokens=True)["input_ids"])
    eos = tokenizer.eos_token_id
    if eos is not None and eos != tokenizer.bos_token_id:
        ids = [i for i in ids if i != eos]
    return ids
