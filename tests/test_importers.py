"""Importing OpenPose JSON, pyskl pickles and JHMDB pickles into the keypoint store."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from conftest import SHARED, requires_shared, run_cli
from dualnet.layouts import MA52_28, OPENPOSE_BODY25_FACE_HANDS
from pipelines.errors import InputError
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.params import ImportParams
from pipelines.stages.import_poses import run_import

JHMDB = SHARED / "jhmdb"


def _person(cx: float, cy: float, size: float, rng: np.random.Generator) -> dict:
    """An OpenPose person record in the documented layout: flat [x, y, c] * N per part."""
    def part(n: int) -> list[float]:
        xy = rng.uniform([cx - size / 2, cy - size / 2], [cx + size / 2, cy + size / 2], size=(n, 2))
        return np.column_stack([xy, rng.uniform(0.5, 1.0, n)]).ravel().round(3).tolist()

    pose = part(25)
    pose[3 * 19: 3 * 19 + 3] = [0, 0, 0]  # an undetected joint (left big toe)
    return {"person_id": [-1], "pose_keypoints_2d": pose, "face_keypoints_2d": part(70),
            "hand_left_keypoints_2d": part(21), "hand_right_keypoints_2d": [], "pose_keypoints_3d": [],
            "face_keypoints_3d": [], "hand_left_keypoints_3d": [], "hand_right_keypoints_3d": []}


def write_openpose_clip(folder, frames: int = 6, seed: int = 0) -> list[list[dict]]:
    """Frame 2 has nobody, frame 4 has the subject and a smaller second person far to the right."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    people_per_frame = []
    for f in range(frames):
        people = [] if f == 2 else [_person(400 + 2 * f, 300, 200, rng)]
        if f == 4:
            people.insert(0, _person(1500, 300, 80, rng))
        people_per_frame.append(people)
        (folder / f"{folder.name}_{f:012d}_keypoints.json").write_text(json.dumps({"version": 1.3, "people": people}))
    return people_per_frame


def test_openpose_json_folder_round_trips(tmp_path):
    truth = write_openpose_clip(tmp_path / "json" / "clip_a")
    report = run_import(tmp_path / "json", ImportParams("openpose", fps=25), tmp_path / "store")
    assert report.processed == ["clip_a"] and not report.failed
    clip = KeypointSet(tmp_path / "store", ImportParams("openpose", fps=25)).load("clip_a")
    assert clip.layout == OPENPOSE_BODY25_FACE_HANDS.name and clip.keypoints.shape == (6, 137, 3)
    assert clip.detected.tolist() == [True, True, False, True, True, True]
    np.testing.assert_allclose(clip.timestamps, np.arange(6) / 25)
    for f in (0, 4):
        subject = truth[f][-1]  # the subject, not the second person on frame 4
        expected = np.asarray(subject["pose_keypoints_2d"]).reshape(25, 3)
        got = clip.keypoints[f, :25]
        np.testing.assert_allclose(np.delete(got, 19, axis=0), np.delete(expected, 19, axis=0), rtol=1e-6)
        assert np.isnan(got[19, :2]).all() and got[19, 2] == 0
        np.testing.assert_allclose(clip.keypoints[f, 25:95].ravel(), np.asarray(subject["face_keypoints_2d"]),
                                   rtol=1e-6)
        assert np.isnan(clip.keypoints[f, 116:137, :2]).all()  # no right hand in the file
    assert np.isnan(clip.keypoints[2]).all()
    again = run_import(tmp_path / "json", ImportParams("openpose", fps=25), tmp_path / "store")
    assert again.processed == [] and again.skipped == ["clip_a"]


def test_openpose_wrong_array_length_fails_that_clip_only(tmp_path):
    write_openpose_clip(tmp_path / "json" / "good")
    write_openpose_clip(tmp_path / "json" / "bad")
    bad_file = tmp_path / "json" / "bad" / "bad_000000000003_keypoints.json"
    data = json.loads(bad_file.read_text())
    data["people"][0]["pose_keypoints_2d"] = data["people"][0]["pose_keypoints_2d"][:-3]
    bad_file.write_text(json.dumps(data))
    result = run_cli("import", "openpose", str(tmp_path / "json"), "--store", str(tmp_path / "store"))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {bad_file}: people[0].pose_keypoints_2d has 72 values, expected 75 (25 keypoints x 3)"]
    assert KeypointSet(tmp_path / "store", ImportParams("openpose")).names() == ["good"]


def _pyskl_pickle(path, clips: int = 3, persons: int = 2, frames: int = 5) -> dict:
    rng = np.random.default_rng(1)
    annotations = []
    for i in range(clips):
        kp = np.zeros((persons, frames, 28, 2))
        kp[0] = rng.uniform(300, 700, size=(frames, 28, 2))  # the subject, larger
        kp[1] = rng.uniform(900, 1000, size=(frames, 28, 2))  # a second, smaller person
        kp[1, 2] = 0  # ... absent on frame 2 (pyskl pads with zeros)
        annotations.append({"frame_dir": f"0003_01_{i:04d}", "label": i, "img_shape": (1296, 1080),
                            "original_shape": (1296, 1080), "total_frames": frames, "keypoint": kp,
                            "keypoint_score": rng.uniform(0.5, 1, size=(persons, frames, 28))})
    data = {"split": {"train": ["0003_01_0000", "0003_01_0001"], "val": ["0003_01_0002"]},
            "annotations": annotations}
    path.write_bytes(pickle.dumps(data))
    return data


