"""Loading cached keypoints: as numpy arrays for the model, as pandas DataFrames for analysis.

    >>> from pipelines.formats.keypoints import KeypointSet
    >>> kps = KeypointSet("cache")              # the outputs of `dualnet extract` with default parameters
    >>> kps.names()                             # the videos in the store
    >>> clip = kps.load("B1_nodding__0019_02_0078")
    >>> clip.keypoints.shape                    # (T, V, 3): x, y in pixels, score
    >>> clip.depth                              # (T, V) z of a 3D source (SHREC'17), None for 2D keypoints
    >>> df = kps.dataframe()                    # video, frame, keypoint, x, y, score, detected
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from pipelines.errors import StoreError
from pipelines.formats.keypoint_packs import DEPTH_ARRAY, KEYPOINT_ARRAYS, KeypointIndex, PackFrames, arrays_of
from pipelines.formats.params import EXTRACT_STAGE, IMPORT_STAGE, ExtractParams, ImportParams, extract_key, import_key
from pipelines.store import StageOutput, Store, safe_name
from pipelines.store.integrity import is_checksum_error, missing

KEYPOINT_STAGES = (EXTRACT_STAGE, IMPORT_STAGE)
MERGE_GAP = 64  # frames: windows of one pack closer than this are read together (2 chunks cost less than a read)


@dataclass
class VideoKeypoints:
    """One video's keypoints as stored by `extract`."""

    name: str
    keypoints: np.ndarray  # (T, V, 3) x, y in pixels, score; NaN where the subject is not detected
    detected: np.ndarray  # (T,) bool
    timestamps: np.ndarray  # (T,) seconds from the start of the video
    fps: float
    width: int | None  # None where the source format does not record it (pose pickles)
    height: int | None
    layout: str
    keypoint_names: list[str]
    depth: np.ndarray | None = None  # (T, V) z in the units of x, y (NaN where absent); None: a 2D source


