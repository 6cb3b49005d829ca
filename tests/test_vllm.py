"""The vllm generator answers as the hf generator does.

- Parity with the real vLLM (a CUDA GPU with vLLM installed): the same answers as hf on the micro
  toy base, without and with a trigger. Skipped, with the reason, everywhere else (vLLM needs a GPU).
- The contract, on any machine: with a stand-in for vLLM's LLM that decodes greedily with the HF
  model, the generator hands vLLM exactly hf's prompt token ids (or hf's trigger-spliced prompt
  embeddings), hf's stop tokens and greedy settings, and decodes the returned token ids as hf does.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import json
import sys
import types

import pytest
import torch

from sgt.data.formats import PromptFormat
from sgt.generation import make_generator
from sgt.trigger import SafetyTrigger

MAX_NEW_TOKENS = 24


def harmful_prompts(toy_micro, n: int = 12) -> list[str]:
    rows = [json.loads(line) for line in (toy_micro / "data" / "harm_eval.jsonl").read_text().splitlines()]
    return [r["prompt"] for r in rows[:n]]


def hf_answers(toy_micro, prompts, trigger=None, dtype="float32") -> list[str]:
    generator = make_generator("hf", model_path=str(toy_micro / "base"), batch_size=8, dtype=dtype)
    fmt = PromptFormat(generator.tokenizer, "plain", 256)
    return generator.generate(prompts, fmt, MAX_NEW_TOKENS, trigger=trigger)


def small_trigger(toy_micro) -> SafetyTrigger:
    from sgt.models import hidden_size, load_model

    torch.manual_seed(0)
    return SafetyTrigger(hidden_size(load_model(str(toy_micro / "base"), "float32")), 2, tied=False, init_std=0.5)


# ---------------------------------------------------------------------------------------------
# Parity with the real vLLM
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_trigger", [False, True])
def test_vllm_answers_equal_hf_answers(toy_micro, with_trigger):
    pytest.importorskip("vllm", reason="vLLM is not installed (it needs a CUDA GPU): the parity test runs where it is")
    if not torch.cuda.is_available():
        pytest.skip("vLLM is installed but no CUDA GPU is visible")
    from sgt.generation.vllm import VLLMGenerator

    if with_trigger and not VLLMGenerator.supports_trigger:
        pytest.skip("the installed vLLM takes no prompt embeddings (vLLM >= 0.9): a trigger needs generator: hf")
    prompts = harmful_prompts(toy_micro)
    trigger = small_trigger(toy_micro) if with_trigger else None
    generator = make_generator("vllm", model_path=str(toy_micro / "base"), batch_size=8, dtype="float32",
                               needs_trigger=with_trigger)
    fmt = PromptFormat(generator.tokenizer, "plain", 256)
    assert generator.generate(prompts, fmt, MAX_NEW_TOKENS, trigger=trigger) == hf_answers(toy_micro, prompts, trigger)


# ---------------------------------------------------------------------------------------------
# The contract, with a stand-in for vLLM
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FakeSamplingParams:
    temperature: float = 1.0
    max_tokens: int = 16
    stop_token_ids: list | None = None


class FakeLLM:
    """Records what sgt hands vLLM and decodes greedily with the HF model, one prompt at a time."""

    created: list = []

    def __init__(self, model, **options):
        from sgt.models import load_model

        self.model = load_model(model, "float32")
        self.options = options
        self.requests = None
        FakeLLM.created.append(self)

    def generate(self, requests, params, use_tqdm=False):
        self.requests, self.params = requests, params
        outputs = []
        for request in requests:
            kwargs = ({"inputs_embeds": request["prompt_embeds"][None]} if "prompt_embeds" in request
                      else {"input_ids": torch.tensor([request["prompt_token_ids"]])})
            with torch.no_grad():
                tokens = self.model.generate(**kwargs, do_sample=False, max_new_tokens=params.max_tokens,
                                             eos_token_id=params.stop_token_ids, pad_token_id=0)[0]
            new = tokens if "prompt_embeds" in request else tokens[len(request["prompt_token_ids"]):]
            outputs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=new.tolist())]))
        return outputs


@pytest.fixture()
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.LLM, module.SamplingParams = FakeLLM, FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.created.clear()
    from sgt.generation.vllm import VLLMGenerator

    monkeypatch.setattr(VLLMGenerator, "supports_trigger", True)
    return FakeLLM.created


@pytest.mark.parametrize("with_trigger", [False, True])
def test_vllm_generator_hands_vllm_what_hf_uses(toy_micro, fake_vllm, with_trigger):
    from sgt.generation import stop_token_ids
    from sgt.models import load_model

    prompts = harmful_prompts(toy_micro)
    trigger = small_trigger(toy_micro) if with_trigger else None
    generator = make_generator("vllm", model_path=str(toy_micro / "base"), dtype="float32", needs_trigger=with_trigger)
    fmt = PromptFormat(generator.tokenizer, "plain", 256)
    answers = generator.generate(prompts, fmt, MAX_NEW_TOKENS, trigger=trigger)

    engine = fake_vllm[-1]
    model = load_model(str(toy_micro / "base"), "float32")
    assert engine.params.temperature == 0.0 and engine.params.max_tokens == MAX_NEW_TOKENS
    assert engine.params.stop_token_ids == stop_token_ids(model, generator.tokenizer)
    assert engine.options.get("enable_prompt_embeds", False) is with_trigger
    if with_trigger:  # the model's embeddings with the trigger after the anchor, as hf builds them
        first = fmt.encode(prompts[0])
        ids = torch.tensor([first.input_ids])
        expected, _, _ = trigger.insert(model.get_input_embeddings()(ids), torch.ones_like(ids),
                                        torch.tensor([first.trigger_pos]))
        assert torch.allclose(engine.requests[0]["prompt_embeds"], expected[0])
    else:
        assert [r["prompt_token_ids"] for r in engine.requests] == [fmt.encode(p).input_ids for p in prompts]
    assert answers == hf_answers(toy_micro, prompts, trigger)
    assert any(answers)  # the comparison is about real answers, not empty strings


def test_a_trigger_without_prompt_embeddings_names_the_hf_generator(toy_micro, fake_vllm, monkeypatch):
    from sgt.errors import UserError
    from sgt.generation.vllm import VLLMGenerator

    monkeypatch.setattr(VLLMGenerator, "supports_trigger", False)
    with pytest.raises(UserError, match=r"cannot insert a trigger.*vLLM >= 0\.9.*use generator: hf") as error:
        make_generator("vllm", model_path=str(toy_micro / "base"), needs_trigger=True)
    assert "\n" not in str(error.value)
