"""The `tubes` stage on the real MA-52 clips: boxes hold their body parts, flips are exact, gaps are interpolated
and masked, re-runs do no work, a killed run resumes, and the picture is drawn."""

from __future__ import annotations

import re

import av
import numpy as np
import pytest

from conftest import requires_shared, run_cli, shortest_clip
from dualnet.entities import get_entity_set
from dualnet.layouts import MEDIAPIPE_HOLISTIC
from dualnet.transforms import hflip_clip
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.params import TubeParams
from pipelines.formats.tube_packs import TubeSet, count_files
from pipelines.io.video import iter_frames
from pipelines.stages.extract import run_extract
from pipelines.stages.tubes import run_tubes
from pipelines.store import Store

pytestmark = requires_shared
ENTITIES = [e.name for e in get_entity_set("k6")]


def _inside(box: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return (xy[..., 0] >= box[..., 0]) & (xy[..., 0] <= box[..., 2]) & (xy[..., 1] >= box[..., 1]) & \
        (xy[..., 1] <= box[..., 3])


def _joint(arrays: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    kp = arrays["keypoints"][:, MEDIAPIPE_HOLISTIC.index(name)]
    return kp[:, :2], (kp[:, 2] >= 0.3) & np.isfinite(kp[:, :2]).all(axis=1)


def test_boxes_hold_their_body_parts(ma52_tubes):
    face, left, right, lower = (ENTITIES.index(n) for n in ("face", "left_hand", "right_hand", "lower_body"))
    face_hits, face_total, hand_hits, hand_total, knee_hits, knee_total = 0, 0, 0, 0, 0, 0
    for name in ma52_tubes.names():
        a = ma52_tubes.load(name)
        assert a["tubes"].shape == (16, 6, 3, 112, 112) and a["frames"].shape == (16, 3, 224, 224)
        inside = [_inside(a["boxes"][:, face], _joint(a, j)[0]) for j in ("nose", "left_eye", "right_eye")]
        face_hits += int(np.logical_and.reduce(inside).sum())
        face_total += len(inside[0])
        for k, wrist in ((left, "left_wrist"), (right, "right_wrist")):
            xy, seen = _joint(a, wrist)
            hand_hits += int(_inside(a["boxes"][:, k], xy)[seen].sum())
            hand_total += int(seen.sum())
        for knee in ("left_knee", "right_knee"):
            xy, seen = _joint(a, knee)
            knee_hits += int(_inside(a["boxes"][:, lower], xy)[seen].sum())
            knee_total += int(seen.sum())
    assert face_hits / face_total >= 0.95
    assert hand_total > 50 and hand_hits / hand_total >= 0.95
    assert knee_total > 50 and knee_hits == knee_total


def test_flip_mirrors_images_and_swaps_left_and_right(ma52_tubes):
    a = ma52_tubes.load(shortest_clip().stem)
    width = a["meta"]["width"]
    entities = get_entity_set("k6")
    tubes, boxes, kps, frames = hflip_clip(a["tubes"], a["boxes"], a["keypoints"], width, entities,
                                           MEDIAPIPE_HOLISTIC, a["frames"])
    left, right = ENTITIES.index("left_hand"), ENTITIES.index("right_hand")
    np.testing.assert_array_equal(tubes[:, left], a["tubes"][:, right, ..., ::-1])
    np.testing.assert_array_equal(tubes[:, 0], a["tubes"][:, 0, ..., ::-1])  # the face stays the face, mirrored
    np.testing.assert_allclose(boxes[:, left, [0, 2]], width - a["boxes"][:, right, [2, 0]])
    lw, rw = MEDIAPIPE_HOLISTIC.index("left_wrist"), MEDIAPIPE_HOLISTIC.index("right_wrist")
    np.testing.assert_allclose(kps[:, lw, 0], width - a["keypoints"][:, rw, 0])
    np.testing.assert_array_equal(kps[:, lw, 1:], a["keypoints"][:, rw, 1:])
    np.testing.assert_array_equal(frames, a["frames"][..., ::-1])
    again = hflip_clip(tubes, boxes, kps, width, entities, MEDIAPIPE_HOLISTIC, frames)
    for original, twice in zip((a["tubes"], a["boxes"], a["keypoints"], a["frames"]), again, strict=True):
        np.testing.assert_allclose(twice, original, rtol=1e-6)  # float32 x -> W - x -> W - (W - x)


def _video_with_a_gap(src, dst, gap: range) -> None:
    """Re-encode a real clip with the frames in `gap` replaced by an empty grey room (the person vanishes)."""
    frames = [rgb for _, rgb in iter_frames(src)]
    with av.open(str(dst), "w") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.options = {"qscale": "2"}
        for i, rgb in enumerate(frames):
            image = np.full_like(rgb, 200) if i in gap else rgb
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_a_vanishing_person_still_yields_tubes_interpolated_and_masked(tmp_path):
    video = tmp_path / "vanishing.mp4"
    gap = range(15, 32)
    _video_with_a_gap(shortest_clip(), video, gap)
    store = Store(tmp_path / "store")
    assert run_extract([str(video)], store).processed == ["vanishing"]
    clip = KeypointSet(store).load("vanishing")
    assert not clip.detected[list(gap)].any() and clip.detected[:10].all()
    report = run_tubes(store, TubeParams(frames=16))
    assert report.processed == ["vanishing"]
    a = TubeSet(store).load("vanishing")
    in_gap = np.isin(a["frame_index"], list(gap))
    assert in_gap.sum() >= 4
    assert not a["visible"][in_gap].any() and a["visible"][~in_gap].any()
    assert np.isfinite(a["boxes"]).all()
    torso = ENTITIES.index("torso")
    before, after = a["boxes"][~in_gap & (a["frame_index"] < 15), torso], a["boxes"][~in_gap & (a["frame_index"] > 31),
                                                                                        torso]
    lo, hi = np.minimum(before[-1], after[0]) - 5, np.maximum(before[-1], after[0]) + 5
    assert ((a["boxes"][in_gap, torso] >= lo) & (a["boxes"][in_gap, torso] <= hi)).all()  # between its neighbours


def test_second_run_no_work_and_new_size_new_key(ma52_store, ma52_tubes):
    again = run_tubes(ma52_store)
    assert again.processed == [] and len(again.skipped) == 6
    small = run_tubes(ma52_store, TubeParams(size=64), names=[shortest_clip().stem])
    assert small.key != ma52_tubes.output.key and small.processed == [shortest_clip().stem]
    assert TubeSet(ma52_store, TubeParams(size=64)).load(shortest_clip().stem)["tubes"].shape[-1] == 64
    assert count_files(ma52_tubes.output.path) < 30  # one pack: a handful of files for every clip


def test_box_table_and_tensors(ma52_tubes):
    df = ma52_tubes.boxes_frame([shortest_clip().stem])
    assert list(df.columns) == ["clip", "sample", "frame", "entity", "x1", "y1", "x2", "y2", "visible", "padded"]
    assert len(df) == 16 * 6 and list(df["entity"].cat.categories) == ENTITIES
    assert ((df.x2 - df.x1) - (df.y2 - df.y1)).abs().max() < 1e-3  # square
    t = ma52_tubes.tensors(shortest_clip().stem)
    assert tuple(t["tubes"].shape) == (16, 6, 3, 112, 112) and str(t["tubes"].dtype) == "torch.uint8"


def test_show_writes_a_png(ma52_tubes, tmp_path):
    result = run_cli("show", shortest_clip().stem, "--store", str(ma52_tubes.store.root), "--out",
                     str(tmp_path / "clip.png"))
    assert result.returncode == 0, result.stderr
    data = (tmp_path / "clip.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    missing = run_cli("show", "nope", "--store", str(ma52_tubes.store.root))
    assert missing.returncode == 2 and "no tubes for clip 'nope'" in missing.stderr


@pytest.mark.parametrize("frames", [1, 16])
def test_cli_tubes_reports(ma52_store, frames):
    result = run_cli("tubes", "--store", str(ma52_store.root), "--frames", str(frames))
    assert result.returncode == 0, result.stderr
    tubes = TubeSet(ma52_store, TubeParams(frames=frames))
    line = result.stdout.strip().splitlines()[-1]
    # frames 16 are the default tubes, which the session may have cut already (then skipped)
    done = re.fullmatch(rf"tubes {tubes.output.key}: (\d) processed, (\d) skipped, 0 failed; (\d) pack\(s\) in "
                        rf"[\d.]+ s -> {re.escape(str(tubes.output.path))}", line)
    assert done and int(done[1]) + int(done[2]) == 6, line
    assert int(done[3]) == (1 if int(done[1]) else 0) and len(tubes.names()) == 6 and tubes.load(tubes.names()[0])[
        "frame_index"].shape == (frames,)
