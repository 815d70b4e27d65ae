"""Phone videos: the rotation a container carries (a display matrix, or the legacy `rotate` tag) is honoured by every
reader, so frames, keypoints, boxes and crops come out upright; a rotation that is not a quarter turn, or a mirrored
one, fails as one line naming the file."""

from __future__ import annotations

from itertools import islice

import av
import numpy as np
import pytest
from av.sidedata.sidedata import Type

import dualnet
from conftest import OTHER_VIDEOS, requires_shared, shortest_clip
from dualnet.layouts import MEDIAPIPE_HOLISTIC
from pipelines.data.clips import LabelledClips
from pipelines.data.datasets import Clip
from pipelines.errors import InputError
from pipelines.experiment import run_predict
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.params import TrainParams, TubeParams
from pipelines.formats.tube_packs import TubeSet
from pipelines.io.video import iter_frames, probe
from pipelines.stages.cut import cut_segments
from pipelines.stages.extract import run_extract
from pipelines.stages.predict import PredictParams
from pipelines.stages.train import train
from pipelines.stages.tubes import run_tubes
from pipelines.store import Store

pytestmark = requires_shared
FRAMES = 16  # of the shortest MA-52 clip: one tube of 16 frames, ~2 s of pose model per copy
JOINTS = ("nose", "left_wrist", "right_wrist")


