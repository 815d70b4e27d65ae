"""Decoding real videos, and each kind of bad file as a one-line error naming it."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import OTHER_VIDEOS, requires_shared, shortest_clip
from pipelines.errors import InputError
from pipelines.io.video import iter_frames, probe, regular_timestamps

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

