"""Loading models and tokenizers: any Hugging Face causal LM, by hub name, local folder, GGUF file or
named model (`smollm2-135m-instruct`, see gguf.py).

`trust_remote_code` is off unless asked for, weights load as safetensors, and every failure a
user can fix (wrong path, offline hub, unknown dtype) is a one-line UserError.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import UserError, first_line

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(name: str = "auto") -> torch.dtype:
    """`auto` = bf16 on a CUDA GPU that supports it, else fp32 (CPU training wants fp32)."""
    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}: use auto, bfloat16, float16 or float32")
    return DTYPES[name]


def mixed_precision_flags(dtype: torch.dtype) -> dict:
    """TrainingArguments flags that match the model dtype (bf16/fp16 on GPU, nothing on CPU)."""
    if not torch.cuda.is_available():
        return {}
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def resolve_model(name_or_path: str) -> str:
    """What `from_pretrained` gets: GGUF files and named models become their cached checkpoint."""
    from .gguf import gguf_checkpoint, gguf_source

    source = gguf_source(name_or_path)
    return str(gguf_checkpoint(source)) if source is not None else name_or_path


def check_local_model(name_or_path: str) -> None:
    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or path.exists()
    if looks_local and not (path / "config.json").is_file() and not is_adapter(path):
        raise UserError(f"model not found: {name_or_path} is not a folder with a config.json "
                        "(give a Hugging Face model name, a folder written by save_pretrained, a .gguf file "
                        "or a named model such as smollm2-135m-instruct)")


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    name_or_path = resolve_model(name_or_path)
    check_local_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise UserError(f"could not load the tokenizer of {name_or_path!r}: {first_line(exc)}") from None
    ensure_pad_token(tokenizer)
    return tokenizer


def load_model(name_or_path: str, dtype: str = "auto", trust_remote_code: bool = False,
               device: torch.device | str | None = None):
    """A causal LM in `dtype`; on `device` if given (training leaves placement to the Trainer)."""
    from transformers import AutoModelForCausalLM

    name_or_path = resolve_model(name_or_path)
    check_local_model(name_or_path)
    if is_adapter(Path(name_or_path)):
        return load_adapter(Path(name_or_path), dtype, trust_remote_code, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code,
            use_safetensors=True)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"could not load model {name_or_path!r}: {first_line(exc)}") from None
    if device is not None:
        model.to(device)
    return model


def is_adapter(path: Path) -> bool:
    """A LoRA adapter folder (e.g. written with --no-merge-lora): adapter weights, no full config."""
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def load_adapter(path: Path, dtype: str, trust_remote_code: bool, device):
    """The adapter's base model with the adapter merged in: a plain model again."""
    import json

    from peft import PeftModel

    base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise UserError(f"{path}/adapter_config.json names no base model (base_model_name_or_path)")
    model = load_model(base, dtype, trust_remote_code)
    try:
        model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    except Exception as exc:
        raise UserError(f"could not load the LoRA adapter in {path}: {first_line(exc)}") from None
    return model.to(device) if device is not None else model


def ensure_pad_token(tokenizer) -> None:
    """Base models often ship without a pad token; padding is masked out anyway, so EOS will do."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise UserError("the tokenizer has neither a pad nor an EOS token; add a pad token to it")
        tokenizer.pad_token = tokenizer.eos_token


def hidden_size(model) -> int:
    return model.get_input_embeddings().weight.shape[-1]


def num_layers(model) -> int:
    return int(model.config.get_text_config().num_hidden_layers)


def model_name(model) -> str:
    return str(getattr(model.config, "_name_or_path", "") or "unknown")
