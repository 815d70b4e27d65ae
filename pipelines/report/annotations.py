"""Timelines in the tools behavioural researchers annotate and review in: ELAN (.eaf) and BORIS (aggregated events).

ELAN: one tier per predicted label, each segment an annotation whose value is its mean score; the video is linked
by its path relative to the .eaf (so the folder can move as a whole). Written and read with pympi-ling. BORIS: its
"aggregated events" table (one row per state event: subject, behavior, start, stop, duration), tab-separated, which
BORIS and its analysis add-ons read. Segments where nobody was found (`(nobody)`) are not behaviour and are left out
of both.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

NO_SUBJECT = "(nobody)"  # the label `predict` gives windows without the subject: not behaviour
MIMETYPES = {".mp4": "video/mp4", ".mov": "video/quicktime", ".avi": "video/x-msvideo", ".mkv": "video/x-matroska",
             ".webm": "video/webm", ".mpg": "video/mpeg", ".mpeg": "video/mpeg"}
BORIS_COLUMNS = ["Observation id", "Media file", "Total length", "FPS", "Subject", "Behavior", "Behavioral category",
                 "Modifiers", "Behavior type", "Start (s)", "Stop (s)", "Duration (s)", "Comment start",
                 "Comment stop"]


def _behaviour(timeline: pd.DataFrame) -> pd.DataFrame:
    return timeline[timeline["label"] != NO_SUBJECT]


def write_eaf(timeline: pd.DataFrame, video: str | Path, path: str | Path) -> Path:
    """An ELAN file of one video's segments: a tier per label, annotations from start_s to end_s (milliseconds),
    valued with the segment's score; the media linked relative to the file."""
    import pympi

    path = Path(path)
    eaf = pympi.Elan.Eaf(author="micro-dualnet")
    eaf.remove_tier("default")
    relative = os.path.relpath(Path(video).resolve(), path.parent.resolve())
    eaf.add_linked_file(Path(video).resolve().as_uri(), relpath=relative,
                        mimetype=MIMETYPES.get(Path(video).suffix.lower(), "video/mp4"))
    for label, rows in _behaviour(timeline).groupby("label", sort=True):
        eaf.add_tier(str(label))
        for row in rows.itertuples():
            eaf.add_annotation(str(label), round(row.start_s * 1000), round(row.end_s * 1000), f"{row.score:.3f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    eaf.to_file(str(path))
    return path


def read_eaf(path: str | Path, tiers: list[str] | None = None) -> pd.DataFrame:
    """The annotations of an ELAN file (every tier, or `tiers`): tier, start_s, end_s, value, sorted by start."""
    import pympi

    eaf = pympi.Elan.Eaf(str(path))
    rows = [{"tier": tier, "start_s": start / 1000, "end_s": end / 1000, "value": value}
            for tier in (tiers or list(eaf.get_tier_names()))
            for start, end, value, *_ in eaf.get_annotation_data_for_tier(tier)]
    return pd.DataFrame(rows, columns=["tier", "start_s", "end_s", "value"]).sort_values(
        ["start_s", "tier"], ignore_index=True)


def write_boris(timeline: pd.DataFrame, video: str | Path, duration_s: float, fps: float, path: str | Path,
                subject: str = "") -> Path:
    """BORIS's aggregated events of one video (tab-separated): each segment a STATE event of its label, the
    segment's score in the start comment."""
    path = Path(path)
    rows = [{"Observation id": Path(video).stem, "Media file": str(video), "Total length": round(duration_s, 3),
             "FPS": round(fps, 3), "Subject": subject or "No focal subject", "Behavior": row.label,
             "Behavioral category": "micro-action", "Modifiers": "", "Behavior type": "STATE",
             "Start (s)": round(row.start_s, 3), "Stop (s)": round(row.end_s, 3),
             "Duration (s)": round(row.end_s - row.start_s, 3), "Comment start": f"score {row.score:.3f}",
             "Comment stop": ""} for row in _behaviour(timeline).itertuples()]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=BORIS_COLUMNS).to_csv(path, sep="\t", index=False)
    return path
