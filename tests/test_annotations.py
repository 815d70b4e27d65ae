"""ELAN and BORIS exports of predicted timelines (issue 17): written with the libraries those tools use, read back
to the millisecond."""

from __future__ import annotations

import pandas as pd

from pipelines.report.annotations import BORIS_COLUMNS, read_eaf, write_boris, write_eaf


def _timeline() -> pd.DataFrame:
    return pd.DataFrame({"segment": [0, 1, 2, 3], "start_s": [0.0, 1.25, 2.5, 4.1234],
                         "end_s": [1.25, 2.5, 4.1234, 6.0], "duration_s": [1.25, 1.25, 1.6234, 1.8766],
                         "label": ["nodding", "(nobody)", "shaking head", "nodding"],
                         "score": [0.91, float("nan"), 0.55, 0.7], "windows": [3, 2, 4, 4]})


def test_elan_round_trip_to_the_millisecond(tmp_path):
    video = tmp_path / "media" / "talk.mp4"
    video.parent.mkdir()
    video.write_bytes(b"")
    path = write_eaf(_timeline(), video, tmp_path / "out" / "talk.eaf")
    back = read_eaf(path)
    assert back["tier"].tolist() == ["nodding", "shaking head", "nodding"]  # the (nobody) segment is left out
    assert back["start_s"].tolist() == [0.0, 2.5, 4.123] and back["end_s"].tolist() == [1.25, 4.123, 6.0]
    assert back["value"].tolist() == ["0.910", "0.550", "0.700"]
    import pympi

    media = pympi.Elan.Eaf(str(path)).get_linked_files()
    assert media[0]["RELATIVE_MEDIA_URL"] == "../media/talk.mp4" and media[0]["MIME_TYPE"] == "video/mp4"


def test_boris_aggregated_events(tmp_path):
    path = write_boris(_timeline(), tmp_path / "talk.mp4", 6.0, 30.0, tmp_path / "talk.boris.tsv", subject="P07")
    table = pd.read_csv(path, sep="\t")
    assert table.columns.tolist() == BORIS_COLUMNS and len(table) == 3
    assert table["Behavior"].tolist() == ["nodding", "shaking head", "nodding"]
    assert table["Start (s)"].tolist() == [0.0, 2.5, 4.123] and table["Stop (s)"].tolist() == [1.25, 4.123, 6.0]
    assert (table["Subject"] == "P07").all() and (table["Behavior type"] == "STATE").all()
    assert table["Duration (s)"].round(3).tolist() == [1.25, 1.623, 1.877]
