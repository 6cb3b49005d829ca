"""The embedded toy world: a generated closed world of benign tasks and harmful requests, and a tiny
Llama-architecture base model pretrained on it (see `build.build_toy_world`)."""

from .build import PRESETS, ToyPreset, build_toy_world

__all__ = ["PRESETS", "ToyPreset", "build_toy_world"]
