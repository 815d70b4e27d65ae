"""Video decoding with PyAV: frames as RGB arrays, and every way a file can be bad as a one-line InputError."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipelines.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


@dataclass(frozen=True)
class VideoInfo:
    """What the container declares about its first video stream."""

    path: str
    width: int
    height: int
    fps: float
    declared_frames: int  # 0 when the container does not say


def _open(path: str | Path) -> av.container.InputContainer:
    path = str(path)
    if not os.path.exists(path):
        raise InputError(path, "file not found")
    if os.path.isdir(path):
        raise InputError(path, "is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise InputError(path, "empty file (0 bytes)")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise InputError(path, f"not a readable video ({_reason(e)})") from None
    if not container.streams.video:
        container.close()
        raise InputError(path, "no video stream")
    return container


def _reason(e: Exception) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return text.split(":")[0].strip() if text else type(e).__name__


def _info(path: str | Path, stream: av.video.stream.VideoStream) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or Fraction(0)
    return VideoInfo(str(path), stream.codec_context.width, stream.codec_context.height, float(rate),
                     int(stream.frames or 0))


def probe(path: str | Path) -> VideoInfo:
    """Read the container header only (no decoding)."""
    with _open(path) as container:
        return _info(path, container.streams.video[0])


def iter_frames(path: str | Path) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(time_s, rgb)`` for every frame, `rgb` of shape (H, W, 3) uint8.

    Raises InputError when decoding fails midway, when no frame decodes, or when fewer frames decode than the
    container declares (a truncated file).
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        info = _info(path, stream)
        stream.thread_type = "AUTO"
        n = 0
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else (n / info.fps if info.fps else float(n))
                yield t, frame.to_ndarray(format="rgb24")
                n += 1
        except av.error.FFmpegError as e:
            raise InputError(path, f"decoding failed after {n} frames ({_reason(e)})") from None
    if n == 0:
        raise InputError(path, "no frames could be decoded")
    if info.declared_frames and n < info.declared_frames:
        raise InputError(path, f"truncated video: decoded {n} of {info.declared_frames} declared frames")


def regular_timestamps(times: list[float], fps: float) -> np.ndarray:
    """Frame times in seconds, made trustworthy.

    Containers without presentation timestamps (AVI with B-frames) report guessed, out-of-order ones although the
    frames decode in display order; then the times are rebuilt from the frame index and the frame rate.
    """
    t = np.asarray(times, dtype=np.float64)
    if len(t) > 1 and fps > 0 and not np.all(np.diff(t) > 0):
        t = t[0] + np.arange(len(t)) / fps
    return t
