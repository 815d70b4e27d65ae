"""`dualnet eval`: a trained checkpoint on a split of cached tubes -> metrics, per-class table, the report and
(for MA-52's test split) the test-server CSV."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from dualnet.entities import get_entity_set
from pipelines.data.clips import LabelledClips, make_dataset, predict
from pipelines.errors import InputError
from pipelines.formats.checkpoints import load_checkpoint
from pipelines.formats.params import TrainParams
from pipelines.formats.tube_packs import TubeSet
from pipelines.report.figures import plot_confusion, plot_curves, plot_per_class_f1, plot_routing, write_report
from pipelines.report.metrics import evaluate, per_class, write_submission


def match_classes(checkpoint: Path, trained: list[str] | None, dataset: list[str], num_outputs: int
                  ) -> tuple[np.ndarray | None, str | None]:
    """How the model's outputs map onto the dataset's classes, by name: (columns, note).

    `columns[i]` is the model output of dataset class i (None when they are the same, in the same order); `note`
    says what was done when it is not plain. The same names in another order are remapped; any other difference
    (a class one side lacks, a renamed class) is refused, as scoring by position would give a silent wrong answer.
    A checkpoint without class names (written before they were saved) can only be checked by count.
    """
    if trained is None:
        if num_outputs != len(dataset):
            raise InputError(checkpoint, f"the model has {num_outputs} classes, the dataset {len(dataset)}")
        return None, "the checkpoint records no class names: classes matched by position"
    if list(trained) == list(dataset):
        return None, None
    unknown = [c for c in dataset if c not in trained]
    unused = [c for c in trained if c not in dataset]
    if unknown or unused or len(set(trained)) != len(trained):
        def some(names: list[str]) -> str:
            return ", ".join(repr(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")
        parts = ([f"{len(unknown)} dataset class(es) the model was not trained on ({some(unknown)})"] if unknown
                 else []) + ([f"{len(unused)} model class(es) the dataset lacks ({some(unused)})"] if unused else [])
        raise InputError(checkpoint, "its classes do not match the dataset's: " + "; ".join(parts or
                         ["duplicate class names"]) + "; evaluate on the dataset it was trained on")
    columns = np.array([list(trained).index(c) for c in dataset])
    return columns, f"the dataset lists the model's {len(dataset)} classes in another order: remapped by name"


def new_report_folder(run_dir: Path, split: str) -> Path:
    """A folder of its own for one evaluation, ``eval-<split>-<UTC time>``: an earlier report is never
    overwritten."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    path = run_dir / f"eval-{split}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = run_dir / f"eval-{split}-{stamp}-{n}"
    return path


@dataclass
class EvalResult:
    metrics: dict[str, float]
    report_md: Path
    report_html: Path
    submission: Path | None
    notes: list[str] = field(default_factory=list)  # how classes were matched, when not plainly


def _scores(checkpoint: Path, tubes: TubeSet, clips: LabelledClips, classes: list[str] | None, batch_size: int
            ) -> tuple[object, dict, list[str]]:
    """(model, predictions with fine scores in the dataset's class order, notes)."""
    model, state = load_checkpoint(checkpoint)
    notes: list[str] = []
    columns = None
    if classes is not None:
        columns, note = match_classes(checkpoint, state.get("classes"), list(classes), model.config.num_classes)
        notes += [note] if note else []
    # scored as training's own evaluation scored it: with the test-time flip when the run used one
    params = TrainParams(test_flip=bool((state.get("params") or {}).get("test_flip", False)))
    loader = DataLoader(make_dataset(tubes, clips, model.config, params, train=False), batch_size=batch_size)
    pred = predict(model, loader, next(model.parameters()).device)
    if columns is not None:
        pred["scores"] = pred["scores"][:, columns]
    return model, pred, notes


def run_eval(checkpoint: str | Path, tubes: TubeSet, clips: LabelledClips, classes: list[str], out_dir: Path,
             coarse_classes: list[str] | None = None, fine_to_coarse: np.ndarray | None = None,
             submission_ids: list[str] | None = None, batch_size: int = 8) -> EvalResult:
    """Evaluate `checkpoint` on `clips` and write the report into `out_dir`.

    Args:
        fine_to_coarse: Fine -> coarse ids (MA-52's body levels): the official body-level metrics and F1_mean, and
            the submission's body predictions.
        submission_ids: Write the MA-52 submission CSV for these video ids (one per clip, in order).
    """
    checkpoint = Path(checkpoint)
    model, pred, class_notes = _scores(checkpoint, tubes, clips, classes, batch_size)
    scores, labels = pred["scores"], pred["labels"]
    coarse_labels = np.asarray(clips.coarse) if clips.coarse is not None else (
        fine_to_coarse[labels] if fine_to_coarse is not None else None)
    # F1_mean and body_* are the official ones (body levels of the action prediction); a coarse head, if the model
    # has one, is reported on its own as coarse_*
    metrics = evaluate(scores, labels, classes, pred.get("coarse_scores"), coarse_labels, fine_to_coarse)
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
             f"path {model.config.path}", *class_notes]
    md, html_path = write_report(out_dir, "Micro-DualNet evaluation", metrics, table, figures, notes)
    submission = None
    if submission_ids is not None:
        if fine_to_coarse is None:
            raise ValueError("the submission needs the dataset's fine->coarse mapping (its body levels)")
        submission = write_submission(out_dir / "prediction.csv", submission_ids, scores, fine_to_coarse)
    return EvalResult(metrics, md, html_path, submission, class_notes)


def predict_submission(checkpoint: str | Path, tubes: TubeSet, clips: LabelledClips, fine_to_coarse: np.ndarray | None,
                       video_ids: list[str], out_dir: Path, batch_size: int = 8, classes: list[str] | None = None
                       ) -> Path:
    """Only the MA-52 submission CSV, for a split whose labels are hidden (`classes`: the dataset's, matched to the
    checkpoint's by name)."""
    if fine_to_coarse is None:
        raise ValueError("the submission needs the dataset's fine->coarse mapping (its body levels)")
    _, pred, _ = _scores(Path(checkpoint), tubes, clips, classes, batch_size)
    return write_submission(out_dir / "prediction.csv", video_ids, pred["scores"], fine_to_coarse)
