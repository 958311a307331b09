"""LoRA training: configs and presets, label masking, the training loop, curves and resume."""

from knowpack.train.config import TrainConfig, load_preset, preset_names
from knowpack.train.trainer import train_adapter

__all__ = ["TrainConfig", "load_preset", "preset_names", "train_adapter"]
