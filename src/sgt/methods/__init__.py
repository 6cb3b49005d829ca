"""Training methods, one package each, in the TRL manner: a config dataclass (a help string per field,
validation in `__post_init__`), a public Trainer subclass whose loss is a public function, and the run
function behind the CLI verb.

    trigger/   stage 1: learn the Safety Guidance Trigger on the frozen model   (sgt trigger)
    align/     stage 2: align the model to the trigger-induced representations  (sgt align)
    finetune/  supervised fine-tuning: the sft defense and the MFT attack        (sgt sft, sgt attack)
"""
