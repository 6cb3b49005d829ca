"""SGT: Safety Guidance Trigger — harden open-weight LLMs against malicious fine-tuning.

Stages (each a CLI subcommand and an importable function):
  toy world  -> sgt.worlds.toy.build_toy_world
  stage 1    -> sgt.stage1.learn_trigger        (learn the Safety Guidance Trigger)
  stage 2    -> sgt.stage2.align_model          (trigger-guided representation alignment)
  attack     -> sgt.finetune.attack             (malicious fine-tuning simulation)
  evaluation -> sgt.evaluate.evaluate_harm, sgt.benign.evaluate_benign
  experiment -> sgt.experiment.run_experiment   (defenses x attack grid x evaluation -> report)
"""

__version__ = "0.1.0"
