"""Pose clips: what pose-only training reads per clip (keypoints, entity boxes, visibility), computed once per
keypoint output and cached, so that a run over 20,000 clips neither loads every clip nor computes every box when it
starts (that took ~14 min and ~8 GB), and a sample costs one file read and one decompression.

The output ``<store>/poseclips/<key>/`` is keyed by the keypoint output, the layout's content, the entity set and
the box smoothing (`params.pose_clips_spec`); clips are added as runs ask for them, in packs ``items/@<id>/``::

    clips.json  {"num_keypoints": V, "num_entities": K, "clips": [{name, item, start, end, fingerprint, frames,
                offset, nbytes, crc32}]}: each clip's frames [start, end) of its keypoint item and the item's source
                fingerprint (a re-extracted item is recomputed), where its bytes lie in data.bin and their CRC-32
    data.bin    per clip, Zstandard-compressed: keypoints (T, V, 3) float32, boxes (T, K, 4) float32, visible (T, K)
                bool, exactly the arrays `dualnet.entities.entity_boxes` gives for the clip's keypoints

A newer pack's copy of a clip counts over an older one's. A pack lands with one rename: a killed build loses at most
the pack in progress. Reading a clip is one ``os.pread`` and ~0.1 ms of decompression; nothing of the cache is held
in memory but the position of each clip a dataset reads (a few numbers per clip).
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numcodecs
import numpy as np

from dualnet.entities import entity_boxes, get_entity_set
from dualnet.layouts import get_layout
from pipelines.errors import StoreError
from pipelines.formats.keypoint_packs import new_pack_name
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.params import pose_clips_spec
from pipelines.store import OutputFormat, StageOutput, register_output_format, safe_name

POSE_CLIPS_FORMAT = "pose-clips"
PACK_CLIPS = 2048  # clips per pack: 20,000 MA-52 clips -> 10 packs of 2 files, ~0.2 GB each
CODEC = numcodecs.Zstd(level=1)  # MediaPipe keypoints of a 60-frame clip: 391 KB -> ~40 KB, 0.08 ms to decompress


def read_index(output: StageOutput) -> dict[str, tuple[str, dict]]:
    """clip -> (pack, entry) over every readable pack, a newer pack's entry over an older one's."""
    index: dict[str, tuple[str, dict]] = {}
    for pack in output.pack_names():  # oldest first
        try:
            header = json.loads((output.items_dir / pack / "clips.json").read_text())
        except (OSError, ValueError):
            continue  # unreadable: its clips count as missing and are computed again
        for entry in header["clips"]:
            index[entry["name"]] = (pack, entry)
    return index


register_output_format(POSE_CLIPS_FORMAT, OutputFormat(lambda output: sorted(read_index(output))))


def _identity(keypoints: KeypointSet, name: str) -> dict:
    """What a cached clip must match: its item, frame range and the item's source fingerprint."""
    item, start, end = keypoints.span(name)
    return {"item": item, "start": start, "end": end,
            "fingerprint": keypoints.attributes(item).get("source_fingerprint")}


