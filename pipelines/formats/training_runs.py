"""A training run's folder as the store counts it: one finished unit per epoch line of ``metrics.jsonl``.

The run folder (``<store>/train/<key>/``) holds ``last.pt`` / ``best.pt`` (`checkpoints`), ``metrics.jsonl`` (one JSON
line per finished epoch, appended by `stages.train`) and ``done.json`` once every epoch ran.
"""

from __future__ import annotations

from pipelines.store import OutputFormat, StageOutput, register_output_format

HISTORY = "metrics.jsonl"
TRAINING_FORMAT = "training-run"


def done_epochs(output: StageOutput) -> list[str]:
    """``epoch i`` for every epoch the run's history records."""
    history = output.path / HISTORY
    lines = history.read_text().splitlines() if history.exists() else []
    return [f"epoch {i}" for i, line in enumerate(lines) if line.strip()]


def planned_epochs(output: StageOutput, manifest: dict) -> int:
    """The epochs the run was asked for."""
    return int(manifest["params"]["epochs"])


register_output_format(TRAINING_FORMAT, OutputFormat(done_epochs, planned_epochs, outside_items=True))