class KeypointSet:
    """The keypoints of one `extract` or `import` output (one key) in a store.

    Args:
        store: A Store or its root; default ``DUALNET_STORE`` or ``cache/``.
        params: The ExtractParams or ImportParams whose output to read (default: `dualnet extract`'s defaults).
        key: Read this stage key instead (e.g. from ``dualnet status``); overrides `params`.
    """

    def __init__(self, store: Store | str | Path | None = None, params: ExtractParams | ImportParams | None = None,
                 key: str | None = None):
        self.store = store if isinstance(store, Store) else Store(store)
        if key is not None:
            found = [self.store.stage(st, key) for st in KEYPOINT_STAGES
                     if (self.store.root / st / key / "stage.json").exists()]
            self.output: StageOutput = found[0] if found else self.store.stage(EXTRACT_STAGE, key)
        elif isinstance(params, ImportParams):
            self.output = self.store.stage(IMPORT_STAGE, import_key(params))
        else:
            self.output = self.store.stage(EXTRACT_STAGE, extract_key(params or ExtractParams()))
        self.manifest = self.output.manifest()  # raises StoreError naming the store when absent
        self.index = KeypointIndex(self.output)
        self._packs: dict[str, dict[str, zarr.Array]] = {}  # array handles, opened once per pack
        self._frames: dict[tuple[str, str], PackFrames | None] = {}  # direct readers of packs' arrays, opened once
        self.segments: dict[str, tuple[str, int, int]] = {}  # clip -> (item, start, end), see `cut`

    def cut(self, segments: dict[str, tuple[str, int, int]]) -> KeypointSet:
        """This output seen as clips cut from its items (iMiGUE's segments of long recordings): ``{clip: (item,
        start, end)}``, frames [start, end) numbered as in the source (an OpenPose import's items start at their
        first file's frame number, the ``first_frame`` attribute). `names` then lists the clips whose item is held,
        `load`, `attributes` and `span` take clip names."""
        view = copy.copy(self)
        view.segments = {safe_name(clip): (safe_name(item), int(start), int(end))
                         for clip, (item, start, end) in segments.items()}
        return view

    def span(self, name: str) -> tuple[str, int, int]:
        """(item, first frame, end frame) in the item's stored frames: a clip's segment, or a whole item."""
        name = safe_name(name)
        if name in self.segments:
            item, start, end = self.segments[name]
            first = int(self.attributes(item).get("first_frame") or 0)
            return item, start - first, end - first
        return name, 0, int(self.attributes(name)["num_frames"])

    def keypoint_window(self, name: str, start: int, end: int) -> np.ndarray:
        """(end - start, V, 3) keypoints of frames [start, end) of one item, reading that array alone."""
        return self.keypoint_windows([(name, start, end)])[0]

    def keypoint_windows(self, spans: list[tuple[str, int, int]], array: str = "keypoints"
                         ) -> list[np.ndarray | None]:
        """`keypoint_window` of each (item, start, end), in that order, with one read for windows that lie close
        together in one pack (a zarr read costs ~2-5 ms whatever its size): the frames between windows fewer than
        `MERGE_GAP` apart are read and dropped. Packs are read straight from their shard file (`PackFrames`, ~0.1 ms
        a chunk of 32 frames against zarr's ~0.4 ms), anything else through zarr. Views into the blocks read.
        `array` "depth": the (T, V) depth windows instead, None for an item without depth."""
        out: list[np.ndarray | None] = [None] * len(spans)
        groups: dict[int, list] = {}  # one array (a pack's, or a loose item's) -> [source, (first, end, i, name)...]
        for i, (name, start, end) in enumerate(spans):
            arrays, offset, total, _ = self._arrays(name)
            if not 0 <= start < end <= total:
                raise StoreError(f"{self.output.item_path(name)}: frames [{start}, {end}) are outside its {total} "
                                 "frames")
            if array not in arrays:  # depth of a 2D item
                continue
            if id(arrays[array]) not in groups:
                groups[id(arrays[array])] = [(arrays[array], self._pack_frames(name, array))]
            groups[id(arrays[array])].append((offset + start, offset + end, i, name))
        for source, *windows in groups.values():
            windows.sort()
            run = [windows[0]]
            lo, hi = windows[0][:2]
            for window in [*windows[1:], None]:
                if window is not None and window[0] - hi < MERGE_GAP:
                    run.append(window)
                    hi = max(hi, window[1])
                    continue
                try:
                    block = self._read(source, lo, hi, run[0][3])
                    for first, end, i, _ in run:
                        out[i] = block[first - lo:end - lo]
                except StoreError:  # a damaged chunk: read the windows one by one to name the item it is in
                    for first, end, i, name in run:
                        out[i] = self._read(source, first, end, name)
                if window is not None:
                    run, (lo, hi) = [window], window[:2]
        return out

    def _pack_frames(self, name: str, array: str = "keypoints") -> PackFrames | None:
        """The direct reader of `array` of the pack that holds item `name` (None: a loose item, or a pack zarr must
        read)."""
        entry = self.index.locate(name)
        if entry is None:
            return None
        if (entry.pack, array) not in self._frames:
            self._frames[entry.pack, array] = PackFrames.open(self.output.items_dir / entry.pack / array)
        return self._frames[entry.pack, array]

    def _read(self, source: tuple[zarr.Array, PackFrames | None], lo: int, hi: int, name: str) -> np.ndarray:
        """Frames [lo, hi) of an array (read directly when it can be), a failing checksum as a StoreError naming
        item `name`."""
        array, frames = source
        try:
            if frames is not None:
                try:
                    return frames.read(lo, hi)
                except OSError:
                    pass  # (a pack removed meanwhile) zarr says what is wrong
            return array[lo:hi]
        except ValueError as e:
            if not is_checksum_error(e):
                raise
            raise StoreError(f"{self.output.path}: keypoints of {name!r} are damaged (a chunk fails its checksum); "
                             "`dualnet verify --repair` removes them, then re-run the stage to redo them") from None

    def __getstate__(self) -> dict:
        """Pickles without its open array handles (a worker process opens its own)."""
        return {**self.__dict__, "_packs": {}, "_frames": {}}

    def refresh(self) -> None:
        """Re-read where items live (after another process wrote or packed items)."""
        self.index = KeypointIndex(self.output)
        self._packs.clear()
        self._frames.clear()

    def names(self) -> list[str]:
        """Item names (video stems) of the finished videos, sorted (of a `cut` view: the clips whose item is held)."""
        if self.segments:
            return sorted(clip for clip, (item, _, _) in self.segments.items() if item in self.index)
        return self.index.names()

    def attributes(self, name: str) -> dict:
        """One item's attributes (layout, keypoint names, fps, frame size, num_frames, source name, path and
        fingerprint) without reading its arrays (of a `cut` view's clip: its item's)."""
        name = self.segments[safe_name(name)][0] if safe_name(name) in self.segments else name
        attrs = self.index.attributes(name)
        if attrs is None:
            raise StoreError(f"{self.output.path}: no keypoints for video {name!r}")
        return attrs

    def _arrays(self, name: str) -> tuple[dict[str, zarr.Array], int, int, dict]:
        """(arrays, first frame, frame count, attributes) of one item, loose or packed."""
        for attempt in range(2):
            entry = self.index.locate(name)
            try:
                if entry is not None:
                    if entry.pack not in self._packs:
                        group = zarr.open_group(self.output.items_dir / entry.pack, mode="r")
                        # a pack of 3D items holds depth (`KeypointIndex` counts a pack missing it as damaged)
                        self._packs[entry.pack] = {a: group[a] for a in KEYPOINT_ARRAYS + (DEPTH_ARRAY,)
                                                   if a != DEPTH_ARRAY or a in group}
                    arrays = self._packs[entry.pack]
                    if entry.attrs.get("depth") and DEPTH_ARRAY not in arrays:
                        raise StoreError(f"{self.output.items_dir / entry.pack}: damaged, the depth array of "
                                         f"{name!r} is missing; `dualnet verify --repair` removes the pack so that "
                                         "the stage that wrote it redoes its items")
                    return arrays, entry.offset, entry.num_frames, dict(entry.attrs)
                if safe_name(name) in self.index.loose:
                    path = self.output.item_path(name)
                    if not path.is_dir():
                        raise FileNotFoundError(path)  # packed by a writer since the index was read: refresh
                    problem = missing(path, arrays_of(self.index.attributes(name)))
                    if problem is not None:
                        raise StoreError(f"{path}: damaged, {problem}; re-run the stage that wrote it to redo it")
                    group = zarr.open_group(path, mode="r")
                    attrs = dict(group.attrs)
                    arrays = {a: group[a] for a in KEYPOINT_ARRAYS + ((DEPTH_ARRAY,) if attrs.get("depth") else ())}
                    return arrays, 0, arrays["detected"].shape[0], attrs
            except FileNotFoundError:
                pass  # packed or repacked by a writer since the index was read
            if attempt == 0:
                self.refresh()
        damage = self.index.damage(name)
        if damage is not None:
            raise StoreError(f"{damage}; re-run the stage that wrote it to redo its items")
        raise StoreError(f"{self.output.path}: no keypoints for video {name!r}")

    def has_depth(self, names: list[str]) -> bool:
        """Whether every one of the items (or a `cut` view's clips) `names` has depth (a 3D source), from their
        attributes alone; False for no names."""
        return bool(names) and all(self.attributes(n).get("depth") for n in names)

    def detected(self, name: str) -> np.ndarray:
        """(T,) whether the subject was found in each frame of one video (reads only that array)."""
        arrays, offset, total, _ = self._arrays(name)
        try:
            return arrays["detected"][offset:offset + total]
        except ValueError as e:
            if not is_checksum_error(e):
                raise
            raise StoreError(f"{self.output.path}: keypoints of {name!r} are damaged (a chunk fails its checksum); "
                             "`dualnet verify --repair` removes them, then re-run the stage to redo them") from None

    def load(self, name: str, start: int | None = None, end: int | None = None) -> VideoKeypoints:
        """Arrays and metadata of one video, or of frames [start, end) of it (a clip cut from a long recording).

        Only the chunks covering the range are read. A range outside the video is an error naming both. A `cut`
        view's clip name gives that clip's frames.
        """
        if safe_name(name) in self.segments and start is None and end is None:
            item, start, end = self.span(name)
            return self.load(item, start, end)
        arrays, offset, total, attrs = self._arrays(name)
        lo = 0 if start is None else start
        hi = total if end is None else end
        if not 0 <= lo < hi <= total:
            raise StoreError(f"{self.output.item_path(name)}: frames [{lo}, {hi}) are outside its {total} frames")
        window = slice(offset + lo, offset + hi)
        try:
            keypoints, detected, timestamps = (arrays[a][window] for a in KEYPOINT_ARRAYS)
            depth = arrays[DEPTH_ARRAY][window] if DEPTH_ARRAY in arrays else None
        except ValueError as e:
            if not is_checksum_error(e):
                raise
            raise StoreError(f"{self.output.path}: keypoints of {name!r} are damaged (a chunk fails its checksum); "
                             "`dualnet verify --repair` removes them, then re-run the stage to redo them") from None
        return VideoKeypoints(
            name=safe_name(name),
            keypoints=keypoints,
            detected=detected,
            timestamps=timestamps,
            fps=float(attrs["fps"]),
            width=attrs["width"],
            height=attrs["height"],
            layout=attrs["layout"],
            keypoint_names=list(attrs["keypoint_names"]),
            depth=depth,
        )

    def load_clip(self, clip) -> VideoKeypoints:
        """The keypoints of a dataset clip (`pipelines.data.datasets.Clip`): its source item, cut to its frame range."""
        return self.load(Path(clip.source).stem, clip.start, clip.end)

    def dataframe(self, names: list[str] | str | None = None) -> pd.DataFrame:
        """Long table, one row per (video, frame, keypoint).

        Columns: ``video`` (categorical), ``frame`` (int32), ``keypoint`` (categorical, in layout order), ``x``,
        ``y``, ``score`` (float32), ``detected`` (bool, whether the subject was found in that frame); and ``z``
        (float32, after ``y``) when any of the videos has depth (NaN in the rows of those that have none).
        """
        if isinstance(names, str):
            names = [names]
        names = self.names() if names is None else [safe_name(n) for n in names]
        parts, deep = [], False
        for name in names:
            clip = self.load(name)
            t, v, _ = clip.keypoints.shape
            flat = clip.keypoints.reshape(t * v, 3).astype(np.float32)
            z = np.full(t * v, np.nan, np.float32) if clip.depth is None else clip.depth.reshape(t * v)
            parts.append(pd.DataFrame({
                "video": np.full(t * v, name, dtype=object),
                "frame": np.repeat(np.arange(t, dtype=np.int32), v),
                "keypoint": pd.Categorical.from_codes(np.tile(np.arange(v), t), categories=clip.keypoint_names),
                "x": flat[:, 0],
                "y": flat[:, 1],
                "z": z.astype(np.float32),
                "score": flat[:, 2],
                "detected": np.repeat(clip.detected.astype(bool), v),
            }))
            deep = deep or clip.depth is not None
        if not parts:
            return pd.DataFrame({
                "video": pd.Categorical([]), "frame": np.array([], np.int32), "keypoint": pd.Categorical([]),
                "x": np.array([], np.float32), "y": np.array([], np.float32), "score": np.array([], np.float32),
                "detected": np.array([], bool),
            })
        df = pd.concat(parts, ignore_index=True)
        df["video"] = pd.Categorical(df["video"], categories=names)
        return df if deep else df.drop(columns="z")  # 2D data: the columns as they always were


