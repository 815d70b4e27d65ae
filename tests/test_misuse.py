"""Misuse a careless user tries (issue 15): each ends in one error line naming the file, never a traceback or a
misleading success."""

from __future__ import annotations

import pickle
import subprocess
from dataclasses import asdict

import numpy as np
import pytest
import torch
import typer.main

import dualnet
from cli.main import app
from conftest import MA52_VIDEOS, requires_shared, run_cli, shortest_clip
from dualnet.model import MicroDualNet
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.params import ImportParams


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    """The only non-empty line of stderr, which must be an error (no traceback, no second line)."""
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def test_malformed_csv_row_names_the_file_and_row(tmp_path):
    (tmp_path / "store").mkdir()
    short = tmp_path / "short.csv"
    short.write_text("path,label,split\na.mp4,B1,train\nb.mp4\nc.mp4,B2,val\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("path,label,split\na.mp4,B1,train\n\nb.mp4,,val\n")
    for csv, problem in ((short, f"{short}:3: row has 1 field(s), the header has 3 (path,label,split)"),
                         (empty, f"{empty}:4: empty label")):
        for args in (("datasets", "show", "csv", str(csv)),
                     ("train", "--dataset", "csv", "--root", str(csv), "--store", str(tmp_path / "store"))):
            result = run_cli(*args)
            assert result.returncode == 2 and problem in _one_error_line(result), result.stderr


@requires_shared
def test_a_file_that_is_not_a_checkpoint_fails_in_every_command(ma52_tubes, tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    foreign = tmp_path / "foreign.pt"
    torch.save({"a": 1}, foreign)
    clips = tmp_path / "clips.csv"
    clips.write_text("path,label,split\n" + "".join(f"{v},{v.name[:2]},val\n" for v in MA52_VIDEOS.glob("*.mp4")))
    store = str(ma52_tubes.store.root)
    for bad, problem in ((text, "not a dualnet checkpoint ("),
                         (foreign, "not a dualnet checkpoint (a torch file without 'model' and 'config')")):
        for args in (("eval", "--dataset", "csv", "--root", str(clips), "--store", store, "--checkpoint", str(bad)),
                     ("predict", str(shortest_clip()), "--checkpoint", str(bad), "--store", str(tmp_path / "s")),
                     ("export", str(bad), "--onnx", str(tmp_path / "m.onnx"))):
            result = run_cli(*args)
            assert result.returncode == 2 and f"{bad}: {problem}" in _one_error_line(result), (args, result.stderr)
    assert not (tmp_path / "m.onnx").exists()


@requires_shared
def test_a_file_name_too_long_for_the_store_fails_alone(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    long_name = folder / ("A0_" + "x" * 243 + ".mp4")  # 250 characters; sorts before the good clip
    long_name.symlink_to(shortest_clip())
    store = tmp_path / "store"
    result = run_cli("extract", str(folder), str(shortest_clip()), "--store", str(store))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{long_name}: file name too long" in errors[0], result.stderr
    assert "1 processed, 0 skipped, 1 failed" in result.stdout, result.stdout
    keypoints = KeypointSet(store)
    assert keypoints.names() == [shortest_clip().stem] and list(keypoints.output.failures()) == [long_name.stem]


def test_an_imported_clip_name_too_long_for_the_store_fails_alone(tmp_path):
    long_name = "A0_" + "x" * 297
    clips = [{"frame_dir": name, "label": 0, "keypoint": np.ones((1, 8, 17, 2), np.float32),
              "keypoint_score": np.ones((1, 8, 17), np.float32), "total_frames": 8, "img_shape": (480, 640)}
             for name in (long_name, "short")]
    source = tmp_path / "poses.pkl"
    source.write_bytes(pickle.dumps({"split": {"train": [long_name, "short"]}, "annotations": clips}))
    store = tmp_path / "store"
    result = run_cli("import", "pyskl", str(source), "--layout", "coco_17", "--store", str(store))
    assert result.returncode == 1 and f"{source}: clip '{long_name}': name too long" in _one_error_line(result)
    assert "1 processed, 0 skipped, 1 failed" in result.stdout, result.stdout
    assert KeypointSet(store, ImportParams(format="pyskl", layout="coco_17")).names() == ["short"]


def test_export_to_a_folder_fails_before_writing(tmp_path):
    config = dualnet.preset("pose_tiny", num_classes=2)
    checkpoint = tmp_path / "best.pt"
    torch.save({"model": MicroDualNet(config).state_dict(), "config": asdict(config)}, checkpoint)
    folder = tmp_path / "out"
    folder.mkdir()
    result = run_cli("export", str(checkpoint), "--onnx", str(folder))
    assert result.returncode == 2 and f"{folder}: is a folder" in _one_error_line(result), result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["best.pt", "out"]


def test_readers_refuse_a_store_that_does_not_exist(tmp_path):
    missing, regular = tmp_path / "nope", tmp_path / "file"
    regular.write_text("not a store\n")
    clips = tmp_path / "clips.csv"
    clips.write_text("path,label,split\na.mp4,A1,train\nb.mp4,B1,train\n")
    for store, problem in ((missing, "no store here (the folder does not exist)"),
                           (regular, "no store here (not a folder)")):
        result = run_cli("status", "--store", str(store))
        assert result.returncode == 1 and f"{store}: {problem}" in _one_error_line(result), result.stderr
    for args in (("gc",), ("show", "clip"), ("tubes",), ("train", "--dataset", "csv", "--root", str(clips)),
                 ("eval", "--dataset", "csv", "--root", str(clips), "--checkpoint", str(clips))):
        result = run_cli(*args, "--store", str(missing))
        assert f"{missing}: no store here (the folder does not exist)" in _one_error_line(result), (args, result)
    assert not missing.exists()


def test_training_on_one_class_names_the_dataset_file(tmp_path):
    (tmp_path / "store").mkdir()
    clips = tmp_path / "clips.csv"
    clips.write_text("path,label,split\na.mp4,B1,train\nb.mp4,B1,train\nc.mp4,B1,val\n")
    result = run_cli("train", "--dataset", "csv", "--root", str(clips), "--store", str(tmp_path / "store"))
    line = _one_error_line(result)
    assert result.returncode == 2
    assert f"{clips}: the train split has 1 class (label 'B1'); training needs at least 2" in line, line


@pytest.mark.parametrize(("option", "message"), [
    ("--test-flip", "--test-flip: preset 'tiny' trains on tubes; the test-time flip is for pose presets"),
    ("--depth", "--depth: preset 'tiny' trains on tubes (x, y); depth is for pose presets"),
    ("--rotate=10", "--rotate: preset 'tiny' trains on tubes; rotating clips is for pose presets"),
])
def test_a_pose_only_option_for_a_tube_preset_is_refused_not_ignored(tmp_path, option, message):
    (tmp_path / "store").mkdir()
    clips = tmp_path / "clips.csv"
    clips.write_text("path,label,split\na.mp4,B1,train\nb.mp4,B2,train\nc.mp4,B1,val\n")
    result = run_cli("train", "--dataset", "csv", "--root", str(clips), "--store", str(tmp_path / "store"),
                     "--preset", "tiny", option)
    line = _one_error_line(result)
    assert message in line, line


def _hand_pickle(path, depth: bool) -> None:
    """A pyskl pickle of 12 hands (SHREC'17's 22 joints), 2 classes, train / val; (M, T, V, 3) = x, y, z with
    `depth`, else (M, T, V, 2)."""
    rng = np.random.default_rng(0)
    annotations, split = [], {"train": [], "val": []}
    for i in range(12):
        kp = rng.uniform(300, 500, (1, 16, 22, 3 if depth else 2))
        annotations.append({"frame_dir": f"hand_{i:02d}", "label": i % 2, "keypoint": kp, "total_frames": 16})
        split["train" if i < 8 else "val"].append(f"hand_{i:02d}")
    path.write_bytes(pickle.dumps({"split": split, "annotations": annotations}))


def test_depth_without_depth_in_the_data_is_one_line_in_train_and_eval(tmp_path):
    """`train --depth` on 2D keypoints, and evaluating a model trained with depth on 2D keypoints: one line each,
    naming the problem, never a shape error from inside the model."""
    stores = {}
    for name, depth in (("flat", False), ("deep", True)):
        _hand_pickle(tmp_path / f"{name}.pkl", depth)
        stores[name] = tmp_path / f"store_{name}"
        result = run_cli("import", "pyskl", str(tmp_path / f"{name}.pkl"), "--layout", "shrec17_22", "--store",
                         str(stores[name]))
        assert result.returncode == 0, result.stderr
    train = ("train", "--dataset", "pyskl", "--preset", "pose_tiny", "--epochs", "1", "--flip", "0")
    result = run_cli(*train, "--root", str(tmp_path / "flat.pkl"), "--store", str(stores["flat"]), "--depth")
    line = _one_error_line(result)
    assert result.returncode == 2 and "--depth: the keypoints (import " in line, line
    assert "carry no depth (z) for 12 of the 12 clips, e.g. 'hand_00': depth needs a 3D source" in line, line
    result = run_cli(*train, "--root", str(tmp_path / "deep.pkl"), "--store", str(stores["deep"]))
    assert result.returncode == 0 and "depth: z from the keypoints" in result.stdout, result.stderr
    (checkpoint,) = (stores["deep"] / "train").glob("*/last.pt")
    result = run_cli("eval", "--dataset", "pyskl", "--root", str(tmp_path / "flat.pkl"), "--store",
                     str(stores["flat"]), "--checkpoint", str(checkpoint))
    line = _one_error_line(result)
    assert "the model takes depth (pose_depth), but 4 of the 4 clips have none (2D keypoints), e.g. 'hand_08'" in line


def test_every_help_is_readable_at_80_columns():
    root = typer.main.get_command(app)
    commands = [((name,), cmd) for name, cmd in root.commands.items()]
    commands += [((name, sub), cmd) for name, group in root.commands.items()
                 for sub, cmd in getattr(group, "commands", {}).items()]
    for path, command in [((), root), *commands]:
        result = run_cli(*path, "--help", env={"COLUMNS": "80"})
        assert result.returncode == 0 and not result.stderr, (path, result.stderr)
        lines = result.stdout.splitlines()
        assert max(len(line) for line in lines) <= 80 and "…" not in result.stdout, (path, result.stdout)
        for option in (opt for param in command.params for opt in param.opts if opt.startswith("--")):
            assert any(option in line.split() or f"{option}," in line for line in lines), (path, option)


@requires_shared
def test_status_fits_80_columns_and_shows_the_backend_parameters(ma52_store):
    result = run_cli("status", "--store", str(ma52_store.root), env={"COLUMNS": "80"})
    assert result.returncode == 0 and not result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in result.stdout, result.stdout
    key = next(out.key for out in ma52_store.outputs() if out.stage == "extract")
    assert any(key in line for line in lines), result.stdout
    text = " ".join(result.stdout.split())
    assert "backend=mediapipe" in text and "model_complexity=1" in text and "dtype=float32" in text, text
    assert not any(p in text for p in ("det_model", "pose_model", "det_input_size", "pose_input_size")), text


@requires_shared
def test_training_the_paper_preset_offline_says_how_to_go_on(ma52_tubes, tmp_path):
    """Issue 13: the ImageNet start cannot be downloaded (nothing listens on port 9): one line naming the URL and
    the two ways on, before anything is trained; never a silent random start."""
    import shutil

    shutil.copytree(ma52_tubes.store.root, tmp_path / "store")
    clips = tmp_path / "clips.csv"
    clips.write_text("path,label,split\n" + "".join(f"{v},{v.name[:2]},train\n" for v in MA52_VIDEOS.glob("*.mp4")))
    url = "http://127.0.0.1:9/resnet18-f37072fd.pth"
    result = run_cli("train", "--dataset", "csv", "--root", str(clips), "--store", str(tmp_path / "store"),
                     "--preset", "small", "--val-split", "", "--pretrained", url, "--epochs", "1")
    line = _one_error_line(result)
    assert result.returncode == 2 and url in line and "--pretrained PATH" in line and "--pretrained none" in line
    assert not (tmp_path / "store" / "train").exists()