def clip_arrays(keypoints: KeypointSet, name: str, layout, entities, smooth_sigma: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keypoints (T, V, 3) float32, boxes (T, K, 4) float32, visible (T, K) bool) of one clip, computed from its
    stored keypoints: what the cache holds."""
    item, start, end = keypoints.span(name)
    attrs = keypoints.attributes(item)
    kp = keypoints.keypoint_window(item, start, end).astype(np.float64)
    boxes, visible = entity_boxes(kp, layout, entities, (attrs["width"] or 1, attrs["height"] or 1), smooth_sigma)
    return kp.astype(np.float32), boxes.astype(np.float32), visible


def _write_pack(output: StageOutput, tmp: Path, entries: list[dict], blobs: list[bytes], v: int, k: int) -> None:
    pack = new_pack_name()
    folder = tmp / pack
    folder.mkdir()
    with open(folder / "data.bin", "wb") as f:
        for blob in blobs:
            f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    (folder / "clips.json").write_text(json.dumps({"num_keypoints": v, "num_entities": k, "clips": entries}))
    output.commit_pack(folder, pack)


@dataclass
class BuildReport:
    key: str
    computed: int  # clips computed in this call (0: every clip was cached)
    cached: int


def ensure_pose_clips(keypoints: KeypointSet, names: list[str], layout: str, entity_set: str,
                      smooth_sigma: float = 1.0) -> tuple[PoseClips, BuildReport]:
    """The cached pose clips `names` of `keypoints` (items, or a `cut` view's segments), computing those not yet
    cached (or whose item changed) under the store lock. Returns a reader over `names`, in that order."""
    spec = pose_clips_spec(keypoints.output, layout, entity_set, smooth_sigma)
    output = keypoints.store.stage(spec.stage, spec.key)
    wanted = {safe_name(n): _identity(keypoints, n) for n in names}

    def stale(index: dict) -> list[str]:
        return [n for n, ident in wanted.items()
                if n not in index or any(index[n][1].get(f) != ident[f] for f in ident)]

    todo = stale(read_index(output)) if output.path.is_dir() else list(wanted)
    computed = 0
    if todo:
        resolved, entities = get_layout(layout), get_entity_set(entity_set)
        with keypoints.store.run(spec) as run:
            todo = stale(read_index(output))  # another process may have added them meanwhile
            entries: list[dict] = []
            blobs: list[bytes] = []
            offset = 0
            for name in todo:
                kp, boxes, visible = clip_arrays(keypoints, name, resolved, entities, smooth_sigma)
                blob = CODEC.encode(kp.tobytes() + boxes.tobytes() + visible.tobytes())
                entries.append({"name": name, **wanted[name], "frames": len(kp), "offset": offset,
                                "nbytes": len(blob), "crc32": zlib.crc32(blob)})
                blobs.append(blob)
                offset += len(blob)
                if len(entries) == PACK_CLIPS:
                    _write_pack(output, run.tmp, entries, blobs, resolved.num_keypoints, len(entities))
                    entries, blobs, offset = [], [], 0
            if entries:
                _write_pack(output, run.tmp, entries, blobs, resolved.num_keypoints, len(entities))
            run.record_request(sorted(wanted))
            computed = len(todo)
    return PoseClips(output, list(wanted)), BuildReport(spec.key, computed, len(wanted) - computed)


class PoseClips:
    """Reads cached pose clips by position in `names`. Pickles as a few arrays (DataLoader workers each open the
    pack files themselves)."""

    def __init__(self, output: StageOutput, names: list[str]):
        self.output = output
        index = read_index(output)
        absent = [n for n in names if n not in index]
        if absent:
            raise StoreError(f"{output.path}: {len(absent)} clip(s) not cached, e.g. {absent[0]!r}")
        self.packs = sorted({index[n][0] for n in names})
        headers = {p: json.loads((output.items_dir / p / "clips.json").read_text()) for p in self.packs[:1]}
        header = next(iter(headers.values()), {"num_keypoints": 0, "num_entities": 0})
        self.num_keypoints, self.num_entities = header["num_keypoints"], header["num_entities"]
        entries = [index[n][1] for n in names]
        self.pack = np.array([self.packs.index(index[n][0]) for n in names], dtype=np.int32)
        self.offset = np.array([e["offset"] for e in entries], dtype=np.int64)
        self.nbytes = np.array([e["nbytes"] for e in entries], dtype=np.int64)
        self.frames = np.array([e["frames"] for e in entries], dtype=np.int64)
        self.crc = np.array([e["crc32"] for e in entries], dtype=np.uint32)
        self.names = list(names)
        self._files: dict[int, int] = {}  # pack -> open file descriptor, per process

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": {}}

    def __del__(self) -> None:
        for fd in getattr(self, "_files", {}).values():
            os.close(fd)

    def _path(self, i: int) -> Path:
        return self.output.items_dir / self.packs[self.pack[i]] / "data.bin"

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keypoints (T, V, 3) float32, boxes (T, K, 4) float32, visible (T, K) bool) of clip `i` (read-only)."""
        p = int(self.pack[i])
        if p not in self._files:
            try:
                self._files[p] = os.open(self._path(i), os.O_RDONLY)
            except OSError as e:
                raise StoreError(f"{self._path(i)}: cannot read ({e.strerror}); remove {self.output.path} to "
                                 "rebuild the cache") from None
        blob = os.pread(self._files[p], int(self.nbytes[i]), int(self.offset[i]))
        if len(blob) != self.nbytes[i] or zlib.crc32(blob) != self.crc[i]:
            raise StoreError(f"{self._path(i)}: clip {self.names[i]!r} is damaged (fails its CRC-32); remove "
                             f"{self.output.path} to rebuild the cache")
        raw = CODEC.decode(blob)
        t, v, k = int(self.frames[i]), self.num_keypoints, self.num_entities
        kp = np.frombuffer(raw, np.float32, t * v * 3).reshape(t, v, 3)
        boxes = np.frombuffer(raw, np.float32, t * k * 4, t * v * 3 * 4).reshape(t, k, 4)
        visible = np.frombuffer(raw, np.bool_, t * k, t * (v * 3 + k * 4) * 4).reshape(t, k)
        return kp, boxes, visible
