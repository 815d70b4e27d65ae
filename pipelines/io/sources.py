"""Turning what a user points at (folders, globs, files, dataset list files) into named video sources."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import InputError
from pipelines.io.video import VIDEO_SUFFIXES
from pipelines.store import Shard, safe_name

LIST_SUFFIXES = (".txt", ".lst", ".list")


@dataclass(frozen=True)
class VideoSource:
    """One video to process: `name` is its item name in the store (the file stem, made file-system safe)."""

    name: str
    path: str


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def read_list_file(list_path: Path, video_root: Path | None = None) -> list[Path]:
    """Paths named by a dataset list (``<video> [label ...]`` a line, as MA-52's ``*_list_videos.txt``).

    Relative entries resolve against `video_root`, else against the list file's folder.
    """
    root = video_root if video_root is not None else list_path.parent
    paths = []
    with open(list_path) as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            entry = text.split()[0]
            if not _is_video(Path(entry)):
                raise InputError(f"{list_path}:{lineno}", f"{entry!r} is not a video file name")
            p = Path(entry)
            paths.append(p if p.is_absolute() else root / p)
    return paths


def resolve_sources(inputs: list[str], video_root: str | Path | None = None, shard: Shard = Shard()
                    ) -> list[VideoSource]:
    """Expand inputs into sources, sorted by name, keeping only this shard's.

    A folder contributes the videos under it (recursively, by suffix); a pattern with ``*?[`` is a glob; a
    ``.txt``/``.lst`` file is a dataset list; any other path is taken as a video as given, so that a missing or
    broken file becomes a recorded failure rather than silently disappearing. A glob that matches nothing, or two
    inputs with the same name, is an error before any work starts.
    """
    root = Path(video_root) if video_root is not None else None
    paths: list[Path] = []
    for spec in inputs:
        p = Path(spec)
        if any(c in spec for c in "*?[") and not p.exists():
            matched = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            if not matched:
                raise InputError(spec, "no files match this pattern")
            paths += [m for m in matched if m.is_file()]
        elif p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and _is_video(q))
            if not found:
                raise InputError(p, f"folder holds no videos ({', '.join(VIDEO_SUFFIXES[:4])}, ...)")
            paths += found
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            paths += read_list_file(p, root)
        else:
            paths.append(p)
    by_name: dict[str, VideoSource] = {}
    for path in paths:
        source = VideoSource(safe_name(path.stem), os.path.abspath(path))
        other = by_name.get(source.name)
        if other is not None and other.path != source.path:
            raise InputError(path, f"has the same name {source.name!r} as {other.path}; rename one of them")
        by_name[source.name] = source
    return [s for name, s in sorted(by_name.items()) if shard.owns(name)]