def test_pyskl_pickle_with_two_people(tmp_path):
    data = _pyskl_pickle(tmp_path / "ma52_28.pkl")
    params = ImportParams("pyskl", layout="ma52_28")
    report = run_import(tmp_path / "ma52_28.pkl", params, tmp_path / "store")
    assert sorted(report.processed) == ["0003_01_0000", "0003_01_0001", "0003_01_0002"]
    kps = KeypointSet(tmp_path / "store", params)
    for ann in data["annotations"]:
        clip = kps.load(ann["frame_dir"])
        assert clip.layout == MA52_28.name and (clip.width, clip.height) == (1080, 1296)
        np.testing.assert_allclose(clip.keypoints[..., :2], ann["keypoint"][0])
        np.testing.assert_allclose(clip.keypoints[..., 2], ann["keypoint_score"][0])
        assert clip.detected.all()
        assert kps.attributes(ann["frame_dir"])["label"] == ann["label"]


def test_malformed_pickle_fails_before_anything_is_written(tmp_path):
    data = _pyskl_pickle(tmp_path / "p.pkl")
    params = ImportParams("pyskl", layout="ma52_28")
    run_import(tmp_path / "p.pkl", params, tmp_path / "store")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "store").rglob("*") if p.is_file()}
    del data["annotations"][1]["keypoint"]
    data["annotations"][0]["keypoint"] = data["annotations"][0]["keypoint"] + 1  # a change that would be written
    (tmp_path / "p.pkl").write_bytes(pickle.dumps(data))
    with pytest.raises(InputError, match=r"p.pkl: annotation 1 \(0003_01_0001\): missing 'keypoint'"):
        run_import(tmp_path / "p.pkl", params, tmp_path / "store")
    result = run_cli("import", "pyskl", str(tmp_path / "p.pkl"), "--layout", "ma52_28", "--store",
                     str(tmp_path / "store"))
    assert result.returncode == 2 and "annotation 1 (0003_01_0001): missing 'keypoint'" in result.stderr
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "store").rglob("*") if p.is_file()}
    touched = {p for p in after if before.get(p) != after[p] and p.suffix != ".sqlite" and "locks" not in p.parts}
    assert not touched and set(before) <= set(after)


def test_wrong_layout_is_named(tmp_path):
    _pyskl_pickle(tmp_path / "p.pkl")
    with pytest.raises(InputError, match="28 keypoints per person, but layout coco_17 has 17"):
        run_import(tmp_path / "p.pkl", ImportParams("pyskl", layout="coco_17"), tmp_path / "store")