def keypoint_source(store: Store, names: list[str], key: str | None = None) -> KeypointSet:
    """The keypoint output (`extract` or `import`) that holds the most of the clips `names`: what a pose-only run
    trains on when no tubes are needed. `key` picks one output; ties go to the current ref, then the newest.
    None of the clips in any output is a StoreError saying how to get keypoints."""
    if key is not None:
        return KeypointSet(store, key=key)
    wanted = {safe_name(n) for n in names}
    refs = store.refs()
    best, best_rank = None, None
    for output in store.outputs():
        if output.stage not in KEYPOINT_STAGES:
            continue
        held = len(wanted & set(KeypointIndex(output).names()))
        rank = (held, refs.get(output.stage) == output.key, (output.path / "stage.json").stat().st_mtime)
        if held and (best_rank is None or rank > best_rank):
            best, best_rank = output, rank
    if best is None:
        raise StoreError(f"{store.root}: no keypoint output holds any of the dataset's {len(wanted)} clips: run "
                         "`dualnet import` (pose files) or `dualnet extract` (videos) into this store first")
    return KeypointSet(store, key=best.key)


def keypoint_layout(keypoints: KeypointSet) -> str:
    """The layout of a keypoint output, as a later process can find it again: the layout an import was given (a
    name, or a layout .json path), else its first item's layout name (every item of one output shares it)."""
    given = keypoints.manifest.get("params", {}).get("layout") if keypoints.output.stage == IMPORT_STAGE else None
    if given:
        return str(Path(given).resolve()) if str(given).endswith(".json") else str(given)
    names = keypoints.names()
    if not names:
        raise StoreError(f"{keypoints.output.path}: no items")
    return keypoints.attributes(names[0])["layout"]
