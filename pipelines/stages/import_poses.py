"""The `import` stage: pose data from other tools (OpenPose JSON, pyskl pickles, JHMDB pickles) into the keypoint
store, in the same item format as `extract`, so every later stage sees one format.

Content-hashed like `extract`: the key hashes the format and its parameters; each item records the fingerprint of
its source (the pickle, or the clip's JSON files), so a re-run skips unchanged clips. A malformed source fails with
one line naming the file and record before anything is written.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from dualnet.layouts import get_layout
from pipelines.errors import DualnetError, InputError
from pipelines.formats.keypoint_items import item_attrs
from pipelines.formats.keypoint_packs import KeypointIndex, PackWriter
from pipelines.formats.params import ImportParams, import_spec
from pipelines.hashing import FingerprintCache, stable_hash
from pipelines.kill_points import kill_point
from pipelines.pose.importers import ImportedClip
from pipelines.store import MAX_ITEM_NAME, StageReport, Store, safe_name

ImportReport = StageReport  # processed / skipped / failed clip names


def _sources(source: Path, params: ImportParams, fingerprints: FingerprintCache
             ) -> Iterable[tuple[str, str, object]]:
    """(fingerprint, source path, loader) per unit of input: a pickle file, or one OpenPose clip folder."""
    if params.format == "openpose":
        from pipelines.pose.importers.openpose_json import clip_folders

        for folder in clip_folders(source):
            files = sorted(folder.glob("*.json"))
            fp = stable_hash([[f.name, fingerprints.fingerprint(f)] for f in files], chars=32)
            yield fp, str(folder), folder
    elif params.format == "shrec17":  # the dataset's folder: its lists and every skeleton file they name
        from pipelines.pose.importers.shrec17 import LISTS, read_lists

        files = [source / name for name in LISTS] + [r["path"] for r in read_lists(source)]
        missing = next((f for f in files if not f.is_file()), None)
        if missing is not None:
            raise InputError(missing, "skeleton file not found (listed in the official split)")
        yield stable_hash([fingerprints.fingerprint(f) for f in files], chars=32), str(source), source
    else:
        if not source.is_file():
            raise InputError(source, "file not found" if not source.exists() else "not a file")
        fp = fingerprints.fingerprint(source)
        if params.format == "miga":  # the labels are part of what an item records
            labels = Path(params.labels)
            if not labels.is_file():
                raise InputError(labels, "label pickle not found")
            fp = stable_hash([fp, fingerprints.fingerprint(labels)], chars=32)
        yield fp, str(source), source


def _read(unit: Path, params: ImportParams) -> list[ImportedClip]:
    if params.format == "openpose":
        from pipelines.pose.importers.openpose_json import read_clip

        return [read_clip(unit, params.fps)]
    if params.format == "shrec17":
        from pipelines.pose.importers.shrec17 import read_shrec17

        return read_shrec17(unit, params.fps)
    from pipelines.pose.importers.pyskl_pickle import read_jhmdb, read_pyskl

    if params.format == "jhmdb":
        return read_jhmdb(unit, params.fps)
    if params.format == "miga":
        from pipelines.pose.importers.miga_arrays import read_miga

        return read_miga(unit, Path(params.labels), get_layout(params.layout), params.fps)
    return read_pyskl(unit, get_layout(params.layout), params.fps)


def run_import(source: str | Path, params: ImportParams, store: Store | str | Path | None = None) -> ImportReport:
    """Import every clip of `source` into the store; unchanged clips are skipped.

    A pickle is read and validated in full before anything is written; an OpenPose clip folder that fails is
    recorded as a failure and the other folders are still imported.
    """
    store = store if isinstance(store, Store) else Store(store)
    started = time.perf_counter()
    source = Path(source)
    spec = import_spec(params)
    report = ImportReport(spec.key)
    fingerprints = store.fingerprints()
    try:
        units = list(_sources(source, params, fingerprints))
    finally:
        fingerprints.close()
    # A pickle is read and validated in full before the store is touched at all.
    preloaded = {path: _read(unit, params) for _, path, unit in units if params.format != "openpose"}
    with store.run(spec) as run:
        output = run.output
        names: list[str] = []
        index = KeypointIndex(output)
        writer = PackWriter(output, run.tmp, params.dtype)
        for fp, path, unit in units:
            if params.format == "openpose" and index.fingerprint(Path(path).name) == fp:
                report.skipped.append(Path(path).name)
                names.append(Path(path).name)
                continue
            try:
                clips = preloaded[path] if path in preloaded else _read(unit, params)
            except DualnetError as e:
                output.record_failure(Path(path).name, path, str(e))
                report.failed[Path(path).name] = str(e)
                continue
            for clip in clips:
                names.append(clip.name)
                if len(safe_name(clip.name)) > MAX_ITEM_NAME:  # its files in the store could not be named
                    error = str(InputError(path, f"clip {clip.name!r}: name too long for the store "
                                                 f"({len(safe_name(clip.name))} characters, at most {MAX_ITEM_NAME})"))
                    output.record_failure(clip.name, path, error)
                    report.failed[clip.name] = error
                    continue
                if index.fingerprint(clip.name) == fp:
                    report.skipped.append(clip.name)
                    continue
                timestamps = np.arange(len(clip.keypoints)) / clip.fps
                attrs = item_attrs(clip.layout, clip.fps, clip.width, clip.height, Path(clip.source_path).name,
                                   clip.source_path, fp, clip.coordinates,
                                   {"import_format": params.format, **clip.extra}, depth=clip.depth is not None)
                writer.add(clip.name, attrs, clip.keypoints, clip.detected, timestamps, clip.depth)
                kill_point("import.clip")
                report.processed.append(clip.name)
        writer.finish()
        run.record_request(names)
    report.seconds = time.perf_counter() - started
    return report
