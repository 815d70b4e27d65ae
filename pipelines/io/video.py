"""Video decoding with PyAV: frames as RGB arrays, and every way a file can be bad as a one-line InputError."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.sidedata.sidedata import Type
from av.video.reformatter import VideoReformatter

from pipelines.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


@dataclass(frozen=True)
class VideoInfo:
    """What the container declares about its first video stream; width and height as shown, upright."""

    path: str
    width: int
    height: int
    fps: float
    declared_frames: int  # 0 when the container does not say
    rotation: int  # 0, 90, 180 or 270: clockwise degrees that turn the stored frames upright (a phone's)


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


def _info(path: str | Path, stream: av.video.stream.VideoStream, rotation: int) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or Fraction(0)
    width, height = stream.codec_context.width, stream.codec_context.height
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(str(path), width, height, float(rate), int(stream.frames or 0), rotation)


def _rotation(path: str | Path, stream: av.video.stream.VideoStream, frame: av.VideoFrame) -> int:
    """Clockwise degrees (0, 90, 180 or 270) that turn `frame` upright.

    The display matrix phones write reaches PyAV only as side data of decoded frames (`frame.rotation` is its
    counter-clockwise angle); without one, the legacy `rotate` tag (clockwise, kept as a tag by Matroska and older
    FFmpeg builds) is read. Anything else, a mirrored matrix included, is an InputError rather than a picture on its
    side or flipped.
    """
    matrix = frame.side_data.get(Type.DISPLAYMATRIX)
    if matrix is not None:
        m = np.frombuffer(bytes(matrix), dtype=np.int32).astype(np.int64)  # 3x3 row-major, 16.16 fixed point
        if m[0] * m[4] - m[1] * m[3] < 0:
            raise InputError(path, "mirrored display matrix: only rotations by a multiple of 90 degrees are "
                                   "supported")
        degrees = -float(frame.rotation)
    else:
        tag = {k.lower(): v for k, v in stream.metadata.items()}.get("rotate", "0")
        try:
            degrees = float(tag)
        except ValueError:
            raise InputError(path, f"unreadable rotate tag {tag!r}") from None
    if degrees % 90:
        raise InputError(path, f"rotation of {degrees % 360:g} degrees: only multiples of 90 are supported")
    return int(degrees) % 360


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """(H, W, 3) stored -> (H', W', 3) as shown; np.rot90 turns counter-clockwise, hence the minus.

    C-contiguous: PyAV's array is a view of the decoder's frame, whose rows are padded (3,264 bytes for 1,080
    pixels), so it is copied (0.15 ms at 1080x1296). MediaPipe then takes the frame in 0.1 ms rather than 0.25, and
    the decoder's frame is freed where it was decoded (0.4-0.9 ms, in `DecodeAhead`'s thread), not by the reader.
    """
    return np.ascontiguousarray(np.rot90(rgb, -rotation // 90))


def probe(path: str | Path) -> VideoInfo:
    """Read the container header and decode the first frame, which carries the display matrix (~10 ms for 1080p).

    Raises InputError when the first frame does not decode or the rotation is not a multiple of 90 degrees.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as e:
            raise InputError(path, f"decoding failed after 0 frames ({_reason(e)})") from None
        if first is None:
            raise InputError(path, "no frames could be decoded")
        return _info(path, stream, _rotation(path, stream, first))


def declared_frames(path: str | Path) -> int:
    """The frame count the container declares (0 when it does not say), from the header only: for progress totals
    over many files, where `probe`'s decode of a first frame would double the time."""
    with _open(path) as container:
        return int(container.streams.video[0].frames or 0)


