"""The `tubes` stage: from each clip's keypoints, one crop tube per body-part entity over sampled frames, cut once
from the video and cached, so training never decodes video again.

Storage: clips are written in *packs* of up to `pack_size` clips, one zarr group per pack whose arrays are sharded
(one file per array per pack, one inner chunk per clip): a 20,000-clip dataset is a few thousand files, and reading
one clip reads only its chunk. A pack is written under ``tmp/`` and moved into ``items/`` whole, so a killed run
loses at most the pack in progress; a re-run skips every clip already in a pack with the same source fingerprint.

Per clip (F sampled frames, K entities, S entity size, G global size, V keypoints):
    tubes (F, K, 3, S, S) uint8, frames (F, 3, G, G) uint8 (letterboxed), boxes (F, K, 4) float32 source pixels,
    visible (F, K) bool, padding (F, K, 4) int16 (box pixels outside the frame: left, top, right, bottom),
    keypoints (F, V, 3) float32 at the sampled frames, frame_index (F,) int32 into the source video.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import BloscCodec
from zarr.core.sync import sync

from dualnet.entities import entity_boxes, get_entity_set
from dualnet.layouts import get_layout
from pipelines.data.crops import crop_boxes, letterbox, sample_indices
from pipelines.errors import DualnetError, InputError, StoreError
from pipelines.formats.keypoints import KeypointSet
from pipelines.hashing import stable_hash
from pipelines.io.video import iter_frames
from pipelines.kill_points import kill_point
from pipelines.store import Shard, StageOutput, Store
from pipelines.store.integrity import array_options, is_checksum_error, missing

STAGE = "tubes"
VERSION = 1
ARRAYS = ("tubes", "frames", "boxes", "visible", "padding", "keypoints", "frame_index")
LARGE = ("tubes", "frames", "keypoints")  # read per clip (one chunk each)
SMALL = ("boxes", "visible", "padding", "frame_index")  # ~2 KB a clip: read whole once per pack, kept in memory
IMAGE_CODEC = BloscCodec(cname="lz4hc", clevel=5, shuffle="noshuffle")


@dataclass(frozen=True)
class TubeParams:
    """What changes the tubes; all of it goes into the stage key (with the keypoint stage's key)."""

    frames: int = 16  # frames sampled uniformly over each clip; training draws its T = 8 segments from these
    size: int = 112  # entity crop side in pixels
    global_size: int = 224  # side of the letterboxed global frame (the TSM convention)
    entity_set: str = "k6"  # k6: face, head, torso, hands, lower body (MA-52); k5: no lower body (iMiGUE)
    smooth_sigma: float = 1.0  # temporal smoothing of boxes, in frames of the source video
    pack_size: int = 128  # clips per pack (one file per array); 20,000 clips -> 157 packs, 2,200 files

    def __post_init__(self) -> None:
        if self.frames < 1 or self.size < 8 or self.global_size < 8 or self.pack_size < 1:
            raise ValueError("frames >= 1, size >= 8, global_size >= 8 and pack_size >= 1 are required")
        get_entity_set(self.entity_set)


def stage_key(params: TubeParams, keypoints: StageOutput) -> str:
    """The tubes key: stage, version, parameters (less `pack_size`, which changes files, not content) and the
    keypoint output's key."""
    content = {k: v for k, v in asdict(params).items() if k != "pack_size"}
    return stable_hash({"stage": STAGE, "version": VERSION, "params": content,
                        "inputs": {keypoints.stage: keypoints.key}})


@dataclass
class ClipTubes:
    """One clip's tubes and what goes with them (see the module docstring for shapes)."""

    name: str
    arrays: dict[str, np.ndarray]
    meta: dict  # width, height, fps, num_frames, layout, global letterbox (scale, pad_x, pad_y), fingerprint


def make_clip_tubes(name: str, keypoints_set: KeypointSet, params: TubeParams, video: str | Path) -> ClipTubes:
    """Boxes from the keypoints, then crops from the video at the sampled frames."""
    clip = keypoints_set.load(name)
    layout = get_layout(clip.layout)
    entities = get_entity_set(params.entity_set)
    t = len(clip.timestamps)
    if clip.width is None or clip.height is None:
        raise InputError(video, "the keypoints do not record the frame size; tubes need the source video's")
    boxes, visible = entity_boxes(clip.keypoints.astype(np.float64), layout, entities, (clip.width, clip.height),
                                  params.smooth_sigma)
    index = sample_indices(t, params.frames)
    wanted = {int(i) for i in index}
    decoded: dict[int, np.ndarray] = {}
    count = 0
    for count, (_, rgb) in enumerate(iter_frames(video), 1):
        if count - 1 in wanted:
            decoded[count - 1] = rgb
    if count != t:
        raise InputError(video, f"has {count} frames but its keypoints have {t}: not the video they came from")
    k, f = len(entities), params.frames
    tubes = np.zeros((f, k, 3, params.size, params.size), np.uint8)
    frames = np.zeros((f, 3, params.global_size, params.global_size), np.uint8)
    padding = np.zeros((f, k, 4), np.int16)
    letter = (1.0, 0, 0)
    for j, i in enumerate(index):
        tubes[j], padding[j] = crop_boxes(decoded[int(i)], boxes[i], params.size)
        frames[j], *letter = letterbox(decoded[int(i)], params.global_size)
    arrays = {"tubes": tubes, "frames": frames, "boxes": boxes[index].astype(np.float32),
              "visible": visible[index], "padding": padding, "keypoints": clip.keypoints[index].astype(np.float32),
              "frame_index": index.astype(np.int32)}
    meta = {"name": name, "width": clip.width, "height": clip.height, "fps": clip.fps, "num_frames": t,
            "layout": clip.layout, "global_letterbox": [float(letter[0]), int(letter[1]), int(letter[2])]}
    return ClipTubes(name, arrays, meta)


class TubePack:
    """Up to `capacity` clips in preallocated (capacity, ...) arrays: adding a clip copies it into its row, so a
    pack being built costs its own size in memory (a pack of 128 default clips: ~770 MB), never twice that."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.arrays: dict[str, np.ndarray] | None = None  # name -> (capacity, *clip shape), rows [0, len) filled
        self.metas: list[dict] = []

    def __len__(self) -> int:
        return len(self.metas)

    def add(self, clip: ClipTubes) -> None:
        if len(self) >= self.capacity:
            raise ValueError(f"pack is full ({self.capacity} clips)")
        if self.arrays is None:  # np.zeros maps pages lazily: a pack of 3 clips touches 3 rows
            self.arrays = {a: np.zeros((self.capacity, *clip.arrays[a].shape), clip.arrays[a].dtype) for a in ARRAYS}
        for a in ARRAYS:
            self.arrays[a][len(self)] = clip.arrays[a]
        self.metas.append(clip.meta)

    def clear(self) -> None:
        self.metas.clear()


def write_pack(path: Path, pack: TubePack, params: TubeParams) -> None:
    """One pack: every array over its clips, sharded into one file per array, one chunk per clip."""
    group = zarr.open_group(path, mode="w")
    group.attrs.update({"clips": [{**m, "row": r} for r, m in enumerate(pack.metas)],
                        "entities": [e.name for e in get_entity_set(params.entity_set)]})
    for name in ARRAYS:
        data = pack.arrays[name][:len(pack)]
        # Images: Blosc-LZ4HC measured 1.8x smaller than raw and ~2x faster to read than zarr's default zstd
        # (16 vs 32 ms per clip here); the small arrays keep the default. One chunk per clip: per-frame chunks
        # (to read only the T frames training draws) measured slower, zarr's cost per chunk outweighing the decode.
        compressors = (IMAGE_CODEC,) if name in ("tubes", "frames") else ("zstd",)
        group.create_array(name, data=data, chunks=(1, *data.shape[1:]), shards=data.shape,
                           **array_options(compressors))


def _read_pack_clips(pack: Path) -> list[dict]:
    try:
        with open(pack / "zarr.json") as f:
            return json.load(f)["attributes"]["clips"]
    except (OSError, ValueError, KeyError):
        return []


def pack_index(output: StageOutput, damaged: dict[str, str] | None = None) -> dict[str, tuple[str, int, str]]:
    """clip name -> (pack, row, fingerprint); where a clip is in several packs, the newest pack wins. A damaged pack
    (a file missing, see `integrity.missing`) counts for nothing, so a re-run redoes its clips; `damaged` collects
    clip name -> what is wrong, for clips no other pack holds."""
    index: dict[str, tuple[str, int, str]] = {}
    lost: dict[str, str] = {}
    for pack in output.item_names():  # pack names sort by creation time
        clips = _read_pack_clips(output.items_dir / pack)
        problem = missing(output.items_dir / pack, ARRAYS) if clips else None
        if problem is not None:
            lost.update((entry["name"], f"{output.items_dir / pack}: damaged, {problem}") for entry in clips)
            continue
        for entry in clips:
            index[entry["name"]] = (pack, int(entry["row"]), entry.get("fingerprint", ""))
    if damaged is not None:
        damaged.update((name, why) for name, why in lost.items() if name not in index)
    return index


def _new_pack_name() -> str:
    return f"p{time.time_ns():x}-{uuid.uuid4().hex[:6]}"


class TubeProgress:
    """Callbacks of `run_tubes` (the CLI draws them with Rich)."""

    def start(self, clips: int, skipped: int) -> None:
        """`clips` to do, `skipped` already done."""

    def item(self, name: str, error: str | None) -> None:
        """Clip `name` is done (or failed with a one-line `error`)."""


@dataclass
class TubeReport:
    key: str
    processed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    packs: int = 0
    seconds: float = 0.0


def run_tubes(store: Store | str | Path | None = None, params: TubeParams = TubeParams(),
              keypoints: KeypointSet | None = None, names: list[str] | None = None,
              video_root: str | Path | None = None, progress: TubeProgress | None = None) -> TubeReport:
    """Cut and cache entity tubes for the clips of a keypoint output (default: `extract` with default parameters).

    Args:
        names: Only these clips (default: every clip of the keypoint output).
        video_root: Find each video as ``<video_root>/<source file name>`` instead of its recorded path (for a store
            moved to another machine).
    """
    store = store if isinstance(store, Store) else Store(store)
    progress = progress or TubeProgress()
    started = time.perf_counter()
    keypoints = keypoints or KeypointSet(store)
    key = stage_key(params, keypoints.output)
    report = TubeReport(key)
    output = store.stage(STAGE, key)
    shard = Shard()
    wanted = names if names is not None else keypoints.names()
    with store.lock(shard):
        tmp = output.prepare({"stage": STAGE, "version": VERSION, "params": asdict(params), "packed": True,
                              "inputs": {keypoints.output.stage: keypoints.output.key}}, shard)
        store.set_ref(STAGE, key, asdict(params))
        output.record_run(shard, wanted)
        done = pack_index(output)
        todo = []
        for name in wanted:
            attrs = keypoints.attributes(name)
            fingerprint = attrs["source_fingerprint"]
            if name in done and done[name][2] == fingerprint:
                report.skipped.append(name)
            else:
                video = Path(video_root) / attrs["source_name"] if video_root else Path(attrs["source_path"])
                todo.append((name, fingerprint, video))
        progress.start(len(todo), len(report.skipped))
        pending = TubePack(params.pack_size)

        def flush() -> None:
            if not len(pending):
                return
            pack = _new_pack_name()
            try:
                write_pack(tmp / pack, pending, params)
                kill_point("tubes.pack_written")
                output.commit(tmp / pack, pack)
                kill_point("tubes.pack_committed")
            except OSError as e:
                shutil.rmtree(tmp / pack, ignore_errors=True)  # give back what the half pack took (a full disk)
                raise StoreError(f"{output.path}: cannot write pack {pack} ({e.strerror or e})") from e
            for meta in pending.metas:
                output.clear_failure(meta["name"])
                report.processed.append(meta["name"])
            report.packs += 1
            pending.clear()

        for name, fingerprint, video in todo:
            try:
                clip = make_clip_tubes(name, keypoints, params, video)
            except DualnetError as e:
                output.record_failure(name, str(video), str(e))
                report.failed[name] = str(e)
                progress.item(name, str(e))
                continue
            clip.meta["fingerprint"] = fingerprint
            pending.add(clip)
            kill_point("tubes.clip")
            progress.item(name, None)
            if len(pending) >= params.pack_size:
                flush()
        flush()
        for pack in output.item_names():  # damaged packs: their clips were redone above
            if missing(output.items_dir / pack, ARRAYS) is not None:
                output.remove_item(pack, tmp)
        output.finish(shard)
    report.seconds = time.perf_counter() - started
    return report


class TubeSet:
    """Cached tubes of one `tubes` output, by clip name.

    Args:
        store: A Store or its root.
        params: The TubeParams whose output to read (with `keypoints`, the keypoint output they were cut from).
        key: Read this tubes key instead.
    """

    def __init__(self, store: Store | str | Path | None = None, params: TubeParams | None = None,
                 keypoints: KeypointSet | None = None, key: str | None = None):
        self.store = store if isinstance(store, Store) else Store(store)
        if key is None:
            keypoints = keypoints or KeypointSet(self.store)
            key = stage_key(params or TubeParams(), keypoints.output)
        self.output = self.store.stage(STAGE, key)
        self.manifest = self.output.manifest()
        self.damaged: dict[str, str] = {}  # clip -> why its only pack is unreadable
        self.index = pack_index(self.output, self.damaged)
        self._packs: dict[str, tuple[dict[str, zarr.Array], dict[str, np.ndarray], list[dict]]] = {}

    def names(self) -> list[str]:
        return sorted(self.index)

    def _locate(self, name: str) -> tuple[dict[str, zarr.Array], dict[str, np.ndarray], int, dict]:
        """(large array handles, small arrays in memory, row, clip metadata) of one clip."""
        if name not in self.index:
            if name in self.damaged:
                raise StoreError(f"{self.damaged[name]}; re-run `dualnet tubes` to redo its clips")
            raise StoreError(f"{self.output.path}: no tubes for clip {name!r}")
        pack, row, _ = self.index[name]
        if pack not in self._packs:  # opened once per pack; its small arrays read whole, once (each read of
            # a small array costs ~3 ms of zarr overhead, more than its data)
            group = zarr.open_group(self.output.items_dir / pack, mode="r")
            small = dict(zip(SMALL, sync(_gather([group[a] for a in SMALL], slice(None))), strict=True))
            self._packs[pack] = ({a: group[a] for a in LARGE}, small, list(group.attrs["clips"]))
        large, small, clips = self._packs[pack]
        return large, small, row, clips[row]

    @property
    def entities(self) -> list[str]:
        return [e.name for e in get_entity_set(self.manifest["params"]["entity_set"])]

    def load(self, name: str) -> dict[str, np.ndarray]:
        """Every array of one clip (see the module docstring), plus ``meta``."""
        large, small, row, meta = self._locate(name)
        try:
            values = sync(_gather([large[a] for a in LARGE], row))  # one trip through zarr's event loop
        except ValueError as e:
            if not is_checksum_error(e):
                raise
            raise StoreError(f"{self.output.items_dir / self.index[name][0]}: tubes of {name!r} are damaged (a chunk "
                             "fails its checksum); `dualnet verify --repair` removes the pack, then re-run "
                             "`dualnet tubes`") from None
        out: dict = dict(zip(LARGE, values, strict=True))
        out.update({a: small[a][row].copy() for a in SMALL})  # copies: callers may write to them
        out["meta"] = meta
        return out

    def tensors(self, name: str) -> dict:
        """The clip's tubes, frames and boxes as torch tensors (uint8 images, float32 boxes)."""
        import torch

        arrays = self.load(name)
        return {a: torch.from_numpy(np.ascontiguousarray(arrays[a])) for a in ("tubes", "frames", "boxes", "visible")}

    def boxes_frame(self, names: list[str] | None = None) -> pd.DataFrame:
        """Long table of boxes: clip, sample, frame (source index), entity (categorical), x1, y1, x2, y2, visible,
        padded (any part outside the frame)."""
        rows = []
        entities = self.entities
        for name in names if names is not None else self.names():
            a = self.load(name)
            f, k = a["visible"].shape
            rows.append(pd.DataFrame({
                "clip": name,
                "sample": np.repeat(np.arange(f), k),
                "frame": np.repeat(a["frame_index"], k),
                "entity": pd.Categorical.from_codes(np.tile(np.arange(k), f), categories=entities),
                **{c: a["boxes"][..., i].ravel() for i, c in enumerate(("x1", "y1", "x2", "y2"))},
                "visible": a["visible"].ravel(),
                "padded": (a["padding"] > 0).any(axis=-1).ravel(),
            }))
        return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


async def _gather(arrays: list[zarr.Array], selection) -> list[np.ndarray]:
    """The same basic selection of several arrays, read concurrently."""
    return list(await asyncio.gather(*(a.async_array.getitem(selection) for a in arrays)))


def count_files(path: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(path))
