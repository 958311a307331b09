"""LoRA training: configs and presets, label masking, the training loop, curves and resume.

``train_adapter`` is imported on first use: it pulls in torch, transformers and peft, which the
CLI must not pay for when it only parses options or prints help.
"""

from knowpack.train.config import TrainConfig, load_preset, preset_names

__all__ = ["TrainConfig", "load_preset", "preset_names", "train_adapter"]


def __getattr__(name: str):
    if name == "train_adapter":
        from knowpack.train.trainer import train_adapter

        return train_adapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
