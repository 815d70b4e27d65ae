"""Cutting labelled segments out of long videos (iMiGUE's press conferences) into clip files of their own, so that
every later stage treats them as MA-52 treats its clips.

Each source video is decoded once, in order, and every segment of it is written as ``<clip_id>.mp4`` (H.264,
CRF 17, the source's colour tags and display matrix kept) under a temporary name, then renamed: a killed run
leaves no half clip. A re-run skips clips already cut from a source with the same content fingerprint (``cut.json``
records them).
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.sidedata.sidedata import Type

from pipelines.data.datasets import Clip
from pipelines.errors import DualnetError, InputError
from pipelines.hashing import hash_file
from pipelines.store import write_json_atomic

VERSION = 2  # recorded with each cut clip: 2 = the source's frame rate and rotation kept (1 wrote wrong rates)
CRF = "17"  # visually lossless for H.264: the cut must not degrade what the pose model and the tubes see


def source_path(clip: Clip) -> Path:
    """The clip's source video; a name given without a suffix is looked up as ``.mp4``."""
    path = Path(clip.source)
    if not path.exists() and not path.suffix and path.with_suffix(".mp4").exists():
        return path.with_suffix(".mp4")
    return path


def cut_segments(clips: list[Clip], out_dir: str | Path, on_clip=None) -> tuple[list[Path], dict[str, str]]:
    """Write every segment clip of `clips` (those with a frame range) to `out_dir`.

    Returns the clip files (cut now or before) and the failures (clip id -> one-line reason naming the file).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record_path = out_dir / "cut.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    by_source: dict[Path, list[Clip]] = defaultdict(list)
    for clip in clips:
        by_source[source_path(clip)].append(clip)
    files, failed = [], {}
    for source, segments in sorted(by_source.items()):
        try:
            fingerprint = f"v{VERSION}:{hash_file(source)}"  # clips cut by an older version are cut again
        except OSError as e:
            for clip in segments:
                failed[clip.clip_id] = str(InputError(source, e.strerror or "cannot be read"))
            continue
        wanted = [c for c in segments
                  if not (record.get(c.clip_id) == fingerprint and (out_dir / f"{c.clip_id}.mp4").exists())]
        try:
            _cut_one(source, wanted, out_dir)
        except DualnetError as e:
            for clip in wanted:
                failed[clip.clip_id] = str(e)
        for clip in segments:
            if clip.clip_id not in failed:
                record[clip.clip_id] = fingerprint
                files.append(out_dir / f"{clip.clip_id}.mp4")
                if on_clip is not None:
                    on_clip(clip.clip_id)
        write_json_atomic(record_path, record)
    return files, failed


def _cut_one(source: Path, segments: list[Clip], out_dir: Path) -> None:
    """One decode pass over `source`, writing each segment [start, end) as it goes."""
    if not segments:
        return
    open_writers: dict[str, tuple] = {}
    last_end = max(c.end if c.end is not None else 1 << 62 for c in segments)
    try:
        with av.open(str(source)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or 25
            index = -1
            for index, frame in enumerate(container.decode(stream)):
                for clip in segments:
                    start, end = clip.start or 0, clip.end if clip.end is not None else 1 << 62
                    if index == start:
                        open_writers[clip.clip_id] = _open_writer(out_dir, clip.clip_id, frame, rate,
                                                                  stream.codec_context)
                    if start <= index < end and clip.clip_id in open_writers:
                        _, out, vstream = open_writers[clip.clip_id]
                        image = frame.reformat(width=vstream.width, height=vstream.height, format="yuv420p")
                        # frame i of the cut at i / rate s: the source's time base would set the clip's frame rate
                        image.pts, image.time_base = index - start, Fraction(1) / rate
                        for packet in vstream.encode(image):
                            out.mux(packet)
                    if index == end - 1 and clip.clip_id in open_writers:
                        _close_writer(*open_writers.pop(clip.clip_id))
                if index >= last_end:
                    break
    except av.error.FFmpegError as e:
        raise InputError(source, f"decoding failed while cutting segments ({e})") from None
    finally:
        for tmp, out, _ in open_writers.values():  # segments past the end of the video: not cut
            out.close()
            tmp.unlink(missing_ok=True)
    short = [c.clip_id for c in segments if not (out_dir / f"{c.clip_id}.mp4").exists()]
    if short:
        raise InputError(source, f"has {index + 1} frames; segment(s) {', '.join(short[:3])} reach past its end")


def _open_writer(out_dir: Path, clip_id: str, frame, rate, source_context) -> tuple:
    tmp = out_dir / f".{clip_id}.{uuid.uuid4().hex[:8]}.mp4"
    out = av.open(str(tmp), "w")
    stream = out.add_stream("libx264", rate=rate)
    stream.width, stream.height = frame.width // 2 * 2, frame.height // 2 * 2
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": CRF, "preset": "veryfast"}
    for tag in ("color_range", "colorspace", "color_primaries", "color_trc"):
        setattr(stream.codec_context, tag, getattr(source_context, tag))
    matrix = frame.side_data.get(Type.DISPLAYMATRIX)
    if matrix is not None:  # a phone video's rotation: the frames are stored as they came, so it still applies
        stream.set_display_matrix(np.frombuffer(bytes(matrix), dtype=np.int32).tolist())
    return tmp, out, stream


def _close_writer(tmp: Path, out, stream) -> None:
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    tmp.replace(tmp.with_name(tmp.name[1:].rsplit(".", 2)[0] + ".mp4"))
