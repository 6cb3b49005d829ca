"""SGT: Safety Guidance Trigger - harden open-weight LLMs against malicious fine-tuning.

Each stage is a CLI subcommand and an importable function:
  worlds      -> sgt.worlds.build_world                    (toy world, real-model world)
  stage 1     -> sgt.methods.trigger.learn_trigger         (learn the Safety Guidance Trigger)
  stage 2     -> sgt.methods.align.align_model             (trigger-guided representation alignment)
  sft, attack -> sgt.methods.finetune.run_finetune         (conventional alignment; malicious fine-tuning)
  evaluation  -> sgt.evaluation.harm.evaluate_harm, sgt.evaluation.benign.evaluate_benign,
                 sgt.evaluation.drift.measure_drift
  experiment  -> sgt.experiment.run_experiment             (defenses x attack grid x evaluation -> report)
Plug-ins (one module each, one Registry per kind, see docs/extending.md): sgt.defenses, sgt.attacks,
sgt.judges, sgt.generation, sgt.worlds.
"""

__version__ = "0.1.0"
