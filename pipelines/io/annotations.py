"""A lab's own annotations of long videos, read as tracks of labelled segments: an ELAN tier (``.eaf``) or BORIS
aggregated events (``.tsv``/``.csv``).

A *track* is one sequence of segments that never overlap, one label at a time, as `predict` writes a timeline: an
ELAN tier (its annotation values are the labels), or the STATE events of one media file and subject in a BORIS
export (the behaviours are the labels; POINT events are instants, not segments, and are left out). A track whose
segments overlap, or one with a segment of zero (or negative) length, fails as one line naming the file and the
segment; so does an ELAN file without the tier asked for. Reading writes nothing.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

from pipelines.errors import InputError

SEGMENT_COLUMNS = ["label", "start_s", "end_s"]
BORIS_MEDIA_COLUMNS = ("Media file", "Media file name", "Media file path")  # BORIS versions name it differently
BORIS_NO_SUBJECT = "No focal subject"  # what BORIS writes where no subject was chosen


@dataclass(frozen=True)
class Track:
    """One annotation track of one video."""

    path: Path  # the annotation file
    media: tuple[str, ...]  # the video as the file names it, first choice first (paths or file: URLs); () none
    segments: pd.DataFrame  # label, start_s, end_s; sorted by start, no overlaps, each longer than zero
    subject: str | None = None  # ELAN: the tier's participant; BORIS: the focal subject


def _checked(path: Path, rows: list[tuple[str, float, float]], what: str) -> pd.DataFrame:
    """The rows as a sorted segment table; zero-length and overlapping segments fail as one line naming `path`."""
    segments = pd.DataFrame(rows, columns=SEGMENT_COLUMNS).sort_values(["start_s", "end_s"], ignore_index=True)
    for row in segments.itertuples():
        if not row.end_s > row.start_s:
            raise InputError(path, f"{what}: annotation {row.label!r} at {row.start_s:g}-{row.end_s:g} s has "
                                   f"{'zero' if row.end_s == row.start_s else 'negative'} length")
    for before, after in zip(segments.iloc[:-1].itertuples(), segments.iloc[1:].itertuples(), strict=True):
        if after.start_s < before.end_s:
            raise InputError(path, f"{what}: annotations overlap: {before.label!r} at {before.start_s:g}-"
                                   f"{before.end_s:g} s and {after.label!r} at {after.start_s:g}-{after.end_s:g} s")
    return segments


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise InputError(path, "not found" if not path.exists() else "is not a file")


def read_elan(path: str | Path, tier: str) -> Track:
    """The annotations of one tier of an ELAN file: values are the labels; the first linked video is the media."""
    import pympi

    path = Path(path)
    _require_file(path)
    try:
        eaf = pympi.Elan.Eaf(str(path))
    except (ElementTree.ParseError, KeyError, ValueError, IndexError) as e:
        raise InputError(path, f"not a readable ELAN file ({type(e).__name__}: {e})") from None
    tiers = list(eaf.get_tier_names())
    if tier not in tiers:
        raise InputError(path, f"no tier {tier!r} (tiers: {', '.join(map(repr, tiers)) or 'none'})")
    rows = []
    for start, end, value, *_ in eaf.get_annotation_data_for_tier(tier):
        if not str(value).strip():
            raise InputError(path, f"tier {tier!r}: the annotation at {start / 1000:g}-{end / 1000:g} s has no "
                                   "value (the value is the label)")
        rows.append((str(value).strip(), start / 1000, end / 1000))
    linked = eaf.get_linked_files()
    chosen = next((f for f in linked if str(f.get("MIME_TYPE", "")).startswith("video")), linked[0] if linked else {})
    media = tuple(url for url in (chosen.get("RELATIVE_MEDIA_URL"), chosen.get("MEDIA_URL")) if url)
    participant = eaf.get_parameters_for_tier(tier).get("PARTICIPANT") or None
    return Track(path, media, _checked(path, rows, f"tier {tier!r}"), participant)


def read_boris(path: str | Path) -> list[Track]:
    """BORIS aggregated events (tab-separated, or comma-separated for ``.csv``): one track per media file and
    subject, in the order they first appear."""
    path = Path(path)
    _require_file(path)
    try:
        table = pd.read_csv(path, sep="," if path.suffix.lower() == ".csv" else "\t", dtype=str,
                            keep_default_na=False)
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(path, f"not a readable BORIS export ({e})") from None
    media_column = next((c for c in BORIS_MEDIA_COLUMNS if c in table.columns), None)
    missing = [c for c in ("Behavior", "Start (s)", "Stop (s)") if c not in table.columns]
    if missing or media_column is None:
        missing += [] if media_column else ["Media file"]
        raise InputError(path, f"not BORIS aggregated events: no column(s) {', '.join(map(repr, missing))}")
    tracks: dict[tuple[str, str], list] = {}
    for lineno, row in zip(range(2, len(table) + 2), table.to_dict("records"), strict=True):
        if row.get("Behavior type", "STATE").strip().upper() == "POINT":
            continue
        times = []
        for column in ("Start (s)", "Stop (s)"):
            try:
                times.append(float(row[column]))
            except ValueError:
                raise InputError(f"{path}:{lineno}", f"{column} {row[column]!r} is not a number") from None
            if not math.isfinite(times[-1]):
                raise InputError(f"{path}:{lineno}", f"{column} {row[column]!r} is not a finite number")
        if not row["Behavior"].strip():
            raise InputError(f"{path}:{lineno}", "empty Behavior")
        subject = row.get("Subject", "").strip()
        tracks.setdefault((row[media_column].strip(), subject), []).append((row["Behavior"].strip(), *times))
    out = []
    for (media, subject), rows in tracks.items():
        what = f"media {Path(media).name!r}" + (f", subject {subject!r}" if subject else "")
        out.append(Track(path, (media,) if media else (), _checked(path, rows, what),
                         subject if subject and subject != BORIS_NO_SUBJECT else None))
    return out


def read_tracks(path: str | Path, tier: str | None = None) -> list[Track]:
    """The tracks of an annotation file: ``.eaf`` (needs `tier`), else BORIS aggregated events."""
    path = Path(path)
    if path.suffix.lower() == ".eaf":
        if not tier:
            raise InputError(path, "an ELAN file needs the name of the tier to read (--tier)")
        return [read_elan(path, tier)]
    if path.suffix.lower() in (".tsv", ".csv", ".txt"):
        return read_boris(path)
    raise InputError(path, "not an annotation file: expected an ELAN .eaf or a BORIS aggregated-events .tsv/.csv")


def annotation_files(root: str | Path, suffixes: tuple[str, ...]) -> list[Path]:
    """`root` itself (a file), or the files with one of `suffixes` directly in the folder `root`, sorted."""
    root = Path(root)
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise InputError(root, f"no {' or '.join(suffixes)} file in this folder")
        return files
    _require_file(root)
    return [root]


def resolve_media(track: Track, video_root: str | Path | None = None) -> Path:
    """The video file a track annotates: as the file names it (ELAN: the relative path, then the absolute one; a
    relative path from the annotation file's folder), then by file name in `video_root` and beside the annotation
    file, as ELAN looks for a moved video. A video that is none of these fails as one line."""
    if not track.media:
        raise InputError(track.path, "names no media file")
    given = [Path(unquote(urlparse(ref).path) if ref.startswith("file:") else ref) for ref in track.media]
    candidates = [path if path.is_absolute() else track.path.parent / path for path in given]
    if video_root is not None:
        candidates.append(Path(video_root) / given[0].name)
    candidates.append(track.path.parent / given[0].name)
    for candidate in candidates:
        if candidate.is_file():
            return Path(os.path.abspath(candidate))  # "annotations/../videos/x.mp4" -> "videos/x.mp4"
    looked = ", ".join(dict.fromkeys(str(c) for c in candidates))
    raise InputError(track.path, f"media {track.media[0]!r} not found (looked for {looked})")
