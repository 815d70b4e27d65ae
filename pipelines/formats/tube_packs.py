"""Tube packs, what the `tubes` stage (`pipelines.stages.tubes`) writes: clips in packs of up to `pack_size`, one
zarr group per pack, every array sharded into one file per pack with one chunk per clip; `TubeSet` reads them.

Per clip (F sampled frames, K entities, S entity size, G global size, V keypoints):
    tubes (F, K, 3, S, S) uint8, frames (F, 3, G, G) uint8 (the clip's global window), boxes (F, K, 4) float32
    source pixels, visible (F, K) bool, padding (F, K, 4) int16 (box pixels outside the frame: left, top, right,
    bottom),
    keypoints (F, V, 3) float32 at the sampled frames, frame_index (F,) int32 into the source video.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import BloscCodec
from zarr.core.sync import sync

from dualnet.entities import get_entity_set
from pipelines.errors import StoreError
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.params import TUBES_STAGE as STAGE
from pipelines.formats.params import TubeParams
from pipelines.formats.params import tubes_key as stage_key
from pipelines.store import OutputFormat, StageOutput, Store, register_output_format
from pipelines.store.integrity import array_options, is_checksum_error, missing

ARRAYS = ("tubes", "frames", "boxes", "visible", "padding", "keypoints", "frame_index")
LARGE = ("tubes", "frames", "keypoints")  # read per clip (one chunk each)
SMALL = ("boxes", "visible", "padding", "frame_index")  # ~2 KB a clip: read whole once per pack, kept in memory
IMAGE_CODEC = BloscCodec(cname="lz4hc", clevel=5, shuffle="noshuffle")


@dataclass
class ClipTubes:
    """One clip's tubes and what goes with them (see the module docstring for shapes)."""

    name: str
    arrays: dict[str, np.ndarray]
    meta: dict  # width, height, fps, num_frames, layout, global_window (x0, y0, side source pixels), global_view
    # (scale, dx, dy: source -> global-frame pixels; packs before tubes v3 have global_letterbox instead), fingerprint


def global_view(meta: dict) -> tuple[float, float, float]:
    """scale, dx, dy taking a clip's source pixels to its global frame's (any pack version)."""
    scale, dx, dy = meta["global_view"] if "global_view" in meta else meta["global_letterbox"]
    return float(scale), float(dx), float(dy)


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


def new_pack_name() -> str:
    return f"p{time.time_ns():x}-{uuid.uuid4().hex[:6]}"


TUBE_FORMAT = "tube-packs"
register_output_format(TUBE_FORMAT, OutputFormat(lambda output: sorted(pack_index(output))))


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
            try:
                small = dict(zip(SMALL, sync(_gather([group[a] for a in SMALL], slice(None))), strict=True))
            except ValueError as e:
                if not is_checksum_error(e):
                    raise
                raise StoreError(f"{self.output.items_dir / pack}: damaged (a chunk fails its checksum); "
                                 "`dualnet verify --repair` removes the pack, then re-run `dualnet tubes`") from None
            self._packs[pack] = ({a: group[a] for a in LARGE}, small, list(group.attrs["clips"]))
        large, small, clips = self._packs[pack]
        return large, small, row, clips[row]

    @property
    def entities(self) -> list[str]:
        return [e.name for e in get_entity_set(self.manifest["params"]["entity_set"])]

    def load(self, name: str, without: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """Every array of one clip (see the module docstring), plus ``meta``; the large arrays named in `without`
        (e.g. ``("tubes",)`` for a ROIAlign model, which pools the frames) are not read at all."""
        large, small, row, meta = self._locate(name)
        wanted = [a for a in LARGE if a not in without]
        try:
            values = sync(_gather([large[a] for a in wanted], row))  # one trip through zarr's event loop
        except ValueError as e:
            if not is_checksum_error(e):
                raise
            raise StoreError(f"{self.output.items_dir / self.index[name][0]}: tubes of {name!r} are damaged (a chunk "
                             "fails its checksum); `dualnet verify --repair` removes the pack, then re-run "
                             "`dualnet tubes`") from None
        out: dict = dict(zip(wanted, values, strict=True))
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


