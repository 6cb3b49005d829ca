"""A model's architecture numbers (what the memory plan needs) without loading its weights: from its
config.json (a local folder or the Hugging Face cache, never the network), instantiated on the meta device
to count parameters exactly, or, for the paper's models, from a small table when no config is readable."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Architecture numbers of the paper's models, used only when their config.json cannot be read offline.
KNOWN_SHAPES = {
    "meta-llama/Llama-3.1-8B": dict(model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                    head_dim=128, tie_word_embeddings=False),
    "Qwen/Qwen3-8B-Base": dict(model_type="qwen3", vocab_size=151936, hidden_size=4096, intermediate_size=12288,
                               num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                               tie_word_embeddings=False),
}
KNOWN_SHAPES["meta-llama/Llama-3.1-8B-Instruct"] = KNOWN_SHAPES["meta-llama/Llama-3.1-8B"]
KNOWN_SHAPES["Qwen/Qwen3-8B"] = KNOWN_SHAPES["Qwen/Qwen3-8B-Base"]


# ---------------------------------------------------------------------------------------------
# What is trained, on what model, under which launcher
# ---------------------------------------------------------------------------------------------


@dataclass
class ModelShape:
    """The numbers of a model the plan needs, counted on a weightless (meta) instance."""

    source: str                 # where the numbers come from, shown in the plan
    parameters: int
    vocab: int
    hidden: int
    intermediate: int
    kv_width: int               # key/value heads x head dim
    layers: int
    layer_parameters: int       # one decoder layer: FSDP's unit under TRANSFORMER_BASED_WRAP
    linears: list[tuple[str, int, int]] = field(default_factory=list)  # (name, in, out), LM head excluded

    @classmethod
    def from_config(cls, config, source: str) -> ModelShape:
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        text = config.get_text_config()
        layers = int(text.num_hidden_layers)
        blocks = next((m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == layers), None)
        head = model.get_output_embeddings()
        heads = int(getattr(text, "num_key_value_heads", None) or text.num_attention_heads)
        head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)
        return cls(source=source, parameters=sum(p.numel() for p in model.parameters()), vocab=int(text.vocab_size),
                   hidden=int(text.hidden_size), intermediate=int(text.intermediate_size), kv_width=heads * head_dim,
                   layers=layers, layer_parameters=sum(p.numel() for p in blocks[0].parameters()) if blocks else 0,
                   linears=[(name, m.in_features, m.out_features) for name, m in model.named_modules()
                            if isinstance(m, torch.nn.Linear) and m is not head])

    def lora_parameters(self, rank: int, targets: str) -> int:
        """LoRA matrices A (r x in) and B (out x r) on every targeted Linear ("all-linear": all but the head)."""
        names = None if targets == "all-linear" else {t.strip() for t in targets.split(",") if t.strip()}
        return sum(rank * (n_in + n_out) for name, n_in, n_out in self.linears
                   if names is None or name.rsplit(".", 1)[-1] in names)


def model_shape(name: str) -> ModelShape | str:
    """The shape of model `name`, or why it is not known, without touching the network."""
    from transformers import AutoConfig

    path = _local_config_folder(name)
    try:
        if path is not None:
            return ModelShape.from_config(AutoConfig.from_pretrained(str(path)), f"{path}/config.json")
        if not Path(name).expanduser().exists():
            try:
                config = AutoConfig.from_pretrained(name, local_files_only=True)
                return ModelShape.from_config(config, "config.json in the Hugging Face cache")
            except (OSError, ValueError):
                if name in KNOWN_SHAPES:
                    numbers = dict(KNOWN_SHAPES[name])
                    config = AutoConfig.for_model(numbers.pop("model_type"), **numbers)
                    return ModelShape.from_config(config, "sgt's table of known shapes: its config.json is not "
                                                          "readable offline")
    except Exception as exc:  # an architecture transformers cannot build: no plan, the run goes on
        return f"its architecture could not be counted ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    if Path(name).is_absolute() or name.startswith((".", "~")):
        return "the folder has no config.json yet (a world's base model appears once the world is built)"
    return "its config.json is not readable offline (not in the Hugging Face cache) and it is not a model of sgt's table"


def _local_config_folder(name: str) -> Path | None:
    """A local folder with config.json: the model folder itself or a GGUF file's converted copy, if any."""
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return path
    try:
        from .gguf import gguf_source
        from .utils import cache_root

        source = gguf_source(name)
    except Exception:  # a named model whose package is missing: no shape
        return None
    if source is None:
        return None
    converted = sorted((cache_root() / "gguf").glob(f"{Path(source).stem}-*/config.json"))
    return converted[-1].parent if converted else None
