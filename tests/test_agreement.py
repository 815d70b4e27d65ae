"""`dualnet agree` arithmetic (pipelines/report/agreement.py) on hand-made timelines: segment matching at an IoU,
and Cohen's kappa over time bins against scikit-learn's and against a kappa computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from pipelines.errors import InputError
from pipelines.report.agreement import (
    NONE,
    agree_files,
    agreement,
    bin_labels,
    cohen_kappa,
    match_segments,
    segment_table,
)
from pipelines.report.annotations import write_boris


def segments(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=["label", "start_s", "end_s"])


TRUTH = segments(("a", 0.0, 1.5), ("b", 2.0, 3.5), ("a", 4.0, 5.0))
PREDICTED = segments(("a", 0.0, 1.0), ("b", 1.5, 3.5), ("c", 3.5, 4.0), ("(nobody)", 4.0, 5.5))


def label_at(table: pd.DataFrame, t: float) -> str:
    return next((r.label for r in table.itertuples() if r.start_s <= t < r.end_s and r.label != "(nobody)"), NONE)


def test_kappa_over_bins_equals_scikit_learns():
    """5.5 s in 0.1 s bins: the bins' categories written out as runs, then scikit-learn's kappa of them."""
    from sklearn.metrics import cohen_kappa_score

    truth_bins = np.repeat(["a", NONE, "b", NONE, "a", NONE], [15, 5, 15, 5, 10, 5])
    predicted_bins = np.repeat(["a", NONE, "b", "c", NONE], [10, 5, 20, 5, 15])  # (nobody) counts as NONE
    np.testing.assert_array_equal(bin_labels(TRUTH, 5.5, 0.1), truth_bins)
    np.testing.assert_array_equal(bin_labels(PREDICTED, 5.5, 0.1), predicted_bins)
    result = agreement(PREDICTED, TRUTH, 5.5, 0.1)
    assert result.bins == 55
    assert result.kappa == pytest.approx(cohen_kappa_score(truth_bins, predicted_bins), abs=1e-12)
    assert result.observed == pytest.approx(np.mean(truth_bins == predicted_bins))
    # coarser bins, a last bin shorter than the others (5.5 / 0.4: 13 full bins and one of 0.3 s, centre 5.35 s)
    coarse = agreement(PREDICTED, TRUTH, 5.5, 0.4)
    centres = [0.2 + 0.4 * i for i in range(13)] + [5.35]
    # a short last bin takes the label at its own centre (0.225 s here), not at a full bin's (0.3 s)
    assert bin_labels(segments(("a", 0.0, 0.05), ("b", 0.05, 0.25)), 0.25, 0.2).tolist() == ["b", "b"]
    assert coarse.bins == 14 and coarse.kappa == pytest.approx(cohen_kappa_score(
        [label_at(TRUTH, t) for t in centres], [label_at(PREDICTED, t) for t in centres]), abs=1e-12)


def test_kappa_by_hand():
    """Ten bins, two categories. Both x: 3, annotated x / predicted none: 2, annotated none / predicted x: 1, both
    none: 4. p_o = 7/10; p_e = 0.5 * 0.4 + 0.5 * 0.6 = 0.5; kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4."""
    truth = ["x"] * 5 + [NONE] * 5
    predicted = ["x", "x", "x", NONE, NONE, NONE, NONE, NONE, NONE, "x"]
    kappa, observed = cohen_kappa(np.array(truth), np.array(predicted))
    assert observed == pytest.approx(0.7) and kappa == pytest.approx(0.4)
    assert cohen_kappa(np.array(truth), np.array(truth))[0] == pytest.approx(1.0)
    assert math.isnan(cohen_kappa(np.array(["x"] * 4), np.array(["x"] * 4))[0])  # one category: undefined


def test_segments_match_one_to_one_at_the_iou():
    truth = segments(("a", 0.0, 2.0), ("a", 5.0, 7.0), ("a", 10.0, 11.0), ("b", 3.0, 4.0))
    predicted = segments(("a", 0.2, 2.2), ("a", 5.0, 5.8), ("a", 9.9, 11.0), ("a", 12.0, 13.0), ("c", 3.0, 4.0),
                         ("(nobody)", 13.0, 20.0))
    # IoUs with the annotated a's: 1.8/2.2 = 0.82 (match), 0.8/2 = 0.4 (none), 1/1.1 = 0.91 (match), 0 (none)
    table = segment_table(predicted, truth).set_index("label")
    assert table.index.tolist() == ["a", "b", "c"]  # (nobody) is not behaviour: no row
    assert table.loc["a", ["annotated", "predicted", "matched"]].tolist() == [3, 4, 2]
    assert table.loc["a", "precision"] == 0.5 and table.loc["a", "recall"] == pytest.approx(2 / 3)
    assert table.loc["a", "f1"] == pytest.approx(2 * 2 / 7)
    assert table.loc["a", "annotated_s"] == pytest.approx(5.0) and table.loc["a", "predicted_s"] == pytest.approx(4.9)
    assert math.isnan(table.loc["b", "precision"]) and table.loc["b", "recall"] == 0  # never predicted
    assert table.loc["c", "annotated"] == 0 and math.isnan(table.loc["c", "recall"])  # a label only predicted
    assert segment_table(predicted, truth, iou=0.3).set_index("label").loc["a", "matched"] == 3
    # one to one: two halves of one annotated segment both reach IoU 0.5, only one of them matches it
    assert match_segments([(0.0, 1.0), (1.0, 2.0)], [(0.0, 2.0)], 0.5) == [(0, 0)]
    # the better pair is taken first: (1, 0) at IoU 0.9, leaving predicted 0 (IoU 0.6 with it) unmatched
    assert match_segments([(0.0, 1.2), (0.0, 1.8)], [(0.0, 2.0)], 0.5) == [(1, 0)]


def test_agree_picks_the_videos_boris_track_and_bad_input_is_one_line(tmp_path):
    folder = tmp_path / "talk"
    folder.mkdir()
    PREDICTED.assign(video="talk").to_csv(folder / "timeline.csv", index=False)
    pd.DataFrame({"video": ["talk"], "label": ["a"], "video_s": [6.0]}).to_csv(folder / "summary.csv", index=False)
    boris = tmp_path / "lab.tsv"
    write_boris(TRUTH.assign(score=1.0), tmp_path / "talk.mp4", 6.0, 30.0, boris)
    other = pd.read_csv(boris, sep="\t").assign(**{"Media file": str(tmp_path / "other.mp4")})
    pd.concat([pd.read_csv(boris, sep="\t"), other]).to_csv(boris, sep="\t", index=False)  # two videos in one file
    result, files, note = agree_files(folder, boris)
    assert "no review page" in note and "talk.mp4' not found" in note and "review" not in files  # no video here
    assert result.duration_s == 6.0 and result.bins == 60  # the video's length from summary.csv
    assert result.kappa == pytest.approx(agreement(PREDICTED, TRUTH, 6.0).kappa)
    assert pd.read_csv(files["csv"]).set_index("label").loc["a", "annotated"] == 2
    PREDICTED.assign(video="elsewhere").to_csv(tmp_path / "elsewhere.csv", index=False)
    with pytest.raises(InputError, match="lab.tsv: no track annotates video 'elsewhere'"):
        agree_files(tmp_path / "elsewhere.csv", boris)
    files["csv"].unlink()
    eaf = tmp_path / "talk.eaf"
    import pympi

    doc = pympi.Elan.Eaf()
    doc.add_tier("Behaviour")
    doc.add_annotation("Behaviour", 0, 1000, "a")
    doc.to_file(str(eaf))
    result = run_cli("agree", str(folder), str(eaf), "--tier", "Behavior")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "talk.eaf: no tier 'Behavior' (tiers: 'default', 'Behaviour')" in result.stderr
    assert not (folder / "agreement.csv").exists()
