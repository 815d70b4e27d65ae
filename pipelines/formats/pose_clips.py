"""Pose clips: what pose-only training reads per clip (keypoints, entity boxes, visibility), computed once per
keypoint output and cached, so that a run over 20,000 clips neither loads every clip nor computes every box when it
starts (that took ~14 min and ~8 GB), and a sample costs one file read and one decompression.

The output ``<store>/poseclips/<key>/`` is keyed by the keypoint output, the layout's content, the entity set and
the box smoothing (`params.pose_clips_spec`); clips are added as runs ask for them, in packs ``items/@<id>/``::

    clips.json  {"num_keypoints": V, "num_entities": K, "clips": [{name, item, start, end, fingerprint, frames,
                depth, offset, nbytes, crc32}]}: each clip's frames [start, end) of its keypoint item and the item's
                source fingerprint (a re-extracted item is recomputed), whether it has depth (its item's ``depth``
                attribute), where its bytes lie in data.bin and their CRC-32
    data.bin    per clip, Zstandard-compressed: keypoints (T, V, 3) float32, boxes (T, K, 4) float32, visible (T, K)
                bool, exactly the arrays `dualnet.entities.entity_boxes` gives for the clip's keypoints (boxes from
                x, y alone), then, for a clip with depth, its depth (T, V) float32

A newer pack's copy of a clip counts over an older one's. A pack is written under the output's ``tmp/`` and lands
with one rename by the process that holds the store lock: a killed build loses at most the packs in progress, and the
next one computes only what is missing. Clips are read in runs of neighbours in their keypoint packs and boxed in
batches (`entity_boxes_batch`), ~1.3 ms a MediaPipe clip on one core of this machine (~14.6 ms clip by clip), and
a build of many clips runs on every core, a pack per worker process. Reading a clip is one ``os.pread`` and ~0.1 ms
of decompression; nothing of the cache is held in memory but the position of each clip a dataset reads (a few
numbers per clip).
"""

from __future__ import annotations

import ctypes
import json
import math
import multiprocessing
import os
import signal
import sys
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numcodecs
import numpy as np

from dualnet.entities import entity_boxes_batch, get_entity_set
from dualnet.layouts import get_layout
from pipelines.errors import StoreError
from pipelines.forking import frozen_for_fork
from pipelines.formats.keypoint_packs import new_pack_name
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.params import pose_clips_spec
from pipelines.kill_points import kill_point
from pipelines.store import OutputFormat, StageOutput, register_output_format, safe_name

POSE_CLIPS_FORMAT = "pose-clips"
PACK_CLIPS = 2048  # clips per pack: 20,000 MA-52 clips -> 10 packs of 2 files, ~0.2 GB each
CODEC = numcodecs.Zstd(level=1)  # MediaPipe keypoints of a 60-frame clip: 391 KB -> ~40 KB, 0.08 ms to decompress
BATCH_FRAMES = 2048  # frames read and boxed at once (~32 MA-52 clips, ~50 MB while they are)
MIN_CLIPS_PER_PROCESS = 1024  # below this a build stays in one process (~1.3 s of work there: not worth a pool)


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


def clip_arrays(keypoints: KeypointSet, spans: list[tuple[str, int, int]], layout, entities, smooth_sigma: float
                ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]]:
    """(keypoints (T, V, 3) float32, boxes (T, K, 4) float32, visible (T, K) bool, depth (T, V) float32 or None)
    of each clip, given as (item, start, end), computed from its stored keypoints: what the cache holds. Clips next
    to each other in a keypoint pack are read together and all their boxes computed in one batch."""
    windows = keypoints.keypoint_windows(spans)
    attrs = [keypoints.attributes(s[0]) for s in spans]
    depths = (keypoints.keypoint_windows(spans, "depth") if any(a.get("depth") for a in attrs)
              else [None] * len(spans))
    sizes = [(a["width"] or 1, a["height"] or 1) for a in attrs]
    boxes = entity_boxes_batch(windows, layout, entities, sizes, smooth_sigma)
    return [(np.asarray(kp, np.float32), b.astype(np.float32), v, None if z is None else np.asarray(z, np.float32))
            for kp, (b, v), z in zip(windows, boxes, depths, strict=True)]


def _read_order(keypoints: KeypointSet, identity: dict) -> tuple:
    """Where a clip's frames lie (pack, first frame), so that clips sorted by it are read in long runs."""
    packed = keypoints.index.locate(identity["item"])
    return ("", identity["item"], identity["start"]) if packed is None else (packed.pack, "",
                                                                            packed.offset + identity["start"])


def _batches(names: list[str], identities: dict[str, dict]) -> list[list[str]]:
    """`names` (in read order) in runs of about BATCH_FRAMES frames."""
    out: list[list[str]] = [[]]
    frames = 0
    for name in names:
        length = identities[name]["end"] - identities[name]["start"]
        if out[-1] and frames + length > BATCH_FRAMES:
            out.append([])
            frames = 0
        out[-1].append(name)
        frames += length
    return out


