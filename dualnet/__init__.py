"""Micro-DualNet: dual-path spatio-temporal networks for micro-action recognition.

This package holds what a model needs and nothing of the pipeline: keypoint layouts (and, as they land, the config,
entities, backbone, paths, routing and losses). It imports without the pipeline's video or pose dependencies.
"""

__version__ = "0.1.0"
