"""Decoding real videos, and each kind of bad file as a one-line error naming it."""

from __future__ import annotations

import itertools

import av
import numpy as np
import pytest

from conftest import MA52_VIDEOS, OTHER_VIDEOS, requires_shared, shortest_clip
from pipelines.errors import InputError
from pipelines.io.video import DecodeAhead, iter_frames, probe, regular_timestamps

pytestmark = requires_shared


def test_probe_and_decode_real_clip():
    info = probe(shortest_clip())
    assert (info.width, info.height, info.fps, info.declared_frames) == (1080, 1296, 30.0, 50)
    frames = list(iter_frames(shortest_clip()))
    assert len(frames) == 50
    t, rgb = frames[10]
    assert rgb.shape == (1296, 1080, 3) and rgb.dtype == np.uint8 and t == pytest.approx(10 / 30)


@pytest.mark.parametrize("content, problem", [
    (b"", "empty file"),
    (b"not a video at all\n" * 100, "not a readable video"),
])
def test_bad_files(tmp_path, content, problem):
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        list(iter_frames(path))
    assert str(err.value).startswith(str(path)) and problem in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_directory(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        probe(tmp_path / "nope.mp4")
    with pytest.raises(InputError, match="is a directory"):
        probe(tmp_path)


def test_truncated_avi_is_detected(tmp_path):
    data = (OTHER_VIDEOS / "pyskl__ntu_sample.avi").read_bytes()
    path = tmp_path / "cut.avi"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"truncated video: decoded \d+ of 72 declared frames"):
        list(iter_frames(path))


def test_out_of_order_avi_timestamps_are_rebuilt():
    video = OTHER_VIDEOS / "pyskl__ntu_sample.avi"
    raw = [t for t, _ in iter_frames(video)]
    assert not np.all(np.diff(raw) > 0)  # the container's guessed times are out of order
    fixed = regular_timestamps(raw, probe(video).fps)
    np.testing.assert_allclose(np.diff(fixed), 1 / 30)
    np.testing.assert_allclose(regular_timestamps([0.0, 0.5, 1.0], 2.0), [0.0, 0.5, 1.0])


def test_frames_are_pyav_own_conversion_bit_for_bit():
    """`iter_frames` converts colour with one single-threaded swscale context a video, not PyAV's new one per frame
    (`frame.to_ndarray(format="rgb24")`, 6x the CPU): the pixels are the same, so the keypoints are too (a real
    1080x1296 clip and the 1920x1080 AVI)."""
    for video in (shortest_clip(), OTHER_VIDEOS / "pyskl__ntu_sample.avi"):
        with av.open(str(video)) as container:
            plain = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        ours = [rgb for _, rgb in iter_frames(video)]
        assert len(ours) == len(plain) and all(np.array_equal(a, b) for a, b in zip(ours, plain, strict=True))


def _assert_same_frames(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for (t, rgb), (t_ref, rgb_ref) in zip(got, expected, strict=True):
        assert t == t_ref and rgb.flags.c_contiguous and np.array_equal(rgb, rgb_ref)


def test_decode_ahead_gives_iter_frames_frames_video_after_video(tmp_path):
    """Issue 19: frames decoded in a thread, a few ahead of the reader, are `iter_frames`' frames bit for bit, with
    `probe`'s info; a file that fails midway raises its one-line error at its turn and the videos after it still
    decode; the rest of a video left half read is dropped, never handed to the next reader."""
    nodding, shaking = shortest_clip(), MA52_VIDEOS / "B2_shaking_head__0035_02_0007.mp4"
    truncated = tmp_path / "cut.avi"
    data = (OTHER_VIDEOS / "pyskl__ntu_sample.avi").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    paths = [str(nodding), str(truncated), str(shaking), str(nodding)]
    with DecodeAhead(paths, depth=2) as ahead:
        videos = iter(ahead)
        video = next(videos)
        assert video.info() == probe(nodding)
        _assert_same_frames(list(video), list(iter_frames(nodding)))
        video = next(videos)
        with pytest.raises(InputError, match=r"truncated video: decoded \d+ of 72 declared frames") as err:
            list(video)
        assert str(err.value).startswith(str(truncated)) and "\n" not in str(err.value)
        video = next(videos)
        _assert_same_frames(list(itertools.islice(video, 3)), list(itertools.islice(iter_frames(shaking), 3)))
        video = next(videos)  # the reader gave up on `shaking` after 3 of its 45 frames
        assert video.info() == probe(nodding)
        first = list(itertools.islice(video, 5))
    _assert_same_frames(first, list(itertools.islice(iter_frames(nodding), 5)))  # and the thread has stopped
