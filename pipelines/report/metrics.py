"""Evaluation metrics, computed with numpy: Top-k, micro/macro F1, per-class precision/recall/F1, MA-52's F1_mean,
and the MA-52 test-server submission CSV.

F1 follows scikit-learn's ``f1_score`` definitions exactly (the official MA-52 evaluation calls it): micro-F1
pools every decision (and equals accuracy for single-label data); macro-F1 averages the per-class F1 over the
classes present in the labels or the predictions (sklearn's default ``labels``), a class with no true positive
counting 0 (sklearn's ``zero_division=0``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import InputError

SUBMISSION_HEADER = ["vid"] + [f"action_pred_{i}" for i in range(1, 6)] + [f"body_pred_{i}" for i in range(1, 6)]


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Share of samples whose label is among the k highest scores. scores (N, C), labels (N,)."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def per_class(labels: np.ndarray, predictions: np.ndarray, classes: list[str] | None = None) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (rows: every class id seen in labels or predictions)."""
    ids = np.union1d(labels, predictions)
    rows = []
    for c in ids:
        tp = int(((predictions == c) & (labels == c)).sum())
        fp = int(((predictions == c) & (labels != c)).sum())
        fn = int(((predictions != c) & (labels == c)).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        name = classes[int(c)] if classes is not None and 0 <= int(c) < len(classes) else str(int(c))
        rows.append({"class_id": int(c), "class": name, "precision": precision, "recall": recall, "f1": f1,
                     "support": int((labels == c).sum())})
    return pd.DataFrame(rows)


def f1_micro(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Micro-averaged F1 of single-label predictions (equals accuracy)."""
    return float((labels == predictions).mean()) if len(labels) else 0.0


def f1_macro(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Unweighted mean of the per-class F1 over classes present in labels or predictions (sklearn's macro)."""
    table = per_class(labels, predictions)
    return float(table["f1"].mean()) if len(table) else 0.0


def ma52_f1_mean(fine_labels: np.ndarray, fine_pred: np.ndarray, fine_to_coarse: np.ndarray) -> float:
    """MA-52's official F1_mean (the official `tools/test.py`): the mean of body-level micro-F1, body-level
    macro-F1, action micro-F1 and action macro-F1, where the body-level prediction is the body level of the action
    prediction (fine -> coarse of the top-1 action), never a separate body classifier's."""
    body_labels, body_pred = fine_to_coarse[fine_labels], fine_to_coarse[fine_pred]
    return float(np.mean([f1_micro(body_labels, body_pred), f1_macro(body_labels, body_pred),
                          f1_micro(fine_labels, fine_pred), f1_macro(fine_labels, fine_pred)]))


def evaluate(scores: np.ndarray, labels: np.ndarray, classes: list[str] | None = None,
             coarse_scores: np.ndarray | None = None, coarse_labels: np.ndarray | None = None,
             fine_to_coarse: np.ndarray | None = None) -> dict[str, float]:
    """Every headline metric, as fractions in [0, 1]. scores (N, C), labels (N,).

    Keys: top1, top5, f1_micro, f1_macro; with `fine_to_coarse` (MA-52) the official body-level metrics, body
    levels taken from the action prediction: body_top1, body_f1_micro, body_f1_macro, and f1_mean; with
    `coarse_scores` (a coarse head's) and `coarse_labels`: coarse_top1, coarse_top5, coarse_f1_micro,
    coarse_f1_macro, reported on their own (they never feed f1_mean).
    """
    pred = scores.argmax(axis=1)
    out = {"top1": topk_accuracy(scores, labels, 1), "top5": topk_accuracy(scores, labels, min(5, scores.shape[1])),
           "f1_micro": f1_micro(labels, pred), "f1_macro": f1_macro(labels, pred)}
    if fine_to_coarse is not None:
        body_labels, body_pred = fine_to_coarse[labels], fine_to_coarse[pred]
        out.update({"body_top1": float((body_labels == body_pred).mean()) if len(labels) else 0.0,
                    "body_f1_micro": f1_micro(body_labels, body_pred),
                    "body_f1_macro": f1_macro(body_labels, body_pred),
                    "f1_mean": ma52_f1_mean(labels, pred, fine_to_coarse)})
    if coarse_scores is not None and coarse_labels is not None:
        cpred = coarse_scores.argmax(axis=1)
        out.update({"coarse_top1": topk_accuracy(coarse_scores, coarse_labels, 1),
                    "coarse_top5": topk_accuracy(coarse_scores, coarse_labels, min(5, coarse_scores.shape[1])),
                    "coarse_f1_micro": f1_micro(coarse_labels, cpred),
                    "coarse_f1_macro": f1_macro(coarse_labels, cpred)})
    return out


def submission_predictions(scores: np.ndarray, fine_to_coarse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(action_pred (N, 5), body_pred (N, 5)) as the MA-52 server reads them: the 5 best actions by score, and
    each one's body level (``body_pred_i`` = fine -> coarse of ``action_pred_i``, as the official evaluation
    derives body levels). Equal scores rank the lower class id first."""
    action = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    return action, fine_to_coarse[action]


def write_submission(path: str | Path, video_ids: list[str], scores: np.ndarray, fine_to_coarse: np.ndarray
                     ) -> Path:
    """The MA-52 test-server CSV: ``vid,action_pred_1..5,body_pred_1..5``, one row per video in the given order
    (see `submission_predictions`).

    `video_ids` are written as given (the server expects the list's names, e.g. ``test0000.mp4``).
    """
    path = Path(path)
    fine, coarse = submission_predictions(scores, np.asarray(fine_to_coarse))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(SUBMISSION_HEADER)
        for vid, a, b in zip(video_ids, fine, coarse, strict=True):
            writer.writerow([vid, *map(int, a), *map(int, b)])
    return path


def read_submission(path: str | Path) -> pd.DataFrame:
    """A submission CSV, validated: the exact header, integer predictions, one row per video."""
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != SUBMISSION_HEADER:
        raise InputError(path, f"header is not {','.join(SUBMISSION_HEADER)}")
    for lineno, row in enumerate(rows[1:], 2):
        if len(row) != len(SUBMISSION_HEADER) or not all(v.lstrip("-").isdigit() for v in row[1:]):
            raise InputError(f"{path}:{lineno}", "expected a video id and 10 integer predictions")
    df = pd.DataFrame(rows[1:], columns=SUBMISSION_HEADER)
    df[SUBMISSION_HEADER[1:]] = df[SUBMISSION_HEADER[1:]].astype(int)
    return df
