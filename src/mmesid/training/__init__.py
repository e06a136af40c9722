"""The one training skeleton shared by SASRec, the MM-RQ-VAE and LLM fine-tuning."""

from .loop import LoopSettings, TrainingLoop, TrainingTask

__all__ = ["LoopSettings", "TrainingLoop", "TrainingTask"]
