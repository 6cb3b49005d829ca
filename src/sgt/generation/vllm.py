"""vLLM generator: the hf generator's greedy answers, much faster on GPUs (`eval.harm.generator: vllm`).

Same answers by construction, not by hope: vLLM is handed the exact token ids our PromptFormat makes
(chat template included), the same stop tokens (the model's generation config + the tokenizer's EOS),
greedy decoding (temperature 0), and its generated token ids are decoded by our tokenizer as hf's are
(sgt.generation.shared). With a trigger, the prompts go in as embeddings (the model's own input
embeddings with the trigger spliced in, as hf does) - where the installed vLLM takes prompt
embeddings (`enable_prompt_embeds`, vLLM >= 0.9); elsewhere a trigger is refused with one line.

vLLM keeps its own copy of the weights (read from the model folder) and takes most of the free GPU
memory while it runs, so an engine is started for each `generate` call and shut down after it: the
evaluation's other steps (benign tasks, drift) and the next training stage get the memory back.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import torch

from ..errors import UserError
from .registry import GENERATORS
from .shared import decode_answer, encode_prompts, stop_ids, triggered_embeddings

MEMORY_SHARE = 0.85  # of the GPU memory free when the engine starts (vLLM refuses more than is free)


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def prompt_embeds_supported() -> bool:
    """Whether the installed vLLM takes prompt embeddings (EngineArgs.enable_prompt_embeds)."""
    if not vllm_installed():
        return False
    try:
        from vllm.engine.arg_utils import EngineArgs
    except Exception:  # a broken vLLM install: the generator's own import will say so
        return False
    return "enable_prompt_embeds" in {f.name for f in dataclasses.fields(EngineArgs)}


@GENERATORS.register
class VLLMGenerator:
    name = "vllm"
    supports_trigger = prompt_embeds_supported()

    def __init__(self, model=None, tokenizer=None, model_path: str | None = None, batch_size: int = 32,
                 progress: bool = False, dtype: str = "auto"):
        if not vllm_installed():
            raise UserError("the vllm generator needs vLLM: pip install vllm (GPU machines), or use generator: hf "
                            "(--generator hf)")
        if not model_path:
            raise UserError("the vllm generator loads the model from a folder: pass a model path, not a loaded model")
        from ..models import load_tokenizer, resolve_model

        self.path = resolve_model(model_path)
        self.tokenizer = tokenizer or load_tokenizer(model_path)
        self.model, self.dtype, self.batch_size, self.progress = model, dtype, batch_size, progress

    def generate(self, prompts: list[str], fmt, max_new_tokens: int, trigger=None, desc: str = "generate") -> list[str]:
        from transformers import GenerationConfig
        from vllm import SamplingParams

        if trigger is not None and not self.supports_trigger:
            raise UserError("the installed vLLM cannot take prompt embeddings (enable_prompt_embeds, vLLM >= 0.9), "
                            "so it cannot insert a trigger; use generator: hf (--generator hf)")
        encoded = encode_prompts(prompts, fmt)
        requests = self._embedded(encoded, trigger) if trigger is not None else \
            [{"prompt_token_ids": e.input_ids} for e in encoded]
        try:
            generation_config = GenerationConfig.from_pretrained(self.path)
        except OSError:  # a folder without generation_config.json: the tokenizer's EOS only
            generation_config = None
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens,
                                stop_token_ids=stop_ids(generation_config, self.tokenizer))
        llm = self._engine(prompt_embeds=trigger is not None)
        try:
            outputs = llm.generate(requests, params, use_tqdm=self.progress)
        finally:
            _stop(llm)
            del llm
            _release_gpu_memory()
        return [decode_answer(self.tokenizer, output.outputs[0].token_ids) for output in outputs]

    def _engine(self, prompt_embeds: bool):
        from vllm import LLM

        from ..models import resolve_dtype

        free, total = torch.cuda.mem_get_info() if torch.cuda.is_available() else (0.9, 1.0)
        options = {"enable_prompt_embeds": True} if prompt_embeds else {}
        return LLM(model=self.path, tokenizer=self.path, dtype=resolve_dtype(self.dtype), seed=0,
                   max_num_seqs=max(self.batch_size, 1), gpu_memory_utilization=MEMORY_SHARE * free / total,
                   **options)

    def _embedded(self, encoded, trigger) -> list[dict]:
        """One {"prompt_embeds": (length + k, hidden)} request per prompt: the model's input embeddings
        of its token ids with the trigger spliced in (a loaded model's table, else the folder's on CPU)."""
        from ..models import load_model

        model = self.model if self.model is not None else load_model(self.path, self.dtype)
        embedding = model.get_input_embeddings()
        requests = []
        with torch.no_grad():
            for e in encoded:
                ids = torch.tensor([e.input_ids], device=embedding.weight.device)
                embeds, _ = triggered_embeddings(embedding, ids, torch.ones_like(ids),
                                                 torch.tensor([e.trigger_pos], device=ids.device), trigger)
                requests.append({"prompt_embeds": embeds[0].cpu()})
        return requests


def _stop(llm) -> None:
    """Stop the engine's worker processes now rather than at garbage collection."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


def _release_gpu_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
