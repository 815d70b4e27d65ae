"""Metrics, the evaluation report and pictures."""
