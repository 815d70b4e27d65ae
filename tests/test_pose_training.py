"""Pose-only training from the command line (issue 14): any skeleton, keypoints alone, no tubes in the store."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from conftest import SHARED, requires_shared, run_cli
from dualnet.entities import entity_boxes, entity_set_for, get_entity_set
from dualnet.layouts import get_layout, layout_from_dict

SHREC = SHARED / "shrec17"
HAND_NAMES = ["wrist", "palm", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip"] + [
    f"{finger}_{joint}" for finger in ("index_finger", "middle_finger", "ring_finger", "pinky")
    for joint in ("mcp", "pip", "dip", "tip")]


def _hand_clip(rng: np.random.Generator, frames: int, label: int) -> np.ndarray:
    """(T, 22, 2) a hand whose fingers open (label 0) or close (label 1) over the clip, drifting a little."""
    base = rng.uniform(300, 500, size=(1, 1, 2))
    spread = np.linspace(20, 80, frames) if label == 0 else np.linspace(80, 20, frames)
    offsets = rng.normal(0, 1, size=(1, 22, 2))
    return base + offsets * spread[:, None, None] + rng.normal(0, 2, size=(frames, 22, 2))


def test_any_skeleton_gets_boxes_and_an_entity_set():
    """A shoulderless hand layout, a face-only mesh and a layout no entity fits: boxes or one clear line, never a
    numpy traceback (issue 14.2)."""
    hand = layout_from_dict({"name": "hand_22_test", "keypoint_names": HAND_NAMES})
    assert entity_set_for(hand) == "hand" and entity_set_for(get_layout("shrec17_22")) == "hand"
    assert entity_set_for(get_layout("jhmdb_15")) == "k6"
    kp = np.concatenate([_hand_clip(np.random.default_rng(0), 12, 0), np.ones((12, 22, 1))], axis=-1)
    for name in ("hand", "k6"):  # k6 on a hand: no shoulders, hips or face, still finite boxes
        boxes, visible = entity_boxes(kp, hand, get_entity_set(name), (640, 480))
        assert np.isfinite(boxes).all() and boxes.shape == (12, len(get_entity_set(name)), 4)
    boxes, visible = entity_boxes(kp, hand, get_entity_set("hand"), (640, 480), smooth_sigma=0)
    assert visible.all()
    thumb = kp[:, 2:6, :2]
    centre = (boxes[:, 1, :2] + boxes[:, 1, 2:]) / 2
    np.testing.assert_allclose(centre, (thumb.min(1) + thumb.max(1)) / 2, atol=1.0)  # the thumb box is the thumb's
    face = layout_from_dict({"name": "face_68_test", "keypoint_names": [f"face_{i:03d}" for i in range(68)]})
    assert entity_set_for(face) == "k5"  # face and head of 5 entities beat 2 of 6
    fkp = np.concatenate([np.random.default_rng(1).uniform(100, 200, (5, 68, 2)), np.ones((5, 68, 1))], -1)
    fboxes, fvisible = entity_boxes(fkp, face, get_entity_set("k5"), (640, 480))
    assert np.isfinite(fboxes).all() and fvisible[:, :2].all() and not fvisible[:, 2:].any()
    nothing = layout_from_dict({"name": "numbers_test", "keypoint_names": [f"j{i}" for i in range(5)]})
    with pytest.raises(ValueError, match="layout 'numbers_test' fits no entity set"):
        entity_set_for(nothing)


def test_pose_preset_trains_and_evaluates_on_an_imported_pickle_without_tubes(tmp_path):
    """Issue 14.1: `import pyskl` with a custom layout .json, then `train --preset pose_tiny` and `eval` on the
    imported keypoints; nothing in the store is a tube."""
    layout = tmp_path / "hand_22.json"
    layout.write_text(json.dumps({"name": "hand_22_cli", "keypoint_names": HAND_NAMES}))
    rng = np.random.default_rng(0)
    annotations, split = [], {"train": [], "val": []}
    for i in range(48):
        label = i % 2
        kp = _hand_clip(rng, 16, label)[None]
        name = f"clip_{i:03d}"
        annotations.append({"frame_dir": name, "label": label, "img_shape": (480, 640), "total_frames": 16,
                            "keypoint": kp, "keypoint_score": np.ones(kp.shape[:3])})
        split["train" if i < 36 else "val"].append(name)
    data = tmp_path / "hands.pkl"
    data.write_bytes(pickle.dumps({"split": split, "annotations": annotations}))
    store = tmp_path / "store"
    result = run_cli("import", "pyskl", str(data), "--layout", str(layout), "--store", str(store))
    assert result.returncode == 0, result.stderr
    result = run_cli("train", "--dataset", "pyskl", "--root", str(data), "--store", str(store), "--preset",
                     "pose_tiny", "--epochs", "15", "--batch-size", "8", "--lr", "0.003", "--flip", "0")
    assert result.returncode == 0, result.stderr
    assert "entity set: hand (chosen for layout" in result.stdout and "keypoints: import" in result.stdout
    assert not (store / "tubes").exists()
    result = run_cli("eval", "--dataset", "pyskl", "--root", str(data), "--store", str(store), "--split", "val")
    assert result.returncode == 0, result.stderr
    top1 = float(next(line for line in result.stdout.splitlines() if "top1" in line).split()[-1].rstrip("%"))
    assert top1 >= 75.0  # opening vs closing a hand: the pose stream must separate them


@requires_shared
def test_shrec17_imports_in_its_own_folder_layout(tmp_path):
    """Issue 14.3: the real SHREC'17 folder, both official lists (1,960 / 840), one item per sequence; x, y kept
    in millimetres, depth left out (the store's keypoints are x, y, score)."""
    from pipelines.data.datasets import shrec17
    from pipelines.formats.keypoints import KeypointSet
    from pipelines.formats.params import ImportParams
    from pipelines.stages.import_poses import run_import

    report = run_import(SHREC, ImportParams("shrec17"), tmp_path / "store")
    assert len(report.processed) == 2800 and not report.failed
    index = shrec17(SHREC)
    counts = index.counts().sum()
    assert (counts["train"], counts["test"]) == (1960, 840) and len(shrec17(SHREC, 28).classes) == 28
    kps = KeypointSet(tmp_path / "store", ImportParams("shrec17"))
    first = index.clips[0]
    clip = kps.load(first.clip_id)
    raw = np.loadtxt(SHREC / "gesture_1" / "finger_1" / "subject_2" / "essai_1" / "skeletons_world.txt")
    assert first.clip_id == "shrec17_g01_f1_s02_e1" and clip.layout == "shrec17_22"
    np.testing.assert_allclose(clip.keypoints[..., :2], raw.reshape(-1, 22, 3)[..., :2] * 1000, rtol=1e-5)
    assert (clip.keypoints[..., 2] == 1).all()
    again = run_import(SHREC, ImportParams("shrec17"), tmp_path / "store")
    assert not again.processed and len(again.skipped) == 2800


def _shrec_folder(root, depth_shift: float = 0.0) -> None:
    """A SHREC'17-format folder (its two lists, one skeletons_world.txt of 22 x (x, y, z) a line per sequence):
    gestures 1 (grab) and 2 (tap), 3 training subjects and 1 test subject; z shifted by `depth_shift` metres."""
    rng = np.random.default_rng(5)
    lists = {"train": [], "test": []}
    for gesture in (1, 2):
        for subject in (1, 2, 3, 4):
            frames = 20
            xy = _hand_clip(rng, frames, gesture - 1) / 1000  # millimetre-scale hand, in metres
            z = 0.4 + 0.02 * rng.standard_normal((frames, 22, 1)) + depth_shift
            path = root / f"gesture_{gesture}" / "finger_1" / f"subject_{subject}" / "essai_1"
            path.mkdir(parents=True)
            np.savetxt(path / "skeletons_world.txt", np.concatenate([xy, z], -1).reshape(frames, 66), fmt="%.6f")
            lists["test" if subject == 4 else "train"].append(f"{gesture} 1 {subject} 1 {gesture} "
                                                              f"{2 * (gesture - 1) + 1} {frames}")
    for split, lines in lists.items():
        (root / f"{split}_gestures.txt").write_text("\n".join(lines) + "\n")


def test_a_3d_source_imports_and_trains_with_depth_left_out(tmp_path):
    """Issue 14.2, a 3D source: SHREC'17's world coordinates (x, y, z) import and train; depth is left out, and
    says so in every item (the store's keypoints are x, y, score): folders that differ only in z store the same."""
    from pipelines.formats.keypoints import KeypointSet
    from pipelines.formats.params import ImportParams

    _shrec_folder(tmp_path / "near")
    _shrec_folder(tmp_path / "far", depth_shift=0.5)
    stores = {name: tmp_path / f"store_{name}" for name in ("near", "far")}
    for name, store in stores.items():
        result = run_cli("import", "shrec17", str(tmp_path / name), "--store", str(store))
        assert result.returncode == 0, result.stderr
    near, far = (KeypointSet(stores[n], ImportParams("shrec17")) for n in ("near", "far"))
    assert near.names() == far.names() and len(near.names()) == 8
    for clip in near.names():
        np.testing.assert_array_equal(near.load(clip).keypoints, far.load(clip).keypoints)
        assert near.load(clip).keypoints.shape == (20, 22, 3)
        assert "depth left out" in near.attributes(clip)["coordinates"]
    result = run_cli("train", "--dataset", "shrec17", "--root", str(tmp_path / "near"), "--store",
                     str(stores["near"]), "--preset", "pose_tiny", "--epochs", "1", "--val-split", "test",
                     "--flip", "0")
    assert result.returncode == 0, result.stderr
    assert "entity set: hand" in result.stdout and "trained 1 epoch(s)" in result.stdout
