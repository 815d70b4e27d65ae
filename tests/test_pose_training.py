"""Pose-only training from the command line (issue 14): any skeleton, keypoints alone, no tubes in the store."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from conftest import SHARED, requires_shared, run_cli
from dualnet.entities import entity_boxes, entity_set_for, get_entity_set
from dualnet.layouts import get_layout, layout_from_dict
from helpers import hand_clip, shrec_folder

SHREC = SHARED / "shrec17"
HAND_NAMES = ["wrist", "palm", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip"] + [
    f"{finger}_{joint}" for finger in ("index_finger", "middle_finger", "ring_finger", "pinky")
    for joint in ("mcp", "pip", "dip", "tip")]


def test_any_skeleton_gets_boxes_and_an_entity_set():
    """A shoulderless hand layout, a face-only mesh and a layout no entity fits: boxes or one clear line, never a
    numpy traceback (issue 14.2)."""
    hand = layout_from_dict({"name": "hand_22_test", "keypoint_names": HAND_NAMES})
    assert entity_set_for(hand) == "hand" and entity_set_for(get_layout("shrec17_22")) == "hand"
    assert entity_set_for(get_layout("jhmdb_15")) == "k6"
    kp = np.concatenate([hand_clip(np.random.default_rng(0), 12, 0), np.ones((12, 22, 1))], axis=-1)
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
        kp = hand_clip(rng, 16, label)[None]
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
    in millimetres as the keypoints (x, y, score), z in millimetres as the item's depth."""
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
    xyz = raw.reshape(-1, 22, 3)
    np.testing.assert_allclose(clip.keypoints[..., :2], xyz[..., :2] * 1000, rtol=1e-5)
    assert (clip.keypoints[..., 2] == 1).all()
    assert clip.depth is not None and clip.depth.shape == (len(raw), 22) and clip.depth.dtype == np.float32
    for frame, joint in ((0, 0), (0, 21), (len(raw) // 2, 5), (len(raw) - 1, 13)):  # a few joints and frames
        assert clip.depth[frame, joint] == pytest.approx(raw[frame, 3 * joint + 2] * 1000, rel=1e-6)
    assert 100 < np.nanmedian(clip.depth) < 2000  # a hand some 0.1-2 m from the camera, in millimetres
    assert kps.has_depth(kps.names()) and "z in millimetres" in kps.attributes(first.clip_id)["coordinates"]
    again = run_import(SHREC, ImportParams("shrec17"), tmp_path / "store")
    assert not again.processed and len(again.skipped) == 2800


def test_a_3d_source_imports_and_trains_and_evaluates_with_depth(tmp_path):
    """A 3D source: SHREC'17's world coordinates (x, y, z) import with z as each item's depth (folders that differ
    only in z store the same keypoints, and depths 500 mm apart); `train` on it takes depth by default (recorded in
    the checkpoint's config), `eval` reads it back; `--no-depth` trains the 2D model, a different run."""
    import torch

    from pipelines.formats.keypoints import KeypointSet
    from pipelines.formats.params import ImportParams

    shrec_folder(tmp_path / "near")
    shrec_folder(tmp_path / "far", depth_shift=0.5)
    stores = {name: tmp_path / f"store_{name}" for name in ("near", "far")}
    for name, store in stores.items():
        result = run_cli("import", "shrec17", str(tmp_path / name), "--store", str(store))
        assert result.returncode == 0, result.stderr
    near, far = (KeypointSet(stores[n], ImportParams("shrec17")) for n in ("near", "far"))
    assert near.names() == far.names() and len(near.names()) == 8
    for clip in near.names():
        a, b = near.load(clip), far.load(clip)
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        assert a.keypoints.shape == (20, 22, 3) and a.depth.shape == (20, 22)
        np.testing.assert_allclose(b.depth - a.depth, 500.0, atol=1e-2)  # 0.5 m, in millimetres
        assert 350 < a.depth.mean() < 450  # z = 0.4 m
        assert "depth z in millimetres" in near.attributes(clip)["coordinates"]
    args = ("--dataset", "shrec17", "--root", str(tmp_path / "near"), "--store", str(stores["near"]), "--preset",
            "pose_tiny", "--epochs", "1", "--val-split", "test", "--flip", "0.5")
    result = run_cli("train", *args)
    assert result.returncode == 0, result.stderr
    assert "entity set: hand" in result.stdout and "trained 1 epoch(s)" in result.stdout
    assert "depth: z from the keypoints" in result.stdout
    runs = sorted((stores["near"] / "train").glob("*/last.pt"))
    assert len(runs) == 1 and torch.load(runs[0], weights_only=False)["config"]["pose_depth"] is True
    result = run_cli("eval", "--dataset", "shrec17", "--root", str(tmp_path / "near"), "--store",
                     str(stores["near"]), "--split", "test", "--checkpoint", str(runs[0]))
    assert result.returncode == 0, result.stderr
    top1 = float(next(line for line in result.stdout.splitlines() if "top1" in line).split()[-1].rstrip("%"))
    history = [json.loads(line) for line in (runs[0].parent / "metrics.jsonl").read_text().splitlines()]
    assert top1 == pytest.approx(100 * history[-1]["val_top1"], abs=0.05)  # eval with depth scores as training did
    result = run_cli("train", *args, "--no-depth")
    assert result.returncode == 0, result.stderr
    assert "depth: left out" in result.stdout
    configs = [torch.load(p, weights_only=False)["config"] for p in (stores["near"] / "train").glob("*/last.pt")]
    assert sorted(c["pose_depth"] for c in configs) == [False, True]


def test_dualnet_run_takes_depth_by_default_and_model_pose_depth_overrides(tmp_path):
    """`dualnet run`'s pose path on a SHREC'17-format folder: depth by default, ``[model] pose_depth = false``
    leaves it out, each recorded in the checkpoint's config and said in the run's report."""
    import torch

    from pipelines.experiment import run_config

    shrec_folder(tmp_path / "shrec")
    base = {"dataset": {"name": "shrec17"}, "keypoints": {"import": "shrec17", "folder": "."},
            "train": {"epochs": 1, "val_split": "test", "flip": 0.0, "batch_size": 4}}
    for pose_depth, line in ((None, "depth: z from the keypoints (every clip has it)"),
                             (False, "depth: left out (the keypoints have it)")):
        model = {"preset": "pose_tiny", **({} if pose_depth is None else {"pose_depth": pose_depth})}
        report = run_config({**base, "model": model}, tmp_path / "shrec", tmp_path / "store",
                            ["extract", "train"])
        assert line in report.lines, report.lines
        config = torch.load(report.checkpoint.parent / "last.pt", weights_only=False)["config"]
        assert config["pose_depth"] is (pose_depth is None)
