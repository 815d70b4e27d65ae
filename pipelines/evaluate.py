"""`dualnet eval`: a trained checkpoint on a split of cached tubes -> metrics, per-class table, the report and
(for MA-52's test split) the test-server CSV."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from dualnet.entities import get_entity_set
from pipelines.metrics import coarse_from_fine, evaluate, per_class, write_submission
from pipelines.report import plot_confusion, plot_curves, plot_per_class_f1, plot_routing, write_report
from pipelines.train import LabelledClips, TrainParams, load_model, make_dataset, predict
from pipelines.tubes import TubeSet


@dataclass
class EvalResult:
    metrics: dict[str, float]
    report_md: Path
    report_html: Path
    submission: Path | None


def run_eval(checkpoint: str | Path, tubes: TubeSet, clips: LabelledClips, classes: list[str], out_dir: Path,
             coarse_classes: list[str] | None = None, fine_to_coarse: np.ndarray | None = None,
             submission_ids: list[str] | None = None, batch_size: int = 8) -> EvalResult:
    """Evaluate `checkpoint` on `clips` and write the report into `out_dir`.

    Args:
        fine_to_coarse: Fine -> coarse ids; gives body-level scores (and MA-52's F1_mean) when the model has no
            coarse head.
        submission_ids: Write the MA-52 submission CSV for these video ids (one per clip, in order).
    """
    checkpoint = Path(checkpoint)
    model = load_model(checkpoint)
    loader = DataLoader(make_dataset(tubes, clips, model.config, TrainParams(), train=False), batch_size=batch_size)
    pred = predict(model, loader, next(model.parameters()).device)
    scores, labels = pred["scores"], pred["labels"]
    coarse_scores = pred.get("coarse_scores")
    if coarse_scores is None and fine_to_coarse is not None:
        coarse_scores = coarse_from_fine(scores, fine_to_coarse)
    coarse_labels = np.asarray(clips.coarse) if clips.coarse is not None else (
        fine_to_coarse[labels] if fine_to_coarse is not None else None)
    metrics = evaluate(scores, labels, classes, coarse_scores, coarse_labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    table = per_class(labels, scores.argmax(1), classes)
    table.to_csv(out_dir / "per_class.csv", index=False)
    history_file = checkpoint.parent / "metrics.jsonl"
    history = [json.loads(x) for x in history_file.read_text().splitlines() if x.strip()] \
        if history_file.exists() else []
    entities = [e.name for e in get_entity_set(model.config.entity_set)]
    figures = {"Training curves": plot_curves(history, out_dir / "curves.png"),
               "Confusion matrix": plot_confusion(labels, scores.argmax(1), classes, out_dir / "confusion.png"),
               "Per-class F1": plot_per_class_f1(table, out_dir / "per_class_f1.png"),
               "Routing: ST vs TS per entity and class": plot_routing(pred["routing"], labels, classes, entities,
                                                                      out_dir / "routing.png")}
    figures = {k: v for k, v in figures.items() if v is not None}
    notes = [f"checkpoint: {checkpoint}", f"clips: {len(labels)}, classes: {len(classes)}",
             f"model: preset backbone {model.config.backbone}, modality {model.config.modality}, "
             f"path {model.config.path}"]
    md, html_path = write_report(out_dir, "Micro-DualNet evaluation", metrics, table, figures, notes)
    submission = None
    if submission_ids is not None:
        if coarse_scores is None:
            raise ValueError("the submission needs body-level scores: a coarse head or a fine->coarse mapping")
        submission = write_submission(out_dir / "prediction.csv", submission_ids, scores, coarse_scores)
    return EvalResult(metrics, md, html_path, submission)


def predict_submission(checkpoint: str | Path, tubes: TubeSet, clips: LabelledClips, fine_to_coarse: np.ndarray | None,
                       video_ids: list[str], out_dir: Path, batch_size: int = 8) -> Path:
    """Only the MA-52 submission CSV, for a split whose labels are hidden."""
    model = load_model(checkpoint)
    loader = DataLoader(make_dataset(tubes, clips, model.config, TrainParams(), train=False), batch_size=batch_size)
    pred = predict(model, loader, next(model.parameters()).device)
    coarse = pred.get("coarse_scores")
    if coarse is None:
        if fine_to_coarse is None:
            raise ValueError("the submission needs body-level scores: a coarse head or a fine->coarse mapping")
        coarse = coarse_from_fine(pred["scores"], fine_to_coarse)
    return write_submission(out_dir / "prediction.csv", video_ids, pred["scores"], coarse)
