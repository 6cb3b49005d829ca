"""Evaluation of one model: harm (generate + judge), benign capability (lm-eval + exact match), and
representation drift to the trigger's safety region."""
