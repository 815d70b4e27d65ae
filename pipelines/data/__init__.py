"""Dataset clip indexes, crops, and clip datasets that feed the model."""
