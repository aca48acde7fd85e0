"""Gaze: a self-attention text classifier that shows where it looks.

Importing this package registers the `gaze` model type with the transformers Auto classes, so a
saved folder also loads without `trust_remote_code` wherever this project is importable.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
)

from .configuration_gaze import GazeConfig
from .modeling_gaze import GazeForMaskedLM, GazeForSequenceClassification, GazeModel

AutoConfig.register("gaze", GazeConfig)
AutoModel.register(GazeConfig, GazeModel)
AutoModelForSequenceClassification.register(GazeConfig, GazeForSequenceClassification)
AutoModelForMaskedLM.register(GazeConfig, GazeForMaskedLM)

__all__ = ["GazeConfig", "GazeModel", "GazeForSequenceClassification", "GazeForMaskedLM"]
