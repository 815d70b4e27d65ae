"""Agreement between a predicted timeline and a lab's annotations of the same video, as behavioural researchers read
it: segments matched one to one, per label, and Cohen's kappa over time bins.

- **Segments**: per label, a predicted segment and an annotated one match when their temporal IoU (intersection
  over union of the two time spans) is at least `iou` (0.5); each segment matches at most once. Matching is greedy,
  highest IoU first: within one track segments never overlap, so at IoU > 0.5 a segment has at most one partner and
  greedy is the best matching there is. Precision = matched / predicted, recall = matched / annotated (empty where
  there is nothing to divide by); counts and total seconds per label, predicted and annotated, beside them.
- **Kappa**: the video is cut into bins of `bin_s` seconds (the last one shorter); a bin takes the label of the
  segment covering its centre, or ``(none)`` where no segment does (unannotated time, and `predict`'s ``(nobody)``
  segments: both say "no behaviour here"). Cohen's kappa = (p_o - p_e) / (1 - p_e), p_o the share of bins where
  both agree and p_e the agreement expected by chance from each side's share of every category; undefined (NaN)
  when both sides put every bin in one and the same category.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import InputError
from pipelines.io.annotations import Track, read_tracks, resolve_media
from pipelines.report.annotations import NO_SUBJECT
from pipelines.store import safe_name, write_file_atomic

NONE = "(none)"  # the kappa category of time no segment covers (and of `predict`'s (nobody) segments)
TABLE_COLUMNS = ["label", "annotated", "predicted", "matched", "precision", "recall", "f1", "annotated_s",
                 "predicted_s"]


@dataclass
class Agreement:
    """Per-label segment agreement and the time-bin kappa of one video."""

    table: pd.DataFrame  # TABLE_COLUMNS, one row per label either side uses, sorted by label
    kappa: float  # NaN where undefined
    observed: float  # p_o: the share of bins both sides put in the same category
    bins: int
    bin_s: float
    iou: float
    duration_s: float


def temporal_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Intersection over union of two time spans (start, end)."""
    inter = min(a[1], b[1]) - max(a[0], b[0])
    return max(inter, 0.0) / (max(a[1], b[1]) - min(a[0], b[0]))


def match_segments(predicted: list[tuple[float, float]], annotated: list[tuple[float, float]],
                   iou: float = 0.5) -> list[tuple[int, int]]:
    """One-to-one matches (predicted index, annotated index) with IoU >= `iou`, highest IoU first."""
    pairs = sorted((-temporal_iou(p, a), i, j) for i, p in enumerate(predicted) for j, a in enumerate(annotated)
                   if temporal_iou(p, a) >= iou)
    used_p, used_a, matches = set(), set(), []
    for _, i, j in pairs:
        if i not in used_p and j not in used_a:
            used_p.add(i)
            used_a.add(j)
            matches.append((i, j))
    return sorted(matches)


def _behaviour(segments: pd.DataFrame) -> pd.DataFrame:
    return segments[segments["label"] != NO_SUBJECT]


def segment_table(predicted: pd.DataFrame, annotated: pd.DataFrame, iou: float = 0.5) -> pd.DataFrame:
    """Per label: annotated and predicted segment counts, matches at `iou`, precision, recall, F1 and total
    seconds each side (`predicted`, `annotated`: label, start_s, end_s; ``(nobody)`` segments are not behaviour)."""
    predicted, annotated = _behaviour(predicted), _behaviour(annotated)
    rows = []
    for label in sorted(set(predicted["label"]) | set(annotated["label"])):
        p = predicted[predicted["label"] == label]
        a = annotated[annotated["label"] == label]
        matched = len(match_segments(list(zip(p["start_s"], p["end_s"], strict=True)),
                                     list(zip(a["start_s"], a["end_s"], strict=True)), iou))
        precision = matched / len(p) if len(p) else math.nan
        recall = matched / len(a) if len(a) else math.nan
        f1 = 2 * matched / (len(p) + len(a))
        rows.append((label, len(a), len(p), matched, precision, recall, f1, float((a["end_s"] - a["start_s"]).sum()),
                     float((p["end_s"] - p["start_s"]).sum())))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def bin_labels(segments: pd.DataFrame, duration_s: float, bin_s: float) -> np.ndarray:
    """The category of each `bin_s`-second bin of a `duration_s`-second video: the label of the segment covering
    the bin's centre, else NONE."""
    if bin_s <= 0:
        raise ValueError(f"the bin width must be positive, not {bin_s}")
    n = max(1, math.ceil(duration_s / bin_s - 1e-9))
    starts = np.arange(n) * bin_s
    centres = (starts + np.minimum(starts + bin_s, duration_s)) / 2
    labels = np.full(n, NONE, dtype=object)
    for row in _behaviour(segments).itertuples():
        labels[(centres >= row.start_s) & (centres < row.end_s)] = row.label
    return labels


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Cohen's kappa of two equally long label sequences, and the observed agreement p_o."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"kappa needs two label sequences of one non-zero length, not {len(a)} and {len(b)}")
    categories = sorted(set(a) | set(b))
    index = {c: i for i, c in enumerate(categories)}
    confusion = np.zeros((len(categories), len(categories)))
    np.add.at(confusion, ([index[x] for x in a], [index[x] for x in b]), 1)
    confusion /= len(a)
    observed = float(np.trace(confusion))
    expected = float(confusion.sum(axis=1) @ confusion.sum(axis=0))
    return (math.nan if expected == 1 else (observed - expected) / (1 - expected)), observed


