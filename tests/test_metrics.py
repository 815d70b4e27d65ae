"""Metrics against an independent scikit-learn computation, and the MA-52 submission format."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED, requires_shared
from pipelines.errors import InputError
from pipelines.report import metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn (a dev dependency) checks the metrics")
FINE_TO_COARSE = np.array([0] * 5 + [1] * 6 + [2] * 13 + [3] * 8 + [4] * 6 + [5] * 10 + [6] * 4)  # MA-52's


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn_on_random_predictions(seed):
    rng = np.random.default_rng(seed)
    n = 400
    labels = rng.integers(0, 52, n)
    scores = rng.normal(size=(n, 52))
    scores[np.arange(n), labels] += rng.normal(1.0, 1.0, n)  # better than chance, not perfect
    coarse_labels = FINE_TO_COARSE[labels]
    coarse_scores = metrics.coarse_from_fine(scores, FINE_TO_COARSE)
    got = metrics.evaluate(scores, labels, coarse_scores=coarse_scores, coarse_labels=coarse_labels)
    pred, cpred = scores.argmax(1), coarse_scores.argmax(1)
    f1 = sklearn_metrics.f1_score
    expected = {
        "top1": sklearn_metrics.accuracy_score(labels, pred),
        "top5": sklearn_metrics.top_k_accuracy_score(labels, scores, k=5, labels=np.arange(52)),
        "f1_micro": f1(labels, pred, average="micro"),
        "f1_macro": f1(labels, pred, average="macro", zero_division=0),
        "coarse_top1": sklearn_metrics.accuracy_score(coarse_labels, cpred),
        "coarse_f1_micro": f1(coarse_labels, cpred, average="micro"),
        "coarse_f1_macro": f1(coarse_labels, cpred, average="macro", zero_division=0),
    }
    expected["f1_mean"] = np.mean([expected["coarse_f1_micro"], expected["coarse_f1_macro"], expected["f1_micro"],
                                   expected["f1_macro"]])
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    p, r, f, s = sklearn_metrics.precision_recall_fscore_support(labels, pred, zero_division=0)
    table = metrics.per_class(labels, pred)
    np.testing.assert_allclose(table["precision"], p)
    np.testing.assert_allclose(table["recall"], r)
    np.testing.assert_allclose(table["f1"], f)
    np.testing.assert_array_equal(table["support"], s)


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
    out = metrics.write_submission(tmp_path / "prediction.csv", vids, scores,
                                   metrics.coarse_from_fine(scores, FINE_TO_COARSE))
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
