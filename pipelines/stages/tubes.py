"""The `tubes` stage: from each clip's keypoints, one crop tube per body-part entity over sampled frames, cut once
from the video and cached, so training never decodes video again.

Storage: clips are written in *packs* of up to `pack_size` clips, one zarr group per pack whose arrays are sharded
(one file per array per pack, one inner chunk per clip): a 20,000-clip dataset is a few thousand files, and reading
one clip reads only its chunk. A pack is written under ``tmp/`` and moved into ``items/`` whole, so a killed run
loses at most the pack in progress; a re-run skips every clip already in a pack with the same source fingerprint.
The pack format and its reader, `TubeSet`, are `pipelines.formats.tube_packs`.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualnet.entities import entity_boxes, get_entity_set, global_window, window_transform
from dualnet.layouts import get_layout
from pipelines.data.crops import crop_boxes, cut_global, sample_indices
from pipelines.errors import DualnetError, InputError, StoreError
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.params import TubeParams, tubes_spec
from pipelines.formats.tube_packs import (
    ARRAYS,
    ClipTubes,
    TubePack,
    new_pack_name,
    pack_index,
    write_pack,
)
from pipelines.io.video import iter_frames
from pipelines.kill_points import kill_point
from pipelines.progress import Progress
from pipelines.store import StageReport, Store
from pipelines.store.integrity import missing


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
    window = global_window(clip.keypoints, np.asarray(layout.body), clip.width, clip.height, params.global_view)
    for j, i in enumerate(index):
        tubes[j], padding[j] = crop_boxes(decoded[int(i)], boxes[i], params.size)
        frames[j] = cut_global(decoded[int(i)], window, params.global_size)
    arrays = {"tubes": tubes, "frames": frames, "boxes": boxes[index].astype(np.float32),
              "visible": visible[index], "padding": padding, "keypoints": clip.keypoints[index].astype(np.float32),
              "frame_index": index.astype(np.int32)}
    meta = {"name": name, "width": clip.width, "height": clip.height, "fps": clip.fps, "num_frames": t,
            "layout": clip.layout, "global_window": [int(v) for v in window],
            "global_view": list(window_transform(window, params.global_size))}
    return ClipTubes(name, arrays, meta)


@dataclass
class TubeReport(StageReport):
    """What one `run_tubes` call did, by clip name, and how many packs it wrote."""

    packs: int = 0


def run_tubes(store: Store | str | Path | None = None, params: TubeParams = TubeParams(),
              keypoints: KeypointSet | None = None, names: list[str] | None = None,
              video_root: str | Path | None = None, progress: Progress | None = None) -> TubeReport:
    """Cut and cache entity tubes for the clips of a keypoint output (default: `extract` with default parameters).

    Args:
        names: Only these clips (default: every clip of the keypoint output).
        video_root: Find each video as ``<video_root>/<source file name>`` instead of its recorded path (for a store
            moved to another machine).
    """
    store = store if isinstance(store, Store) else Store(store)
    progress = progress or Progress()
    started = time.perf_counter()
    keypoints = keypoints or KeypointSet(store)
    spec = tubes_spec(params, keypoints.output)
    report = TubeReport(spec.key)
    wanted = names if names is not None else keypoints.names()
    with store.run(spec) as run:
        output, tmp = run.output, run.tmp
        run.record_request(wanted)
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
        if report.skipped:
            progress.note(f"{len(report.skipped)} clip(s) already have tubes: skipped")
        progress.begin(f"tubes for {len(todo)} clip(s)", len(todo), "clips")
        pending = TubePack(params.pack_size)

        def flush() -> None:
            if not len(pending):
                return
            pack = new_pack_name()
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
                progress.advance()
                continue
            clip.meta["fingerprint"] = fingerprint
            pending.add(clip)
            kill_point("tubes.clip")
            progress.item(name, None)
            progress.advance()
            if len(pending) >= params.pack_size:
                flush()
        flush()
        for pack in output.item_names():  # damaged packs: their clips were redone above
            if missing(output.items_dir / pack, ARRAYS) is not None:
                output.remove_item(pack, tmp)
    report.seconds = time.perf_counter() - started
    return report


