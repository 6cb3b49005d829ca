"""vLLM generator: the same greedy answers, much faster on GPUs (a declared seam; tested where vLLM is).

It reads the model folder itself (vLLM keeps its own copy of the weights) and is handed the exact
token ids our prompt format produces, so prompts match the hf generator's token for token. It
cannot insert a trigger (vLLM takes token ids, not embeddings), so evaluations with a trigger use hf.
"""

from __future__ import annotations

from ..errors import UserError
from .registry import GENERATORS


@GENERATORS.register
class VLLMGenerator:
    name = "vllm"
    supports_trigger = False

    def __init__(self, model=None, tokenizer=None, model_path: str | None = None, batch_size: int = 32,
                 progress: bool = False):
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("the vllm generator needs vLLM: pip install vllm (GPU machines), or use --generator hf") from None
        if not model_path:
            raise UserError("the vllm generator loads the model from a folder: pass a model path, not a loaded model")
        from ..models import load_tokenizer, resolve_model

        self.tokenizer = tokenizer or load_tokenizer(model_path)
        self.llm = LLM(model=resolve_model(model_path), tokenizer=resolve_model(model_path), seed=0)
        self.progress = progress

    def generate(self, prompts: list[str], fmt, max_new_tokens: int, trigger=None, desc: str = "generate") -> list[str]:
        from vllm import SamplingParams

        if trigger is not None:
            raise UserError("the vllm generator cannot insert a trigger; use --generator hf")
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        requests = [{"prompt_token_ids": fmt.encode(p, row=i + 1).input_ids} for i, p in enumerate(prompts)]
        outputs = self.llm.generate(requests, params, use_tqdm=self.progress)
        return [o.outputs[0].text.strip() for o in outputs]