@requires_shared
def test_jhmdb_store_equals_the_pickles(tmp_path):
    for part in ("train", "test"):
        path = JHMDB / f"GT_{part}_1.pkl"
        run_import(path, ImportParams("jhmdb"), tmp_path / "store")
        with open(path, "rb") as f:
            data = pickle.load(f)
        kps = KeypointSet(tmp_path / "store", ImportParams("jhmdb"))
        for i in (0, len(data["pose"]) // 2, len(data["pose"]) - 1):
            clip = kps.load(f"GT_{part}_1_{i:04d}")
            np.testing.assert_array_equal(clip.keypoints[..., :2], data["pose"][i].astype(np.float32))
            assert kps.attributes(f"GT_{part}_1_{i:04d}")["label"] == data["label"][i]
    index = KeypointSet(tmp_path / "store", ImportParams("jhmdb")).index
    assert not index.loose and len(index.packed) == 433 + 176  # every clip written straight into packs


def test_clip_cut_by_frame_range_has_exactly_those_frames(tmp_path):
    """An iMiGUE-style segment (start, end) cut from a long OpenPose sequence."""
    from pipelines.data.datasets import Clip
    from pipelines.errors import StoreError

    write_openpose_clip(tmp_path / "json" / "session_01", frames=120)
    params = ImportParams("openpose", fps=25)
    run_import(tmp_path / "json", params, tmp_path / "store")
    kps = KeypointSet(tmp_path / "store", params)
    whole = kps.load("session_01")
    clip = kps.load_clip(Clip("session_01_37_81", "session_01", "train", 3, start=37, end=81))
    assert len(clip.keypoints) == 81 - 37 == len(clip.detected) == len(clip.timestamps)
    np.testing.assert_array_equal(clip.keypoints, whole.keypoints[37:81])
    np.testing.assert_allclose(clip.timestamps[[0, -1]], [37 / 25, 80 / 25])
    with pytest.raises(StoreError, match=r"frames \[100, 130\) are outside its 120 frames"):
        kps.load("session_01", 100, 130)


def test_miga_arrays_with_a_layout_from_json(tmp_path):
    layout_file = tmp_path / "miga_22.json"
    names = ["nose", "neck"] + [f"{side}_{j}" for side in ("left", "right") for j in
                                ("shoulder", "elbow", "wrist", "eye", "ear")] + [f"hand_{i}" for i in range(10)]
    layout_file.write_text(json.dumps({"name": "miga_22_test", "keypoint_names": names, "edges": [[0, 1], [1, 2]]}))
    rng = np.random.default_rng(3)
    arrays = rng.uniform(1, 100, size=(3, 3, 10, 22, 1)).astype(np.float32)
    arrays[1, :, 7:] = 0  # padding frames after the sample ends
    np.save(tmp_path / "train_data.npy", arrays)
    (tmp_path / "train_label.pkl").write_bytes(pickle.dumps((["0054_0", "0054_1", "0054_2"], [4, 0, 31])))
    params = ImportParams("miga", layout=str(layout_file), labels=str(tmp_path / "train_label.pkl"))
    report = run_import(tmp_path / "train_data.npy", params, tmp_path / "store")
    assert sorted(report.processed) == ["0054_0", "0054_1", "0054_2"]
    kps = KeypointSet(tmp_path / "store", params)
    clip = kps.load("0054_1")
    assert clip.layout == "miga_22_test" and clip.keypoints.shape == (10, 22, 3)
    np.testing.assert_allclose(clip.keypoints[:7], arrays[1, :, :7, :, 0].transpose(1, 2, 0), rtol=1e-6)
    assert clip.detected.tolist() == [True] * 7 + [False] * 3
    assert kps.attributes("0054_2")["label"] == 31
    (tmp_path / "train_label.pkl").write_bytes(pickle.dumps((["a", "b"], [1, 2])))
    with pytest.raises(InputError, match="train_label.pkl: 2 labels for 3 arrays"):
        run_import(tmp_path / "train_data.npy", params, tmp_path / "store")


def test_pyskl_3d_keypoints_keep_z_as_depth(tmp_path):
    """pyskl's 3D skeletons, ``keypoint`` (M, T, V, 3) = x, y, z (pyskl reads scores only from `keypoint_score`):
    z becomes the item's depth, following the person the tracker keeps; the 2D items of other pickles have none."""
    rng = np.random.default_rng(3)
    frames = 6
    kp = np.zeros((2, frames, 28, 3))
    kp[0] = rng.uniform(300, 700, size=(frames, 28, 3))  # the subject, larger
    kp[1] = rng.uniform(900, 1000, size=(frames, 28, 3))  # a second, smaller person
    kp[0, 4] = 0  # the subject is absent on frame 4 (pyskl pads with zeros)
    score = rng.uniform(0.5, 1, size=(2, frames, 28))
    data = {"annotations": [{"frame_dir": "deep", "label": 1, "img_shape": (1296, 1080), "total_frames": frames,
                             "keypoint": kp, "keypoint_score": score},
                            {"frame_dir": "deep_unscored", "label": 0, "total_frames": frames, "keypoint": kp[:1]}]}
    (tmp_path / "3d.pkl").write_bytes(pickle.dumps(data))
    params = ImportParams("pyskl", layout="ma52_28")
    run_import(tmp_path / "3d.pkl", params, tmp_path / "store")
    kps = KeypointSet(tmp_path / "store", params)
    clip = kps.load("deep")
    seen = np.arange(frames) != 4
    np.testing.assert_allclose(clip.keypoints[seen, :, :2], kp[0, seen, :, :2])
    np.testing.assert_allclose(clip.keypoints[seen, :, 2], score[0, seen])
    np.testing.assert_allclose(clip.depth[seen], kp[0, seen, :, 2], rtol=1e-6)  # z, not a score
    assert clip.depth.shape == (frames, 28) and kps.attributes("deep")["depth"] is True
    assert not clip.detected[4] and np.isnan(clip.depth[4]).all() and np.isnan(clip.keypoints[4]).all()
    unscored = kps.load("deep_unscored")
    assert (unscored.keypoints[seen, :, 2] == 1).all()  # no keypoint_score: score 1, z still depth
    np.testing.assert_allclose(unscored.depth[seen], kp[0, seen, :, 2], rtol=1e-6)
    nobody = {"annotations": [{"frame_dir": "empty", "label": 0, "keypoint": np.zeros((1, frames, 28, 3))}]}
    (tmp_path / "nobody.pkl").write_bytes(pickle.dumps(nobody))
    run_import(tmp_path / "nobody.pkl", params, tmp_path / "store_nobody")
    empty = KeypointSet(tmp_path / "store_nobody", params).load("empty")  # a 3D clip in which nobody is found
    assert empty.depth is not None and empty.depth.shape == (frames, 28) and np.isnan(empty.depth).all()
    _pyskl_pickle(tmp_path / "2d.pkl")
    run_import(tmp_path / "2d.pkl", params, tmp_path / "store2d")
    flat = KeypointSet(tmp_path / "store2d", params)
    assert all(flat.load(n).depth is None and "depth" not in flat.attributes(n) for n in flat.names())
