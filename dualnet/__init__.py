"""Micro-DualNet: dual-path spatio-temporal networks for micro-action recognition.

This package holds what a model needs and nothing of the pipeline: keypoint layouts, body-part entities, the
config and presets, the TSM ResNet backbone, entity encoders, the ST and TS paths, routing, losses and the model.
It imports without the pipeline's video or pose dependencies.

    >>> import dualnet
    >>> model = dualnet.MicroDualNet(dualnet.preset("paper", num_classes=52))
"""

from dualnet.config import PRESETS, ModelConfig, preset
from dualnet.model import DualNetOutput, MicroDualNet

__version__ = "0.1.0"
__all__ = ["PRESETS", "DualNetOutput", "MicroDualNet", "ModelConfig", "preset", "__version__"]
