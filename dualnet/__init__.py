"""Micro-DualNet: dual-path spatio-temporal networks for micro-action recognition.

This package holds what a model needs and nothing of the pipeline: keypoint layouts, body-part entities, the
config and presets, the TSM ResNet backbone, entity encoders, the ST and TS paths, routing, losses and the model.
It imports without the pipeline's video or pose dependencies.

    >>> import dualnet
    >>> model = dualnet.MicroDualNet(dualnet.preset("paper", num_classes=52))
"""

from dualnet.config import PRESETS, ModelConfig, preset

__version__ = "0.1.0"
__all__ = ["PRESETS", "DualNetOutput", "MicroDualNet", "ModelConfig", "preset", "__version__"]


def __getattr__(name: str):
    """The model classes load torch on first use: `dualnet.layouts` and `dualnet.entities` (which the pose stages
    use) import without it, which saves seconds of start-up for every `dualnet extract`."""
    if name in ("MicroDualNet", "DualNetOutput"):
        from dualnet import model

        return getattr(model, name)
    raise AttributeError(f"module 'dualnet' has no attribute {name!r}")
