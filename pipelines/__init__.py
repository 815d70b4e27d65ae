"""The staged jobs of micro-dualnet: each stage reads the feature store and writes content-hashed results into it."""
