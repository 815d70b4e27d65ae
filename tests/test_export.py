"""`dualnet export --onnx`: ONNX Runtime agrees with torch on trained checkpoints (RGB+pose and pose-only)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch

import dualnet
from conftest import run_cli
from pipelines.data.clips import LabelledClips
from pipelines.formats.checkpoints import load_model
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.params import TrainParams, TubeParams
from pipelines.formats.tube_packs import TubeSet
from pipelines.stages.export import compare_onnx, example_inputs, export_onnx
from pipelines.stages.train import train


@pytest.fixture(scope="module")
def checkpoints(ma52_tubes, tmp_path_factory):
    """A tiny RGB+pose model and a pose-only one with a coarse head, each trained for one epoch."""
    root = tmp_path_factory.mktemp("export_store")
    shutil.copytree(ma52_tubes.store.root, root, dirs_exist_ok=True)
    tubes = TubeSet(root)
    names = tuple(tubes.names())
    clips = LabelledClips(names, tuple(range(6)), coarse=(0, 0, 0, 1, 1, 1))
    params = TrainParams(epochs=1, batch_size=3)
    rgb = train(dualnet.preset("tiny", num_classes=6), tubes, LabelledClips(names, tuple(range(6))), None, params,
                classes=list(names))
    pose = train(dualnet.preset("pose_tiny", num_classes=6, num_coarse=2), KeypointSet(root), clips, None, params)
    roi = train(dualnet.preset("tiny", num_classes=6, sem="roialign"), tubes, LabelledClips(names, tuple(range(6))),
                None, params, classes=list(names))
    return {"tiny": rgb.run_dir / "last.pt", "pose_tiny": pose.run_dir / "last.pt", "roialign": roi.run_dir / "last.pt"}


@pytest.mark.parametrize("preset", ["tiny", "pose_tiny", "roialign"])
def test_onnx_runtime_agrees_with_torch(checkpoints, tmp_path, preset):
    path = export_onnx(checkpoints[preset], tmp_path / f"{preset}.onnx")
    assert compare_onnx(checkpoints[preset], path, batch=3) < 1e-4  # exported at batch 2: the batch axis is free
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    model = load_model(checkpoints[preset])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(meta["inputs"])
    inputs = example_inputs(model, TubeParams(**meta["tubes"]), batch=1, seed=5)
    if "keypoints" in inputs:  # missing points (NaN) take the same path in both
        inputs["keypoints"][0, :, :40] = float("nan")
    outputs = session.run(None, {n: x.numpy() for n, x in inputs.items()})
    with torch.no_grad():
        ref = model(**inputs)
    np.testing.assert_allclose(outputs[0], ref.logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(outputs[1], ref.routing.numpy(), atol=1e-5)
    if preset == "pose_tiny":
        assert meta["outputs"] == ["logits", "routing", "coarse_logits"]
        np.testing.assert_allclose(outputs[2], ref.coarse_logits.numpy(), atol=1e-4)
    else:
        images = {"tiny": "tubes", "roialign": "frame_boxes"}[preset]  # ROIAlign pools the frames: no crops
        assert meta["classes"][0].startswith("A1_") and set(meta["inputs"]) == {images, "frames", "keypoints",
                                                                              "boxes"}


def test_cli_export_checks_and_bad_checkpoint(checkpoints, tmp_path):
    result = run_cli("export", str(checkpoints["tiny"]), "--onnx", str(tmp_path / "m.onnx"))
    assert result.returncode == 0, result.stderr
    assert "max |logit difference|" in result.stdout and (tmp_path / "m.onnx").stat().st_size > 10_000
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = run_cli("export", str(bad), "--onnx", str(tmp_path / "bad.onnx"))
    assert result.returncode == 2 and f"{bad}: not a dualnet checkpoint" in result.stderr
    assert not (tmp_path / "bad.onnx").exists()