def agreement(predicted: pd.DataFrame, annotated: pd.DataFrame, duration_s: float, bin_s: float = 0.1,
              iou: float = 0.5) -> Agreement:
    """Segment agreement per label and the time-bin kappa of a predicted timeline against annotations."""
    if not 0 < iou <= 1:
        raise ValueError(f"the IoU threshold must be in (0, 1], not {iou}")
    kappa, observed = cohen_kappa(bin_labels(annotated, duration_s, bin_s), bin_labels(predicted, duration_s, bin_s))
    bins = max(1, math.ceil(duration_s / bin_s - 1e-9))
    return Agreement(segment_table(predicted, annotated, iou), kappa, observed, bins, bin_s, iou, duration_s)


# -- files: a predict result folder against an ELAN tier or BORIS events ---------------------------------------------
def read_timeline(path: str | Path) -> tuple[pd.DataFrame, str, float]:
    """A predicted timeline (``timeline.csv``/``.parquet``, or the result folder holding them): the segments (label,
    start_s, end_s and, where predict wrote it, score), the video's name and its duration (``summary.csv``'s video_s
    where the folder has it, else the last segment's end)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    file = next((p for p in (folder / "timeline.parquet", folder / "timeline.csv") if p.is_file()), None) \
        if path.is_dir() else path
    if file is None or not file.is_file():
        raise InputError(path, "no timeline.parquet or timeline.csv here (a `dualnet predict` result folder)")
    try:
        timeline = pd.read_parquet(file) if file.suffix == ".parquet" else pd.read_csv(file)
    except (OSError, ValueError) as e:
        raise InputError(file, f"cannot read the timeline ({e})") from None
    missing = [c for c in ("label", "start_s", "end_s") if c not in timeline.columns]
    if missing:
        raise InputError(file, f"not a predicted timeline: no column(s) {', '.join(missing)}")
    video = str(timeline["video"].iloc[0]) if "video" in timeline.columns and len(timeline) else folder.name
    duration = float(timeline["end_s"].max()) if len(timeline) else 0.0
    summary = folder / "summary.csv"
    if summary.is_file():
        seconds = pd.read_csv(summary).get("video_s")
        if seconds is not None and len(seconds):
            duration = max(duration, float(seconds.iloc[0]))
    return timeline[[c for c in ("label", "start_s", "end_s", "score") if c in timeline.columns]], video, duration


def pick_track(tracks: list[Track], video: str, where: Path) -> Track:
    """The track of `video` (a store item name): the only one, or the one whose media file has its name."""
    if len(tracks) == 1:
        return tracks[0]
    mine = [t for t in tracks if t.media and safe_name(Path(t.media[0]).stem) == video]
    if len(mine) != 1:
        names = ", ".join(sorted({Path(t.media[0]).name for t in tracks if t.media}))
        raise InputError(where, f"{len(mine)} of its {len(tracks)} tracks annotate video {video!r} (media: {names})"
                                if mine else f"no track annotates video {video!r} (media: {names})")
    return mine[0]


def agree_files(predicted: str | Path, truth: str | Path, tier: str | None = None, bin_s: float = 0.1,
                iou: float = 0.5, out_dir: str | Path | None = None, video_root: str | Path | None = None
                ) -> tuple[Agreement, dict[str, Path], str]:
    """`dualnet agree`: a predict result (folder or timeline file) against annotations (an ELAN tier or BORIS
    events); writes ``agreement.csv`` (per label), ``agreement.json`` (kappa, bins) and ``review.html`` (both
    tracks, `report.review`) into `out_dir` (default: the timeline's folder). The review page needs the video,
    found as the annotations link it (`video_root`: by file name there); without it the page is not written, and
    the returned note says why ('' when it was)."""
    from pipelines.report.review import write_review

    timeline, video, duration = read_timeline(predicted)
    track = pick_track(read_tracks(truth, tier), video, Path(truth))
    duration = max(duration, float(track.segments["end_s"].max()) if len(track.segments) else 0.0)
    result = agreement(timeline, track.segments, duration, bin_s, iou)
    folder = Path(out_dir) if out_dir is not None else (Path(predicted) if Path(predicted).is_dir()
                                                         else Path(predicted).parent)
    files = {"csv": folder / "agreement.csv", "json": folder / "agreement.json"}
    summary = {"video": video, "truth": str(truth), "tier": tier, "kappa": None if math.isnan(result.kappa)
               else result.kappa, "observed": result.observed, "bins": result.bins, "bin_s": bin_s, "iou": iou,
               "duration_s": duration}
    write_file_atomic(files["csv"], lambda p: result.table.to_csv(p, index=False))
    write_file_atomic(files["json"], lambda p: p.write_text(json.dumps(summary, indent=1) + "\n"))
    try:
        media = resolve_media(track, video_root)
    except InputError as e:
        return result, files, f"no review page: {e}"
    files["review"] = folder / "review.html"
    write_file_atomic(files["review"], lambda p: write_review(video, media, p, timeline, duration, track.segments,
                                                              result.table))
    return result, files, ""