def _write_pack(keypoints: KeypointSet, names: list[str], identities: dict[str, dict], layout: str,
                entity_set: str, smooth_sigma: float, tmp: Path) -> str:
    """Compute `names` into a new pack folder under `tmp` (data.bin, then clips.json, both synced); returns its
    name. The caller commits it: a folder under tmp is never read."""
    resolved, entities = get_layout(layout), get_entity_set(entity_set)
    pack = new_pack_name()
    folder = tmp / pack
    folder.mkdir()
    entries: list[dict] = []
    offset = 0
    with open(folder / "data.bin", "wb") as f:
        for batch in _batches(names, identities):
            spans = [(identities[n]["item"], identities[n]["start"], identities[n]["end"]) for n in batch]
            for name, (kp, boxes, visible, depth) in zip(batch, clip_arrays(keypoints, spans, resolved, entities,
                                                                            smooth_sigma), strict=True):
                arrays = (kp, boxes, visible) if depth is None else (kp, boxes, visible, depth)
                blob = CODEC.encode(b"".join(memoryview(np.ascontiguousarray(a)) for a in arrays))
                f.write(blob)
                entries.append({"name": name, **identities[name], "frames": len(kp), "depth": depth is not None,
                                "offset": offset, "nbytes": len(blob), "crc32": zlib.crc32(blob)})
                offset += len(blob)
        f.flush()
        os.fsync(f.fileno())
    with open(folder / "clips.json", "w") as f:
        f.write(json.dumps({"num_keypoints": resolved.num_keypoints, "num_entities": len(entities), "clips": entries}))
        f.flush()
        os.fsync(f.fileno())
    kill_point("poseclips.pack_written")
    return pack


_worker: dict[str, KeypointSet] = {}  # in a build's worker process: the keypoint set it reads, given once


def _start_worker(keypoints: KeypointSet, parent: int) -> None:
    _worker["keypoints"] = keypoints
    if sys.platform.startswith("linux"):
        # die with the building process (PR_SET_PDEATHSIG): a forked worker holds a copy of the store lock's
        # descriptor, and would wait for tasks forever once that process is gone
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
        if os.getppid() != parent:  # it was gone before the line above
            os._exit(1)


def _write_pack_in_worker(*args) -> str:
    return _write_pack(_worker["keypoints"], *args)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _build_packs(keypoints: KeypointSet, todo: list[str], identities: dict[str, dict], layout: str,
                 entity_set: str, smooth_sigma: float, tmp: Path) -> Iterator[str]:
    """Write `todo` into packs under `tmp`, yielding each pack's name as it is complete: in this process, or spread
    over one process per core when each gets MIN_CLIPS_PER_PROCESS clips or more (a pack per task, as many packs
    as a multiple of the processes, so that they finish together)."""
    processes = max(1, min(_cores(), len(todo) // MIN_CLIPS_PER_PROCESS))
    count = processes * math.ceil(len(todo) / (processes * PACK_CLIPS))
    size = math.ceil(len(todo) / count)
    packs = [todo[i:i + size] for i in range(0, len(todo), size)]
    if processes == 1:
        for names in packs:
            yield _write_pack(keypoints, names, identities, layout, entity_set, smooth_sigma, tmp)
        return
    # Forked on Linux, as DataLoader workers are: a spawned worker imports the caller's script again (one without an
    # `if __name__ == "__main__"` guard runs again in it) and ~1 s of modules. The worker uses none of the threads
    # a caller may hold (torch's, zarr's event loop: zarr resets it in a forked child).
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_start_worker,
                             initargs=(keypoints, os.getpid())) as pool:
        with frozen_for_fork():  # the first submit forks every worker
            futures = [pool.submit(_write_pack_in_worker, names, {n: identities[n] for n in names}, layout,
                                   entity_set, smooth_sigma, tmp) for names in packs]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


@dataclass
class BuildReport:
    key: str
    computed: int  # clips computed in this call (0: every clip was cached)
    cached: int


def ensure_pose_clips(keypoints: KeypointSet, names: list[str], layout: str, entity_set: str,
                      smooth_sigma: float = 1.0) -> tuple[PoseClips, BuildReport]:
    """The cached pose clips `names` of `keypoints` (items, or a `cut` view's segments), computing those not yet
    cached (or whose item changed) under the store lock, on every core when there are many. Returns a reader over
    `names`, in that order."""
    spec = pose_clips_spec(keypoints.output, layout, entity_set, smooth_sigma)
    output = keypoints.store.stage(spec.stage, spec.key)
    wanted = {safe_name(n): _identity(keypoints, n) for n in names}

    def stale(index: dict) -> list[str]:
        return [n for n, ident in wanted.items()
                if n not in index or any(index[n][1].get(f) != ident[f] for f in ident)]

    todo = stale(read_index(output)) if output.path.is_dir() else list(wanted)
    computed = 0
    if todo:
        with keypoints.store.run(spec) as run:
            # again under the lock: another process may have added some meanwhile
            todo = sorted(stale(read_index(output)), key=lambda n: _read_order(keypoints, wanted[n]))
            for pack in _build_packs(keypoints, todo, wanted, layout, entity_set, smooth_sigma, run.tmp):
                output.commit_pack(run.tmp / pack, pack)
                kill_point("poseclips.pack_committed")
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
        self.depth = np.array([bool(e.get("depth")) for e in entries], dtype=bool)  # which clips have depth
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
        return self.read_with_depth(i)[:3]

    def read_with_depth(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """`read`'s arrays and the clip's depth (T, V) float32 (None for a clip without), read-only."""
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
        depth = None
        if self.depth[i]:  # after the other arrays
            depth = np.frombuffer(raw, np.float32, t * v, t * (v * 3 + k * 4) * 4 + t * k).reshape(t, v)
        return kp, boxes, visible, depth
