"""Keypoint packs: many short keypoint items in one zarr group, so that a 20,000-clip dataset is a few hundred files.

`extract` writes and commits items one by one (`keypoint_format`): a killed run loses at most the item in
progress; `compact` then copies finished short items into packs. `import`, which holds whole clips in memory,
writes packs directly (`PackWriter`). A pack is a zarr group at ``items/@<id>`` (no item can have
that name: item names are `safe_name`s, which never hold '@')::

    keypoints (N, V, 3), detected (N,), timestamps (N,), and depth (N, V) in a pack of 3D items
        the items one after another along the frame axis, each starting on a chunk boundary (the frames between
        items are NaN, False, NaN); every array is one shard, i.e. one file, and reading an item reads its chunks.
        Items with depth and items without never share a pack: a pack has a depth array when its items do.
    attributes: layout, keypoint_names, chunk_frames and
        items: [{name, offset, <the item's own attributes: num_frames, fps, width, height, source_...>}]

Which copy of an item counts: a loose item folder over any packed copy, a newer pack over an older one (pack ids
sort by creation time). A compaction commits a pack first and only then moves each packed folder away (one
``os.replace``) and removes it, so a reader sees the same data at every moment and a kill anywhere leaves a valid
store (at worst a duplicate, which the next compaction removes). Items of `LONG_FRAMES` frames or more (long
recordings) stay in their own group, where reads of a window touch only its chunks.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numcodecs
import numpy as np
import zarr

from pipelines.errors import StoreError
from pipelines.formats.keypoint_items import check_depth, item_attributes, item_fingerprint
from pipelines.kill_points import kill_point
from pipelines.store import PACK_PREFIX, OutputFormat, StageOutput, register_output_format, safe_name
from pipelines.store.integrity import array_options, damaged, is_checksum_error, missing

KEYPOINT_ARRAYS = ("keypoints", "detected", "timestamps")  # the arrays of every item and pack
DEPTH_ARRAY = "depth"  # (T, V) z of an item (or pack) whose attributes say ``depth: true``


def arrays_of(attrs: dict | None) -> tuple[str, ...]:
    """The arrays an item or a pack with these attributes holds: the depth array too when it, or any item of the
    pack, has depth (so that a lost or damaged depth array counts as damage, as a keypoints array's does)."""
    attrs = attrs or {}
    deep = attrs.get("depth") or any(isinstance(e, dict) and e.get("depth") for e in attrs.get("items", ()))
    return KEYPOINT_ARRAYS + ((DEPTH_ARRAY,) if deep else ())
PACK_ITEMS = 256  # items per pack: MA-52's 22,422 clips -> 88 packs of 7 files
PACK_FRAMES = 32_768  # frames per pack: 256 MA-52 clips; 543 points x 3 x float32 = 214 MB while a pack is built
CHUNK_FRAMES = 32  # frames per chunk inside a pack: a 1-3 s clip is 2-3 whole chunks
LONG_FRAMES = 4_096  # items this long (2.3 min at 30 fps) or longer stay in their own group: few files, no copying
_SHARED = ("layout", "keypoint_names")  # attributes a pack holds once for all its items
_ZSTD = numcodecs.Zstd()  # decodes any level


@dataclass(frozen=True)
class PackedItem:
    """Where one item lives inside a pack."""

    pack: str
    offset: int  # first frame of the item along the pack's frame axis
    num_frames: int
    attrs: dict  # the item's attributes exactly as its loose group had them


_NO_CHUNK = 2**64 - 1  # a shard index's (offset, size) of a chunk never written


class PackFrames:
    """Frames of a pack's ``keypoints`` array read straight from its shard file: ~0.1 ms a 32-frame chunk, where
    zarr's reader spends ~0.4 ms a chunk in asyncio and thread hand-offs (CPU time, reading MA-52 packs on this
    machine), which was a third of building the pose-clip cache.

    Only for the layout `KeypointPackBuilder.write` gives a pack: one shard of chunks along the frame axis, each
    little-endian bytes -> Zstandard -> CRC-32C, the shard's (offset, size) index at its end -> CRC-32C; `open` gives
    None for an array in any other layout, which is then read through zarr. Both checksums are verified: a mismatch
    is a ValueError that names them, as zarr's is (`integrity.is_checksum_error`).
    """

    def __init__(self, shard: Path, shape: tuple[int, ...], chunk_frames: int, dtype: np.dtype, fill_value: float):
        self.shard, self.shape, self.chunk, self.fill_value = shard, shape, chunk_frames, fill_value
        self.dtype, self.stored = dtype, dtype.newbyteorder("<")  # as zarr gives it (native), as the shard holds it
        chunks = -(-shape[0] // chunk_frames)
        with open(shard, "rb") as f:
            f.seek(-(16 * chunks + 4), os.SEEK_END)
            tail = f.read()
        index, crc = tail[:-4], int.from_bytes(tail[-4:], "little")
        if google_crc32c.value(index) != crc:
            raise ValueError(f"{shard}: the shard index fails its checksum (crc32c)")
        self.index = np.frombuffer(index, "<u8").reshape(chunks, 2)  # (offset, size) of each chunk

    @classmethod
    def open(cls, array: Path) -> PackFrames | None:
        """The reader of the array at `array` (a pack's ``keypoints`` or ``depth`` folder), or None when it is not in
        that layout."""
        try:
            meta = json.loads((array / "zarr.json").read_text())
            (sharding,) = meta["codecs"]
            conf = sharding["configuration"]
            if not (meta["zarr_format"] == 3 and sharding["name"] == "sharding_indexed"
                    and len(meta["shape"]) in (2, 3)
                    and meta["chunk_grid"]["configuration"]["chunk_shape"] == meta["shape"]
                    and meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
                    and not meta.get("storage_transformers") and conf["index_location"] == "end"
                    and conf["chunk_shape"][1:] == meta["shape"][1:]
                    and [c["name"] for c in conf["codecs"]] == ["bytes", "zstd", "crc32c"]
                    and [c["name"] for c in conf["index_codecs"]] == ["bytes", "crc32c"]
                    and conf["codecs"][0]["configuration"]["endian"] == "little"
                    and conf["index_codecs"][0]["configuration"]["endian"] == "little"
                    and meta["data_type"] in ("float16", "float32", "float64")):
                return None
            return cls(array.joinpath("c", *["0"] * len(meta["shape"])), tuple(meta["shape"]), conf["chunk_shape"][0],
                       np.dtype(meta["data_type"]), float(meta["fill_value"]))
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Frames [lo, hi): (hi - lo, V, 3) keypoints or (hi - lo, V) depth, as zarr reads them."""
        out = np.empty((hi - lo, *self.shape[1:]), self.dtype)
        with open(self.shard, "rb") as f:
            for c in range(lo // self.chunk, -(-hi // self.chunk)):
                first, end = max(lo, c * self.chunk), min(hi, (c + 1) * self.chunk)
                offset, size = (int(v) for v in self.index[c])
                if offset == _NO_CHUNK:
                    out[first - lo:end - lo] = self.fill_value
                    continue
                payload = os.pread(f.fileno(), size, offset)
                if len(payload) != size or google_crc32c.value(payload[:-4]) != int.from_bytes(payload[-4:], "little"):
                    raise ValueError(f"{self.shard}: chunk {c} fails its checksum (crc32c)")
                chunk = np.frombuffer(_ZSTD.decode(payload[:-4]), self.stored).reshape(self.chunk, *self.shape[1:])
                out[first - lo:end - lo] = chunk[first - c * self.chunk:end - c * self.chunk]
        return out


def new_pack_name() -> str:
    """A fresh pack name; names sort by creation time."""
    return f"{PACK_PREFIX}{time.time_ns():016x}-{uuid.uuid4().hex[:6]}"


def read_pack_attributes(path: Path) -> dict | None:
    """A pack's attributes, or None when it is absent or unreadable (its items then count as missing)."""
    try:
        with open(path / "zarr.json") as f:
            attrs = json.load(f)["attributes"]
        attrs["items"]  # noqa: B018 - a pack without an item list is not a pack
        return attrs
    except (OSError, ValueError, KeyError, TypeError):
        return None


class KeypointIndex:
    """Where each item of a keypoint output lives, read from the folder listing and the packs' attributes (a few
    hundred small JSON files for 20,000 clips). A snapshot: build a new one to see later writes."""

    def __init__(self, output: StageOutput):
        self.output = output
        self.loose: set[str] = set(output.item_names())
        self.packed: dict[str, PackedItem] = {}
        self.packs: dict[str, list[str]] = {}  # pack -> every name it holds, live or superseded
        self.damaged: dict[str, str] = {}  # pack -> what is missing from it (its items count as absent)
        for pack in output.pack_names():  # oldest first, so a newer pack's copy wins
            attrs = read_pack_attributes(output.items_dir / pack)
            if attrs is None:
                continue
            problem = missing(output.items_dir / pack, arrays_of(attrs))
            if problem is not None:  # kept in `packs` (no live item) so that compaction removes it
                self.damaged[pack] = problem
                self.packs[pack] = [entry["name"] for entry in attrs["items"]]
                continue
            shared = {k: attrs[k] for k in _SHARED}
            held = []
            for entry in attrs["items"]:
                own = {k: v for k, v in entry.items() if k not in ("name", "offset")}
                self.packed[entry["name"]] = PackedItem(pack, int(entry["offset"]), int(entry["num_frames"]),
                                                        {**shared, **own})
                held.append(entry["name"])
            self.packs[pack] = held

    def names(self) -> list[str]:
        """Every item name, sorted."""
        return sorted(self.loose | self.packed.keys())

    def __contains__(self, name: str) -> bool:
        name = safe_name(name)
        return name in self.loose or name in self.packed

    def __len__(self) -> int:
        return len(self.loose | self.packed.keys())

    def locate(self, name: str) -> PackedItem | None:
        """The packed copy that counts for `name`, or None when the item is loose (or absent)."""
        name = safe_name(name)
        return None if name in self.loose else self.packed.get(name)

    def attributes(self, name: str) -> dict | None:
        """The item's attributes (layout, fps, frame size, source), or None when absent or unreadable."""
        name = safe_name(name)
        if name in self.loose:
            return item_attributes(self.output.item_path(name))
        entry = self.packed.get(name)
        return dict(entry.attrs) if entry else None

    def fingerprint(self, name: str) -> str | None:
        """The source fingerprint the item records, or None when absent, unreadable or damaged (so that a re-run
        redoes it)."""
        name = safe_name(name)
        if name in self.loose:
            path = self.output.item_path(name)
            return None if missing(path, arrays_of(item_attributes(path))) else item_fingerprint(path)
        entry = self.packed.get(name)
        return entry.attrs.get("source_fingerprint") if entry else None

    def live(self, pack: str) -> list[str]:
        """Names whose counting copy is in `pack`."""
        return [n for n in self.packs.get(pack, [])
                if n not in self.loose and n in self.packed and self.packed[n].pack == pack]

    def damage(self, name: str) -> str | None:
        """Why `name` reads as absent though a pack holds it (that pack is damaged), or None."""
        name = safe_name(name)
        if name in self or not self.damaged:
            return None
        for pack, problem in self.damaged.items():
            if name in self.packs[pack]:
                return f"{self.output.items_dir / pack}: damaged, {problem}"
        return None


class KeypointPackBuilder:
    """Collects items for one pack in growing arrays, then writes the pack in one go.

    Args:
        layout, keypoint_names: Shared by every item of the pack.
        dtype: Of the keypoints array (float32 or float16, as the items were written).
        capacity: Frames the pack may hold at most (items are placed on chunk boundaries).
        depth: Whether the pack's items have depth (every one, or none).
    """

    def __init__(self, layout: str, keypoint_names: list[str], dtype: str, capacity: int = PACK_FRAMES,
                 chunk_frames: int = CHUNK_FRAMES, depth: bool = False):
        self.layout, self.keypoint_names, self.dtype = layout, list(keypoint_names), np.dtype(dtype)
        self.chunk = chunk_frames
        self.capacity = -(-capacity // chunk_frames) * chunk_frames
        self.keypoints = np.empty((0, len(keypoint_names), 3), self.dtype)  # (N, V, 3), NaN between items
        self.depth = np.empty((0, len(keypoint_names)), np.float32) if depth else None  # (N, V), NaN between items
        self.detected = np.empty(0, bool)  # (N,)
        self.timestamps = np.empty(0, np.float64)  # (N,)
        self.entries: list[dict] = []
        self.frames = 0  # end of the last item, rounded up to a chunk

    def fits(self, layout: str, num_keypoints: int, dtype, num_frames: int, depth: bool = False) -> bool:
        """Whether an item of this shape (with depth or not) can join the pack."""
        return (layout == self.layout and num_keypoints == len(self.keypoint_names) and np.dtype(dtype) == self.dtype
                and self.frames + num_frames <= self.capacity and depth == (self.depth is not None))

    def _grow(self, frames: int) -> None:
        """Room for `frames` frames at least (doubling, up to the capacity)."""
        have = len(self.detected)
        if frames <= have:
            return
        size = min(self.capacity, max(frames, 2 * have, 1024))
        grown = np.full((size, *self.keypoints.shape[1:]), np.nan, self.dtype)
        grown[:have] = self.keypoints
        self.keypoints = grown
        if self.depth is not None:
            self.depth = np.concatenate([self.depth, np.full((size - have, self.depth.shape[1]), np.nan, np.float32)])
        self.detected = np.concatenate([self.detected, np.zeros(size - have, bool)])
        self.timestamps = np.concatenate([self.timestamps, np.full(size - have, np.nan)])

    def add(self, name: str, attrs: dict, keypoints: np.ndarray, detected: np.ndarray,
            timestamps: np.ndarray, depth: np.ndarray | None = None) -> None:
        """Append one item: keypoints (T, V, 3), detected (T,), timestamps (T,), depth (T, V) or None, with its
        attributes."""
        t = len(keypoints)
        if not self.fits(attrs["layout"], keypoints.shape[1], keypoints.dtype, t, depth is not None):
            raise ValueError(f"item {name!r} does not fit pack of layout {self.layout} ({self.frames} of "
                             f"{self.capacity} frames used, depth {self.depth is not None})")
        at = self.frames
        self._grow(at + -(-t // self.chunk) * self.chunk)
        self.keypoints[at:at + t] = keypoints
        if depth is not None:
            self.depth[at:at + t] = depth
        self.detected[at:at + t] = detected
        self.timestamps[at:at + t] = timestamps
        self.entries.append({"name": name, "offset": at,
                             **{k: v for k, v in attrs.items() if k not in _SHARED}, "num_frames": t})
        self.frames = at + -(-t // self.chunk) * self.chunk

    def __len__(self) -> int:
        return len(self.entries)

    def write(self, path: Path) -> None:
        """Write the pack as a zarr group at `path` (a temporary location; the caller commits it)."""
        if not self.entries:
            raise ValueError("an empty pack is not written")
        n = self.frames  # a whole number of chunks: each array is exactly one shard
        group = zarr.open_group(path, mode="w", attributes={  # one metadata write, not one per key
            "layout": self.layout, "keypoint_names": self.keypoint_names, "chunk_frames": self.chunk,
            "items": self.entries})
        arrays = [("keypoints", self.keypoints[:n], (self.chunk, *self.keypoints.shape[1:])),
                  ("detected", self.detected[:n], (self.chunk,)),
                  ("timestamps", self.timestamps[:n], (self.chunk,))]
        if self.depth is not None:
            arrays.append((DEPTH_ARRAY, self.depth[:n], (self.chunk, self.depth.shape[1])))
        for name, data, chunks in arrays:
            group.create_array(name, data=data, chunks=chunks, shards=data.shape, **array_options())


def commit_pack(output: StageOutput, tmp: Path, builder: KeypointPackBuilder, replaces: Iterable[str] = ()) -> str:
    """Write `builder`'s pack under `tmp`, move it into place, then remove the loose item folders it `replaces`
    (each with one rename); returns the pack's name. Raises StoreError when the store cannot be written: a half
    pack is removed, and what was not yet replaced stays readable as it was."""
    pack = new_pack_name()
    try:
        builder.write(tmp / pack)
        kill_point("pack.written")
        output.commit_pack(tmp / pack, pack)
        kill_point("pack.committed")
        for name in replaces:
            output.remove_item(name, tmp)
    except OSError as e:
        output.discard(tmp / pack)
        raise StoreError(f"{output.path}: cannot write keypoint pack {pack} ({e.strerror or e})") from e
    return pack


def _read_loose(output: StageOutput, name: str, attrs: dict) -> tuple[np.ndarray, ...]:
    """keypoints, detected, timestamps and depth (None for an item without) of a loose item."""
    group = zarr.open_group(output.item_path(name), mode="r")
    depth = group[DEPTH_ARRAY][:] if attrs.get("depth") else None
    return group["keypoints"][:], group["detected"][:], group["timestamps"][:], depth


def _read_packed(output: StageOutput, entry: PackedItem, groups: dict) -> tuple[np.ndarray, ...]:
    """keypoints, detected, timestamps and depth (None for an item without) of a packed item."""
    if entry.pack not in groups:
        groups[entry.pack] = zarr.open_group(output.items_dir / entry.pack, mode="r")
    group = groups[entry.pack]
    lo, hi = entry.offset, entry.offset + entry.num_frames
    depth = group[DEPTH_ARRAY][lo:hi] if entry.attrs.get("depth") else None
    return group["keypoints"][lo:hi], group["detected"][lo:hi], group["timestamps"][lo:hi], depth


def compact(output: StageOutput, tmp: Path, candidates: Iterable[str] | None = None, *,
            owns: Callable[[str], bool] = lambda name: True, pack_items: int = PACK_ITEMS,
            pack_frames: int = PACK_FRAMES, long_frames: int = LONG_FRAMES) -> int:
    """Copy short loose items into packs and remove the loose copies; returns the number of packs written.

    Args:
        output: A keypoint stage output (the caller holds the store lock for it).
        tmp: The writer's temporary folder (packs are built there, then committed).
        candidates: Loose items to pack (default: every loose item `owns` accepts).
        owns: Which names this writer may touch (its shard's).

    When there is something to pack, the live items of small packs (under half full in items and frames, every
    item owned) are packed with it, so runs that add a few items each keep at most one small pack rather than
    many. Packs whose every item is superseded are removed, if `owns` accepts every item they hold. With nothing
    to pack or remove nothing is written, so a re-run that does no work writes nothing. Raises StoreError when the
    store cannot be written; the store stays valid (what was not yet packed stays loose).
    """
    index = KeypointIndex(output)
    wanted = index.loose if candidates is None else {safe_name(n) for n in candidates} & index.loose
    sources: list[tuple[str, PackedItem | None, dict]] = []  # (name, packed copy or None when loose, attributes)
    for name in sorted(wanted):
        attrs = index.attributes(name) if owns(name) else None
        if attrs is not None and missing(output.item_path(name), arrays_of(attrs)) is not None:
            continue  # damaged: it stays loose (and not done), so the next run of its stage redoes it
        if attrs is not None and 0 < int(attrs.get("num_frames", 0)) < min(long_frames, pack_frames):
            sources.append((name, None, attrs))
    # Every item superseded: removed at the end, if this writer owns all of it. Another shard's pack is never
    # touched: between committing a pack and removing the loose copies it packed, that shard's pack has no live item
    # (its loose copies still count), and retiring it then would lose those items once their loose copies go.
    retired = [pack for pack, held in index.packs.items() if not index.live(pack) and all(owns(n) for n in held)]
    if sources:  # small packs join what is packed anyway, so that they do not pile up
        for pack, held in index.packs.items():
            live = index.live(pack)
            if (live and len(live) < pack_items // 2 and all(owns(n) for n in held)
                    and sum(index.packed[n].num_frames for n in live) < pack_frames // 2):
                sources.extend((n, index.packed[n], index.packed[n].attrs) for n in live)
                retired.append(pack)

    groups: dict = {}
    builder: KeypointPackBuilder | None = None
    loose_in_builder: list[str] = []
    written = 0

    def flush() -> None:
        nonlocal builder, written
        if builder is None or not len(builder):
            return
        commit_pack(output, tmp, builder, loose_in_builder)
        loose_in_builder.clear()
        builder = None
        written += 1

    for name, packed, attrs in sources:
        try:
            arrays = _read_packed(output, packed, groups) if packed else _read_loose(output, name, attrs)
        except ValueError as e:
            if not is_checksum_error(e):
                raise
            where = output.items_dir / (packed.pack if packed else name)
            raise StoreError(f"{where}: damaged (a chunk fails its checksum); run `dualnet verify --repair`, then "
                             "re-run the stage to redo its items") from None
        t, v = arrays[0].shape[:2]
        depth = arrays[3] is not None
        if builder is not None and (len(builder) >= pack_items or not builder.fits(attrs["layout"], v,
                                                                                     arrays[0].dtype, t, depth)):
            flush()
        if builder is None:
            builder = KeypointPackBuilder(attrs["layout"], attrs["keypoint_names"], str(arrays[0].dtype),
                                          capacity=pack_frames, depth=depth)
        builder.add(name, attrs, *arrays)
        if packed is None:
            loose_in_builder.append(name)
    flush()
    for pack in retired:
        try:
            output.remove_item(pack, tmp)
        except OSError as e:
            raise StoreError(f"{output.path}: cannot remove superseded keypoint pack {pack} ({e.strerror or e})"
                             ) from e
    return written


class PackWriter:
    """Writes items straight into packs, for writers that hold whole items in memory (`import`): no loose folder
    first. A killed run loses at most the pack in progress. Call `finish` at the end.

    Args:
        output: A keypoint stage output (the caller holds the store lock for it).
        tmp: The writer's temporary folder.
        dtype: Stored keypoint dtype.
    """

    def __init__(self, output: StageOutput, tmp: Path, dtype: str = "float32", pack_items: int = PACK_ITEMS):
        self.output, self.tmp, self.dtype, self.pack_items = output, tmp, dtype, pack_items
        self.builder: KeypointPackBuilder | None = None
        self.packs = 0

    def add(self, name: str, attrs: dict, keypoints: np.ndarray, detected: np.ndarray,
            timestamps: np.ndarray, depth: np.ndarray | None = None) -> None:
        """Queue one item (attributes as `keypoint_items.item_attrs` makes them, ``depth: true`` with a depth
        array): keypoints (T, V, 3), detected (T,), timestamps (T,), depth (T, V) or None. It is in the store once
        its pack is written (every `pack_items`, and at `finish`)."""
        keypoints = np.asarray(keypoints).astype(self.dtype)
        check_depth(depth, keypoints)
        if bool(attrs.get("depth")) != (depth is not None):
            raise ValueError(f"item {name!r}: its attributes say depth {bool(attrs.get('depth'))}, but a depth "
                             f"array is {'missing' if depth is None else 'given'}")
        depth = None if depth is None else np.asarray(depth, np.float32)
        t, v = keypoints.shape[:2]
        if self.builder is not None and (len(self.builder) >= self.pack_items
                                         or not self.builder.fits(attrs["layout"], v, keypoints.dtype, t,
                                                                  depth is not None)):
            self.flush()
        if self.builder is None:
            self.builder = KeypointPackBuilder(attrs["layout"], attrs["keypoint_names"], self.dtype,
                                               capacity=max(PACK_FRAMES, t), depth=depth is not None)
        self.builder.add(safe_name(name), {**attrs, "num_frames": t}, keypoints, np.asarray(detected, bool),
                         np.asarray(timestamps, np.float64), depth)

    def flush(self) -> None:
        """Write and commit the pack in progress, if any."""
        if self.builder is None or not len(self.builder):
            return
        names = [entry["name"] for entry in self.builder.entries]
        # a loose copy would count over the packed one (a store written before packs existed): it goes
        commit_pack(self.output, self.tmp, self.builder, names)
        for name in names:
            self.output.clear_failure(name)
        self.builder = None
        self.packs += 1

    def finish(self) -> None:
        """Write the last pack, then merge small packs and remove superseded ones (`compact`)."""
        self.flush()
        self.packs += compact(self.output, self.tmp, (), pack_items=self.pack_items)


class Compactor:
    """Packs a writer's finished items as they come: every `pack_items` new items, and the rest at `finish`."""

    def __init__(self, output: StageOutput, tmp: Path, owns: Callable[[str], bool] = lambda name: True,
                 pack_items: int = PACK_ITEMS):
        self.output, self.tmp, self.owns, self.pack_items = output, tmp, owns, pack_items
        self.pending: list[str] = []
        self.packs = 0

    def added(self, name: str) -> None:
        """Item `name` was committed (loose)."""
        self.pending.append(name)
        if len(self.pending) >= self.pack_items:
            self.packs += compact(self.output, self.tmp, self.pending, owns=self.owns, pack_items=self.pack_items)
            self.pending.clear()

    def finish(self) -> None:
        """Pack every loose item this writer owns (this run's, and any a killed run or an older store left)."""
        self.packs += compact(self.output, self.tmp, None, owns=self.owns, pack_items=self.pack_items)
        self.pending.clear()


def done_keypoint_items(output: StageOutput) -> list[str]:
    """The finished items of a keypoint output (`extract`, `import`): undamaged loose items and the items of
    undamaged packs."""
    index = KeypointIndex(output)
    loose = {n for n in index.loose if not damaged(output.item_path(n))}
    return sorted(loose | index.packed.keys())


KEYPOINT_FORMAT = "keypoint-items"
register_output_format(KEYPOINT_FORMAT, OutputFormat(done_keypoint_items))
