"""Generators: how a model's answers to a list of prompts are produced (greedy decoding).

    generator = make_generator("hf", model=model, tokenizer=tokenizer)
    answers = generator.generate(prompts, fmt, max_new_tokens=64, trigger=None)

A generator declares what it can do: `supports_trigger` (inserting a SafetyTrigger into the prompt
embeddings). Registered kinds:
  hf   - transformers `generate` on an already loaded model (batched, left padding, KV cache); the default
  vllm - vLLM on a model folder (much faster on GPUs), the same prompts, stop tokens and greedy decoding;
         a trigger goes in as prompt embeddings (vLLM >= 0.9); needs `pip install vllm`
What both share (prompt ids, stop tokens, trigger embeddings, decoding) lives in shared.py.
Adding one is a module with a class like `HFGenerator`, registered with `@GENERATORS.register`.
"""

from __future__ import annotations

from ..errors import UserError
from .hf import HFGenerator, generate, stop_token_ids
from .registry import GENERATORS


def make_generator(name: str, *, model=None, tokenizer=None, model_path: str | None = None, batch_size: int = 32,
                   progress: bool = False, needs_trigger: bool = False, dtype: str = "auto"):
    """Build generator `name`; fails with one line if it cannot do what is asked (e.g. a trigger)."""
    cls = GENERATORS.get(name)
    if needs_trigger and not cls.supports_trigger:
        raise UserError(f"the {name} generator cannot insert a trigger here"
                        + (" (it needs vLLM with prompt embeddings: vLLM >= 0.9)" if name == "vllm" else "")
                        + "; use generator: hf (--generator hf) for evaluations with a trigger")
    return cls(model=model, tokenizer=tokenizer, model_path=model_path, batch_size=batch_size, progress=progress,
               dtype=dtype)


__all__ = ["GENERATORS", "HFGenerator", "generate", "make_generator", "stop_token_ids"]
