"""`dualnet run` / `make reproduce-*`: a folder laid out like MA-52 (and one like iMiGUE) end to end on CPU."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import MA52_VIDEOS, REPO, SHARED, ma52_clips, requires_shared, run_cli
from pipelines.data.datasets import ma52
from pipelines.errors import InputError
from pipelines.experiment import load_config

pytestmark = requires_shared
TINY = ["--set", "model.preset=tiny", "--set", "train.epochs=2", "--set", "train.batch_size=3"]


def ma52_like(root: Path) -> Path:
    """MA-52's layout over the 6 sample clips: annotations/ with the official label files and list files naming
    the clips (train and val: the labels their codes give; test: hidden, 0) and videos/. The three lists name the
    same 6 files (a real release has different clips in each)."""
    annotations = root / "annotations"
    annotations.mkdir(parents=True)
    for name in ("label_name.txt", "fine_to_coarse.tsv"):
        shutil.copy(SHARED / "ma52" / "annotations" / name, annotations / name)
    names = [line.split(maxsplit=1)[1].strip().lower().replace(" ", "_")
             for line in (annotations / "label_name.txt").read_text().splitlines() if line.strip()]
    (root / "videos").mkdir(parents=True)
    for clip in ma52_clips():
        os.link(clip, root / "videos" / clip.name)
    for split in ("train", "val", "test"):
        lines = []
        for clip in ma52_clips():
            action = clip.stem.split("__")[0].split("_", 1)[1]
            label = next((i for i, n in enumerate(names) if n == action), 0) if split != "test" else 0
            lines.append(f"{clip.name} {label}")
        (annotations / f"{split}_list_videos.txt").write_text("\n".join(lines) + "\n")
    return root


def test_make_reproduce_ma52_runs_end_to_end_on_cpu(ma52_store, tmp_path):
    root = ma52_like(tmp_path / "MA-52")
    index = ma52(root / "annotations", root / "videos")
    assert all(Path(c.source).is_file() for c in index.clips) and len(index.split("val")) == 6
    store = tmp_path / "store"
    shutil.copytree(ma52_store.root, store)  # the same clip contents: extract finds them done
    result = subprocess.run(["make", "-s", "reproduce-ma52", f"MA52_ROOT={root}", f"STORE={store}",
                             f"RUN_ARGS={' '.join(TINY)}"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "extract" in result.stdout and "0 processed, 6 skipped" in result.stdout
    assert "trained 2 epoch(s)" in result.stdout and "eval val: top1" in result.stdout
    submission = next((store / "train").glob("*/eval-test-*/prediction.csv"))
    table = pd.read_csv(submission)
    assert len(table) == 6 and list(table.columns[:2]) == ["vid", "action_pred_1"]
    assert next((store / "train").glob("*/eval-val-*/report.html")).stat().st_size > 10_000
    # everything again: each stage finds its work done
    again = run_cli("run", "configs/ma52.toml", "--root", str(root), "--store", str(store), *TINY)
    assert again.returncode == 0, again.stderr
    lines = {line.split()[0]: line for line in again.stdout.splitlines() if line.strip()}
    for stage in ("extract", "tubes"):
        assert "0 processed, 6 skipped, 0 failed" in lines[stage], again.stdout
    assert "already trained" in lines["train"] and "eval val: top1" in again.stdout


def test_imigue_like_segments_are_cut_then_run(ma52_store, tmp_path):
    """Two long 'press conference' videos (3 sample clips each, concatenated); 6 labelled segments by frame range."""
    from test_predict import concatenate

    root = tmp_path / "iMiGUE"
    (root / "videos").mkdir(parents=True)
    rows = ["video_id,label_id,start_frame,end_frame,subject_id"]
    clips = ma52_clips()
    for v, subject in enumerate(("s1", "s2")):
        truth = concatenate(clips[3 * v:3 * v + 3], root / "videos" / f"conf{v}.mp4", scale=0.5)
        for label, (_, start, end) in enumerate(truth):
            rows.append(f"conf{v},{3 * v + label},{round(start * 30)},{round(end * 30)},{subject}")
    (root / "segments.csv").write_text("\n".join(rows) + "\n")
    (root / "class_names_32.txt").write_text("".join(f"{i} class_{i}\n" for i in range(6)))
    store = tmp_path / "store"
    overrides = [*TINY, "--set", 'dataset.test_subjects=["s2"]', "--set", "train.val_split=''"]
    result = run_cli("run", "configs/imigue.toml", "--root", str(root), "--store", str(store), "--stages",
                     "cut,extract,tubes,train", *overrides)
    assert result.returncode == 0, result.stderr
    assert "cut: 6 segment clip(s)" in result.stdout and "extract" in result.stdout
    assert "6 processed, 0 skipped, 0 failed" in result.stdout and "trained 2 epoch(s)" in result.stdout
    cut = sorted(p.name for p in (store / "clips" / "imigue").glob("*.mp4"))
    assert cut == sorted(f"conf{v}_{r.split(',')[2]}_{r.split(',')[3]}.mp4"
                         for v in (0, 1) for r in rows[1 + 3 * v:4 + 3 * v])
    from pipelines.io.video import probe

    lengths = sorted(probe(store / "clips" / "imigue" / name).declared_frames for name in cut)
    want = sorted(int(r.split(",")[3]) - int(r.split(",")[2]) for r in rows[1:])
    assert lengths == want


def test_ma52_videos_in_split_folders_are_found(tmp_path):
    root = ma52_like(tmp_path / "MA-52")
    clip = ma52_clips()[0]
    (root / "videos" / "test").mkdir()
    (root / "videos" / clip.name).rename(root / "videos" / "test" / clip.name)  # as the release ships test clips
    index = ma52(root / "annotations", root / "videos")
    sources = {c.split: Path(c.source) for c in index.clips if c.clip_id == clip.stem}
    assert sources["test"] == root / "videos" / "test" / clip.name
    assert sources["train"] == root / "videos" / clip.name  # named there, not found anywhere: kept as named


def test_bad_configs_fail_with_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\npreset = 'x'\n")
    with pytest.raises(InputError, match="bad.toml: not valid TOML"):
        load_config(bad)
    with pytest.raises(InputError, match="override 'epochs=3' is not table.field=value"):
        load_config(REPO / "configs" / "ma52.toml", ["epochs=3"])
    assert load_config(REPO / "configs" / "ma52.toml", ["train.epochs=3", "model.preset=tiny"])["train"] == {
        **load_config(REPO / "configs" / "ma52.toml")["train"], "epochs": 3}
    result = run_cli("run", "configs/ma52.toml", "--root", str(tmp_path / "nowhere"), "--store", str(tmp_path / "s"))
    assert result.returncode == 2 and "nowhere" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run(["make", "-s", "reproduce-ma52"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0 and "set MA52_ROOT=" in result.stdout


def test_configs_hold_the_paper_settings(tmp_path):
    from pipelines.experiment import _checkpoint_file

    (tmp_path / "best.pt").touch()
    (tmp_path / "last.pt").touch()
    for name, k, reported in (("ma52", "k6", "best.pt"), ("imigue", "k5", "last.pt")):
        cfg = load_config(REPO / "configs" / f"{name}.toml")
        assert cfg["model"]["preset"] == "paper" and cfg["model"]["num_frames"] == 8
        assert cfg["model"]["mac_lambda"] == 0.1 and cfg["tubes"]["entity_set"] == k
        # iMiGUE's only held-out split is its test split: the last epoch is reported, no model chosen on it (13)
        assert _checkpoint_file(cfg, tmp_path) == reported
    assert MA52_VIDEOS.is_dir()


def test_imigue_pose_alone_from_its_openpose_skeletons(tmp_path):
    """`[keypoints] import = "openpose"` + a pose preset: iMiGUE's skeleton folders (one per video, OpenPose JSON
    per frame) are imported, the CSV's segments cut from them by frame range, trained on and evaluated: no video,
    cut, extract or tubes (issue 14.1)."""
    from test_importers import write_openpose_clip

    from pipelines.data.datasets import imigue
    from pipelines.formats.keypoints import KeypointSet
    from pipelines.formats.params import ImportParams

    root = tmp_path / "iMiGUE"
    rows = ["video_id,label_id,start_frame,end_frame,subject_id"]
    for v, subject in enumerate(("s1", "s2", "s3")):
        write_openpose_clip(root / "skeletons" / f"conf{v}", frames=60, seed=v)
        rows += [f"conf{v},{label},{10 + 20 * label},{25 + 20 * label},{subject}" for label in (0, 1)]
    (root / "segments.csv").write_text("\n".join(rows) + "\n")
    (root / "class_names_32.txt").write_text("0 class_0\n1 class_1\n")
    store = tmp_path / "store"
    result = run_cli("run", "configs/imigue.toml", "--root", str(root), "--store", str(store),
                     "--set", "model.preset=pose_tiny", "--set", "keypoints.import=openpose",
                     "--set", 'dataset.test_subjects=["s3"]', "--set", "train.epochs=2")
    assert result.returncode == 0, result.stderr
    assert "import " in result.stdout and "3 processed, 0 skipped, 0 failed" in result.stdout
    assert "split 'train': 4 of 4 clips" in result.stdout and "trained 2 epoch(s)" in result.stdout
    assert "eval test: top1" in result.stdout
    assert not any((store / stage).exists() for stage in ("clips", "extract", "tubes"))
    keypoints = KeypointSet(store, ImportParams("openpose", fps=25.0))
    index = imigue(root / "segments.csv", root / "videos")
    segments = keypoints.cut({c.clip_id: (c.source.split("/")[-1], c.start, c.end) for c in index.clips})
    np.testing.assert_array_equal(segments.load("conf1_30_45").keypoints, keypoints.load("conf1").keypoints[30:45])
    wrong = run_cli("run", "configs/imigue.toml", "--root", str(root), "--store", str(store), "--stages", "extract",
                    "--set", "keypoints.import=openpose")
    assert wrong.returncode != 0 and "keypoints.import trains on keypoints alone" in wrong.stderr


@requires_shared
@pytest.mark.parametrize("field", ["test_flip=true", "rotate=10"])
def test_run_refuses_pose_only_training_fields_for_a_tube_preset(tmp_path, field):
    """`train.test_flip` and `train.rotate` act on pose-only samples: with a preset that trains on tubes, `dualnet run`
    stops with one line before any stage runs, rather than training without them."""
    root = ma52_like(tmp_path / "MA-52")
    result = run_cli("run", "configs/ma52.toml", "--root", str(root), "--store", str(tmp_path / "store"),
                     "--set", "model.preset=tiny", "--set", f"train.{field}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    name = field.split("=")[0]
    assert f"train.{name}: preset 'tiny' trains on tubes" in result.stderr
    assert not (tmp_path / "store" / "extract").exists()
