"""Metrics against an independent scikit-learn computation, and the MA-52 submission format."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED, requires_shared
from pipelines.errors import InputError
from pipelines.report import metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn (a dev dependency) checks the metrics")
FINE_TO_COARSE = np.array([0] * 5 + [1] * 6 + [2] * 13 + [3] * 8 + [4] * 6 + [5] * 10 + [6] * 4)  # MA-52's


def official_fine2coarse(x: int) -> int:
    """The official MA-52 code's action -> body level (`tools/test.py`, `online_evaluation/eval.py`), transcribed."""
    for level, last in enumerate((4, 10, 23, 31, 37, 47)):
        if x <= last:
            return level
    return 6


def official_f1_mean(labels: np.ndarray, scores: np.ndarray) -> float:
    """The official `lv_evaluate`, transcribed: top-1 actions (equal scores: the lower class id, our documented
    rule; the official argsort leaves ties to its sort), their body levels, sklearn's micro/macro F1 of both."""
    f1 = sklearn_metrics.f1_score
    actions = [int(np.flatnonzero(row == row.max())[0]) for row in scores]
    body_pred = [official_fine2coarse(a) for a in actions]
    body_true = [official_fine2coarse(int(a)) for a in labels]
    return (f1(labels, actions, average="macro") + f1(body_true, body_pred, average="macro")
            + f1(body_true, body_pred, average="micro") + f1(labels, actions, average="micro")) / 4.0


def predictions(kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,), scores (N, 52)): random, skewed (a few frequent classes, a model that favours one) or tied
    (integer scores in a small range: many equal maxima)."""
    rng = np.random.default_rng(seed)
    n = 400
    if kind == "skewed":
        labels = rng.choice([0, 7, 12, 33, 50], n, p=[0.5, 0.2, 0.15, 0.1, 0.05])
        scores = rng.normal(size=(n, 52))
        scores[:, 12] += 1.5
    else:
        labels = rng.integers(0, 52, n)
        scores = rng.integers(0, 4, (n, 52)).astype(float) if kind == "tied" else rng.normal(size=(n, 52))
    scores[np.arange(n), labels] += rng.normal(1.0, 1.0, n).round(0 if kind == "tied" else 6)
    return labels, scores


def test_the_fine_to_coarse_file_is_the_official_mapping():
    assert FINE_TO_COARSE.tolist() == [official_fine2coarse(x) for x in range(52)]
    if SHARED.is_dir():
        from pipelines.data.datasets import read_fine_to_coarse

        mapping, _ = read_fine_to_coarse(SHARED / "ma52" / "annotations" / "fine_to_coarse.tsv")
        assert [mapping[x] for x in range(52)] == FINE_TO_COARSE.tolist()


@pytest.mark.parametrize("kind", ["random", "skewed", "tied"])
@pytest.mark.parametrize("seed", range(3))
def test_f1_mean_is_the_official_arithmetic(kind, seed):
    """F1_mean takes the body level of the action prediction, never a coarse head's (which is reported alone)."""
    labels, scores = predictions(kind, seed)
    head = np.random.default_rng(seed + 100).normal(size=(len(labels), 7))  # a coarse head that disagrees
    got = metrics.evaluate(scores, labels, coarse_scores=head, coarse_labels=FINE_TO_COARSE[labels],
                           fine_to_coarse=FINE_TO_COARSE)
    assert got["f1_mean"] == pytest.approx(official_f1_mean(labels, scores), abs=1e-9)
    assert got["coarse_top1"] == pytest.approx((head.argmax(1) == FINE_TO_COARSE[labels]).mean(), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn_on_random_predictions(seed):
    labels, scores = predictions("random", seed)
    got = metrics.evaluate(scores, labels, fine_to_coarse=FINE_TO_COARSE)
    pred = scores.argmax(1)
    body_labels, body_pred = FINE_TO_COARSE[labels], FINE_TO_COARSE[pred]
    f1 = sklearn_metrics.f1_score
    expected = {
        "top1": sklearn_metrics.accuracy_score(labels, pred),
        "top5": sklearn_metrics.top_k_accuracy_score(labels, scores, k=5, labels=np.arange(52)),
        "f1_micro": f1(labels, pred, average="micro"),
        "f1_macro": f1(labels, pred, average="macro", zero_division=0),
        "body_top1": sklearn_metrics.accuracy_score(body_labels, body_pred),
        "body_f1_micro": f1(body_labels, body_pred, average="micro"),
        "body_f1_macro": f1(body_labels, body_pred, average="macro", zero_division=0),
    }
    expected["f1_mean"] = np.mean([expected["body_f1_micro"], expected["body_f1_macro"], expected["f1_micro"],
                                   expected["f1_macro"]])
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    p, r, f, s = sklearn_metrics.precision_recall_fscore_support(labels, pred, zero_division=0)
    table = metrics.per_class(labels, pred)
    np.testing.assert_allclose(table["precision"], p)
    np.testing.assert_allclose(table["recall"], r)
    np.testing.assert_allclose(table["f1"], f)
    np.testing.assert_array_equal(table["support"], s)


@pytest.mark.parametrize("kind", ["random", "skewed", "tied"])
def test_submission_body_levels_are_those_of_the_actions(kind, tmp_path):
    labels, scores = predictions(kind, 7)
    vids = [f"test{i:04d}.mp4" for i in range(len(labels))]
    rows = metrics.read_submission(metrics.write_submission(tmp_path / "p.csv", vids, scores, FINE_TO_COARSE))
    actions = rows[[f"action_pred_{i}" for i in range(1, 6)]].to_numpy()
    bodies = rows[[f"body_pred_{i}" for i in range(1, 6)]].to_numpy()
    for row, got_actions, got_bodies in zip(scores, actions, bodies, strict=True):
        want = sorted(range(52), key=lambda c, row=row: (-row[c], c))[:5]  # best first, ties: lower id first
        assert got_actions.tolist() == want
        assert got_bodies.tolist() == [official_fine2coarse(a) for a in want]


def test_manets_reported_row_gives_its_f1_mean():
    """datasets.md: MANet's body micro 78.95 (= body Top-1), body macro 72.87, action micro 61.33, macro 49.22."""
    assert np.mean([78.95, 72.87, 61.33, 49.22]) == pytest.approx(65.59, abs=0.01)


@requires_shared
def test_submission_round_trips_against_the_official_example(tmp_path):
    example = SHARED / "ma52" / "annotations" / "example_submission_prediction.csv"
    official = metrics.read_submission(example)
    vids = official["vid"].tolist()
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(len(vids), 52))
    out = metrics.write_submission(tmp_path / "prediction.csv", vids, scores, FINE_TO_COARSE)
    ours = metrics.read_submission(out)
    assert list(ours.columns) == list(official.columns) and ours["vid"].tolist() == vids
    assert out.read_text().splitlines()[0] == example.read_text().splitlines()[0].strip()
    top = np.argsort(-scores, axis=1)[:, :5]
    np.testing.assert_array_equal(ours[[f"action_pred_{i}" for i in range(1, 6)]].to_numpy(), top)
    assert ours[[f"body_pred_{i}" for i in range(1, 6)]].to_numpy().max() <= 6
    bad = tmp_path / "bad.csv"
    bad.write_text("vid,action_pred_1\ntest0000.mp4,3\n")
    with pytest.raises(InputError, match="header is not vid,action_pred_1"):
        metrics.read_submission(bad)