def iter_frames(path: str | Path) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(time_s, rgb)`` for every frame, `rgb` of shape (H, W, 3) uint8, upright: turned by the rotation the
    container records (`probe` reports it, and the upright H and W).

    Raises InputError when decoding fails midway, when no frame decodes, when fewer frames decode than the
    container declares (a truncated file), or when the rotation is not a multiple of 90 degrees.
    """
    frames = _decode(path)
    next(frames)  # the VideoInfo
    yield from frames


def _decode(path: str | Path) -> Iterator[VideoInfo | tuple[float, np.ndarray]]:
    """`iter_frames`'s frames, preceded by the video's VideoInfo (read from the first frame, as `probe` does)."""
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        # One converter for the video, on this thread: `frame.to_ndarray(format="rgb24")` builds a new one (a swscale
        # context with its own threads) for every frame. Same pixels; a 1080x1296 frame's decoding went from 3.4 to
        # 1.9 ms (bench_extract's breakdown), its colour conversion from 4-5 ms of CPU to 0.7.
        to_rgb = VideoReformatter()
        info: VideoInfo | None = None  # known from the first frame, which carries the display matrix
        n = 0
        try:
            for frame in container.decode(stream):
                if info is None:
                    info = _info(path, stream, _rotation(path, stream, frame))
                    yield info
                t = float(frame.time) if frame.time is not None else (n / info.fps if info.fps else float(n))
                rgb = to_rgb.reformat(frame, format="rgb24", threads=1).to_ndarray()
                yield t, _upright(rgb, info.rotation)
                n += 1
        except av.error.FFmpegError as e:
            raise InputError(path, f"decoding failed after {n} frames ({_reason(e)})") from None
    if info is None:
        raise InputError(path, "no frames could be decoded")
    if info.declared_frames and n < info.declared_frames:
        raise InputError(path, f"truncated video: decoded {n} of {info.declared_frames} declared frames")


_END = object()  # a video's last frame was handed over


class DecodeAhead:
    """Decodes `paths` one after another in a background thread, at most `depth` frames ahead of the reader, so the
    reader's work overlaps decoding (pose inference and PyAV's decoding both release the GIL) and the next video is
    opened while the last frames of the one before are still being read.

        with DecodeAhead(paths) as videos:
            for video in videos:  # a DecodedVideo per path, in order
                info = video.info()
                for t, rgb in video: ...

    Frames are those `iter_frames` yields, bit for bit, and so are its errors, raised where the frames stop. A video
    left unfinished is no longer decoded once the reader moves on. At most `depth` + 2 frames are held at once (the
    queue, the one being decoded, the reader's): decoding a frame takes ~2 ms and MediaPipe ~35, so 3 keep the
    reader fed, across the opening of the next video too.
    """

    def __init__(self, paths: list[str], depth: int = 3):
        self._paths = paths
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))  # (video index, VideoInfo | (t, rgb) | end)
        self._skipped = -1  # videos up to this index are no longer wanted
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="decode-ahead", daemon=True)

    def __enter__(self) -> DecodeAhead:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def __iter__(self) -> Iterator[DecodedVideo]:
        for index, path in enumerate(self._paths):
            yield DecodedVideo(self, index, path)
            self._skipped = index

    def _run(self) -> None:
        for index, path in enumerate(self._paths):
            frames = _decode(path)
            try:
                for item in frames:
                    if self._skipped >= index or not self._put((index, item)):
                        break
                else:
                    self._put((index, _END))
            except BaseException as e:  # noqa: BLE001 - handed to the reader, raised there
                self._put((index, e))
            finally:
                frames.close()
            if self._stop.is_set():
                return

    def _put(self, message: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _take(self, index: int):
        """The next item of video `index`, an earlier video's leftovers dropped; raises the video's error."""
        while True:
            at, item = self._queue.get()  # the thread hands over an end or an error for every video
            if at < index:
                continue
            if isinstance(item, BaseException):
                raise item
            return item


class DecodedVideo:
    """One video of a `DecodeAhead`: `info()` (what `probe` reports), then its ``(time_s, rgb)`` frames."""

    def __init__(self, ahead: DecodeAhead, index: int, path: str):
        self._ahead, self._index, self.path = ahead, index, path
        self._info: VideoInfo | None = None

    def info(self) -> VideoInfo:
        if self._info is None:
            self._info = self._ahead._take(self._index)
        return self._info

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        self.info()
        while (item := self._ahead._take(self._index)) is not _END:
            yield item


def regular_timestamps(times: list[float], fps: float) -> np.ndarray:
    """Frame times in seconds, made trustworthy.

    Containers without presentation timestamps (AVI with B-frames) report guessed, out-of-order ones although the
    frames decode in display order; then the times are rebuilt from the frame index and the frame rate.
    """
    t = np.asarray(times, dtype=np.float64)
    if len(t) > 1 and fps > 0 and not np.all(np.diff(t) > 0):
        t = t[0] + np.arange(len(t)) / fps
    return t