def _encode(path, frames: list[np.ndarray], *, ccw: float | None = None, hflip: bool = False,
            tag: str | None = None) -> None:
    """Write RGB frames with H.264 4:4:4 at qp 0 (only the RGB <-> YUV rounding is lost), with a display matrix
    turning them `ccw` degrees counter-clockwise (PyAV's sign, as `frame.rotation` reads it) or a `rotate` tag."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv444p"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        if ccw is not None:
            stream.set_display_rotation(ccw, hflip=hflip)
        if tag is not None:
            stream.metadata["rotate"] = tag
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """The first FRAMES frames of the shortest MA-52 clip (1080x1296) as decoded, and two copies of them:
    `upright.mp4` as they are, and `phone.mp4` stored turned a quarter counter-clockwise (1296x1080) with a display
    matrix saying "turn 90 degrees clockwise to show", as a phone held upright writes its landscape sensor."""
    with av.open(str(shortest_clip())) as container:
        frames = [f.to_ndarray(format="rgb24") for f in islice(container.decode(video=0), FRAMES)]
    folder = tmp_path_factory.mktemp("orientation")
    _encode(folder / "upright.mp4", frames)
    _encode(folder / "phone.mp4", [np.ascontiguousarray(np.rot90(f)) for f in frames], ccw=-90)
    return folder, frames


def _close_to(decoded: list[np.ndarray], frames: list[np.ndarray]) -> None:
    assert len(decoded) == len(frames)
    for got, want in zip(decoded, frames, strict=True):
        assert got.shape == want.shape == (1296, 1080, 3)
        assert np.abs(got.astype(np.int16) - want).mean() < 1.0  # measured 0.40: the YUV 4:4:4 rounding


def test_the_phone_copy_really_carries_a_display_matrix(videos):
    folder, _ = videos
    with av.open(str(folder / "phone.mp4")) as container:  # read as any player does, without our code
        stream = container.streams.video[0]
        first = next(container.decode(stream))
        assert (stream.codec_context.width, stream.codec_context.height) == (1296, 1080)
        assert first.side_data.get(Type.DISPLAYMATRIX) is not None and first.rotation == -90


def test_probe_reports_the_rotation_and_the_upright_size(videos):
    folder, _ = videos
    info = probe(folder / "phone.mp4")
    assert (info.rotation, info.width, info.height, info.declared_frames) == (90, 1080, 1296, FRAMES)
    assert (probe(folder / "upright.mp4").rotation, probe(shortest_clip()).rotation) == (0, 0)


def test_frames_come_out_upright(videos):
    folder, frames = videos
    _close_to([rgb for _, rgb in iter_frames(folder / "phone.mp4")], frames)


def test_the_legacy_rotate_tag_is_honoured(videos, tmp_path):
    _, frames = videos
    video = tmp_path / "tagged.mkv"  # Matroska keeps a `rotate` tag as it is (FFmpeg's mp4 muxer no longer reads it)
    _encode(video, [np.ascontiguousarray(np.rot90(f, -1)) for f in frames[:3]], tag="270")
    info = probe(video)
    assert (info.rotation, info.width, info.height) == (270, 1080, 1296)
    _close_to([rgb for _, rgb in iter_frames(video)], frames[:3])


@pytest.fixture(scope="module")
def store(videos):
    """`extract` and `tubes` (FRAMES frames) of both copies, in one store."""
    folder, _ = videos
    store = Store(folder / "store")
    report = run_extract([str(folder / "upright.mp4"), str(folder / "phone.mp4")], store)
    assert sorted(report.processed) == ["phone", "upright"] and not report.failed
    assert sorted(run_tubes(store, TubeParams(frames=FRAMES)).processed) == ["phone", "upright"]
    return store


def test_extract_records_the_rotation_and_finds_the_same_keypoints(store):
    keypoints = KeypointSet(store)
    for name, rotation in (("upright", 0), ("phone", 90)):
        attrs = keypoints.attributes(name)
        assert (attrs["rotation"], attrs["width"], attrs["height"]) == (rotation, 1080, 1296)
    upright, phone = keypoints.load("upright").keypoints, keypoints.load("phone").keypoints  # (T, V, 3)
    for joint in JOINTS:
        j = MEDIAPIPE_HOLISTIC.index(joint)
        seen = np.isfinite(upright[:, j, :2]).all(axis=1) & np.isfinite(phone[:, j, :2]).all(axis=1)
        assert seen.sum() >= FRAMES - 2, joint
        distance = np.linalg.norm(upright[seen, j, :2] - phone[seen, j, :2], axis=1)
        # measured 0.00 px: turning the pixels commutes with the per-pixel YUV 4:4:4 rounding, so the pose model
        # sees the same picture; lying on its side it would find the nose hundreds of pixels away
        assert np.median(distance) < 1.0 and distance.max() < 5.0, (joint, distance.round(1))


def test_tubes_cut_the_same_boxes_and_crops(store):
    tubes = TubeSet(store, TubeParams(frames=FRAMES))
    a, b = tubes.load("upright"), tubes.load("phone")
    shown = a["visible"] & b["visible"]  # (F, K)
    assert shown.mean() > 0.5
    np.testing.assert_allclose(b["boxes"][shown], a["boxes"][shown], atol=4.0)  # (N, 4) pixels; measured 0.00
    for crops in ("tubes", "frames"):  # the entity crops and the letterboxed global frames; measured 0.00
        assert np.abs(b[crops].astype(np.int16) - a[crops]).mean() < 1.0, crops


def test_predict_scores_the_phone_copy_as_the_upright_one(videos, store, tmp_path):
    folder, _ = videos
    tubes = TubeSet(store, TubeParams(frames=FRAMES))
    config = dualnet.preset("tiny", num_classes=2)  # RGB + pose: predict decodes the frames and cuts the crops
    result = train(config, tubes, LabelledClips(("upright", "phone"), (0, 1)), None, TrainParams(epochs=1),
                   classes=["a", "b"])
    report = run_predict([str(folder / "upright.mp4"), str(folder / "phone.mp4")], result.run_dir / "last.pt",
                         store, PredictParams(window=0.3, stride=0.1), tmp_path / "out", plot=False)
    assert not report.failed
    windows = {video.name: video.windows for video in report.videos}
    assert len(windows["phone"]) == len(windows["upright"]) >= 3
    # measured bit-identical; before this fix the sideways phone copy scored 0.03 apart
    np.testing.assert_allclose(windows["phone"][["a", "b"]], windows["upright"][["a", "b"]], atol=1e-3)


def test_a_segment_cut_from_a_phone_video_keeps_its_rotation(videos, tmp_path):
    folder, frames = videos
    files, failed = cut_segments([Clip("seg", str(folder / "phone.mp4"), "train", start=2, end=6)], tmp_path)
    assert not failed and probe(files[0]).rotation == 90
    decoded = [rgb for _, rgb in iter_frames(files[0])]
    assert len(decoded) == 4 and all(rgb.shape == (1296, 1080, 3) for rgb in decoded)
    assert np.abs(decoded[0].astype(np.int16) - frames[2]).mean() < 3.0  # CRF 17 4:2:0 re-encode


@pytest.mark.parametrize("ccw, hflip, problem", [
    (-45, False, "rotation of 45 degrees"),
    (0, True, "mirrored"),
])
def test_an_unusual_orientation_fails_as_one_line(videos, tmp_path, ccw, hflip, problem):
    _, frames = videos
    video = tmp_path / "odd.mp4"
    _encode(video, frames[:2], ccw=ccw, hflip=hflip)
    for read in (probe, lambda p: list(iter_frames(p))):
        with pytest.raises(InputError) as err:
            read(video)
        assert str(err.value).startswith(str(video)) and problem in str(err.value) and "\n" not in str(err.value)
    report = run_extract([str(video)], Store(tmp_path / "store"))
    assert list(report.failed) == ["odd"] and problem in report.failed["odd"]


def test_a_segment_keeps_the_source_frame_rate(tmp_path):
    """A clip cut from a real 28 fps mp4 whose time base is not 1/fps is 28 fps too (it came out at 1,120)."""
    source = OTHER_VIDEOS / "mmaction2__demo.mp4"
    rate = probe(source).fps
    files, failed = cut_segments([Clip("seg", str(source), "train", start=10, end=38)], tmp_path)
    assert not failed and probe(files[0]).fps == pytest.approx(rate) and rate == pytest.approx(28.0)
    times = [t for t, _ in iter_frames(files[0])]
    assert len(times) == 28 and times[-1] - times[0] == pytest.approx(27 / rate, abs=1e-3)
