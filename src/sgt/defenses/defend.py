"""`sgt defend`: apply any registered defense to a model, outside an experiment.

    sgt defend --defense repnoise --model M --data defense.jsonl --out runs/repnoise --settings beta=0.001,lr=2e-5
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import cfg
from ..errors import UserError


@dataclass
class DefendConfig:
    defense: str = cfg("", "Defense kind (a module of sgt.defenses: none, sft, sgt, repnoise, booster, vaccine, tar, "
                           "circuit-breakers, seam, ...).")
    model: str = cfg("", "Model to defend: a Hugging Face name, a local folder, a .gguf file or a named model.")
    data: str = cfg("", "Defense data (WildGuardTrain schema: harmful and benign prompts with responses).")
    out: str = cfg("", "Output folder.")
    format: str = cfg("plain", "Prompt format: plain or chat.")
    dtype: str = cfg("auto", "Weights dtype: auto, bfloat16, float16 or float32.")
    seed: int = cfg(42, "Random seed.")
    settings: dict = cfg({}, "The defense's own settings: a YAML mapping in --config, or key=value,... here.")
    trust_remote_code: bool = cfg(False, "Allow model code from the hub (off: safer).")
    progress: bool = cfg(True, "Show progress bars.")


def run_defend(config: DefendConfig) -> dict:
    """Build the defense and train it into `config.out` (a trained baseline) or apply it there. Its settings
    are typed over this command's fields like an experiment's over the run's (what they set wins)."""
    from ..context import RunContext
    from ..data.sources import DataFields
    from . import DefenseSpec, make_defense

    if not config.defense or not config.out:
        raise UserError("pass --defense KIND and --out DIR (see `sgt defend --help`)")
    context = RunContext.of(config, defense_data=DataFields(data=config.data))
    defense = make_defense(DefenseSpec(name=config.defense, kind=config.defense, settings=dict(config.settings)),
                           context)
    if hasattr(defense, "train"):
        return defense.train(config.out) or {"out": config.out}
    model = defense.apply(Path(config.out))
    if not Path(model).resolve().is_relative_to(Path(config.out).resolve()):
        model = _save_unchanged(model, config)  # e.g. `none`: --out still receives the model
    return {"model": model}


def _save_unchanged(model_name: str, config: DefendConfig) -> str:
    """A defense that leaves the model as it is: --out gets it as a plain checkpoint, like any other."""
    from ..config import save_config
    from ..models import load_model, load_tokenizer
    from ..training import save_model
    from ..utils import check_output, output_dir

    check_output(config.out, "model")  # before loading the weights
    tokenizer = load_tokenizer(model_name, config.trust_remote_code)
    model = load_model(model_name, config.dtype, config.trust_remote_code)
    with output_dir(config.out, kind="model") as work:
        save_model(model, tokenizer, work)
        save_config(config, work)
    return config.out
