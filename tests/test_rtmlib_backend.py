"""The rtmlib backend of `extract`, run through rtmlib's real pre/post-processing with small ONNX models that this
test builds with the real input/output shapes (the real weights cannot be downloaded here)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import requires_shared, run_cli, shortest_clip

pytest.importorskip("rtmlib", reason="rtmlib is not installed (make setup installs it)")
pytest.importorskip("onnx", reason="onnx is needed to build the test models")
torch = pytest.importorskip("torch")

from dualnet.layouts import COCO_WHOLEBODY  # noqa: E402
from pipelines.formats.keypoints import KeypointSet  # noqa: E402
from pipelines.formats.params import ExtractParams  # noqa: E402
from pipelines.stages.extract import run_extract  # noqa: E402

pytestmark = requires_shared
FRAME_W, FRAME_H = 1080, 1296  # the MA-52 clips
RATIO = min(640 / FRAME_H, 640 / FRAME_W)  # YOLOX letterbox scale for those frames
SUBJECT = (300.0, 300.0, 800.0, 1100.0)  # x1, y1, x2, y2 in frame pixels
BYSTANDER = (900.0, 100.0, 1000.0, 250.0)
K, POSE_W, POSE_H = 133, 192, 256


class _Detector(torch.nn.Module):
    """YOLOX with baked-in NMS: input (1, 3, 640, 640), output (1, N, 5) = box in input pixels + score."""

    def __init__(self):
        super().__init__()
        dets = [[*(v * RATIO for v in SUBJECT), 0.9], [*(v * RATIO for v in BYSTANDER), 0.95]]
        self.register_buffer("dets", torch.tensor([dets], dtype=torch.float32))

    def forward(self, x):
        return self.dets + 0 * x.mean()


def pose_pattern() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each keypoint peaks in the crop (u, v in [0, 1]) and its peak value."""
    k = np.arange(K)
    u = 0.3 + 0.4 * (k % 10) / 9
    v = 0.3 + 0.4 * (k // 10) / 13
    u[0] = v[0] = 0.5  # the nose at the crop centre
    peak = np.where(k % 2 == 0, 0.8, 3.0)  # SimCC maxima above 1 must come out clipped
    return u, v, peak


class _Pose(torch.nn.Module):
    """RTMW-shaped: input (1, 3, 256, 192), outputs simcc_x (1, 133, 384) and simcc_y (1, 133, 512)."""

    def __init__(self):
        super().__init__()
        u, v, peak = pose_pattern()
        sx, sy = np.zeros((1, K, 2 * POSE_W), np.float32), np.zeros((1, K, 2 * POSE_H), np.float32)
        sx[0, np.arange(K), np.round(u * 2 * POSE_W).astype(int)] = peak
        sy[0, np.arange(K), np.round(v * 2 * POSE_H).astype(int)] = peak
        self.register_buffer("sx", torch.from_numpy(sx))
        self.register_buffer("sy", torch.from_numpy(sy))

    def forward(self, x):
        zero = 0 * x.mean()
        return self.sx + zero, self.sy + zero


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    det, pose = folder / "det.onnx", folder / "pose.onnx"
    torch.onnx.export(_Detector(), torch.zeros(1, 3, 640, 640), det, dynamo=False, input_names=["input"],
                      output_names=["dets"])
    torch.onnx.export(_Pose(), torch.zeros(1, 3, POSE_H, POSE_W), pose, dynamo=False, input_names=["input"],
                      output_names=["simcc_x", "simcc_y"])
    return det, pose


def test_estimator_maps_keypoints_into_the_frame(onnx_models):
    from pipelines.io.video import iter_frames
    from pipelines.pose.rtmlib_wholebody import RTMLibEstimator

    _, rgb = next(iter(iter_frames(shortest_clip())))
    people = RTMLibEstimator(*map(str, onnx_models))(rgb)
    assert len(people) == 2 and all(p.shape == (K, 3) for p in people)
    subject = max(people, key=lambda p: np.ptp(p[:, 0]))
    cx, cy = (SUBJECT[0] + SUBJECT[2]) / 2, (SUBJECT[1] + SUBJECT[3]) / 2
    np.testing.assert_allclose(subject[0, :2], [cx, cy], atol=2.0)  # crop centre -> box centre
    _, _, peak = pose_pattern()
    np.testing.assert_allclose(subject[:, 2], np.clip(peak, 0, 1), atol=1e-6)


def test_extract_with_rtmlib_keeps_the_main_subject(onnx_models, tmp_path):
    det, pose = onnx_models
    params = ExtractParams(backend="rtmlib", det_model=str(det), pose_model=str(pose))
    report = run_extract([str(shortest_clip())], tmp_path / "store", params, workers=1)
    assert report.processed == [shortest_clip().stem] and not report.failed
    clip = KeypointSet(tmp_path / "store", params).load(shortest_clip().stem)
    assert clip.layout == COCO_WHOLEBODY.name and clip.keypoints.shape == (50, 133, 3) and clip.detected.all()
    xy = clip.keypoints[..., :2]
    pad_w = (SUBJECT[2] - SUBJECT[0]) * 0.25
    assert (xy[..., 0] > SUBJECT[0] - pad_w).all() and (xy[..., 0] < SUBJECT[2] + pad_w).all()
    assert (xy[..., 0] < BYSTANDER[0]).all()  # never the bystander, although its detection scores higher


@pytest.mark.skipif(not (os.environ.get("DUALNET_RTMLIB_DET") and os.environ.get("DUALNET_RTMLIB_POSE")),
                    reason="set DUALNET_RTMLIB_DET and DUALNET_RTMLIB_POSE to real rtmlib ONNX files to run this")
def test_real_rtmlib_weights_find_the_person(tmp_path):
    params = ExtractParams(backend="rtmlib", det_model=os.environ["DUALNET_RTMLIB_DET"],
                           pose_model=os.environ["DUALNET_RTMLIB_POSE"])
    run_extract([str(shortest_clip())], tmp_path / "store", params)
    clip = KeypointSet(tmp_path / "store", params).load(shortest_clip().stem)
    assert clip.detected.mean() > 0.95
    nose = clip.keypoints[:, COCO_WHOLEBODY.index("nose"), :2]
    assert ((nose[:, 0] > 0) & (nose[:, 0] < FRAME_W) & (nose[:, 1] > 0) & (nose[:, 1] < FRAME_H)).all()


def test_device_cuda_reaches_onnxruntime_or_fails_as_one_line(onnx_models, tmp_path, monkeypatch):
    """`extract --device cuda` (issue 13): where onnxruntime has no CUDA provider, one line and nothing written;
    where it has one, both rtmlib models are opened on cuda. The device is where the model runs, not what it
    computes: it leaves the store key as it is."""
    import onnxruntime
    import rtmlib

    from pipelines.formats.params import extract_key
    from pipelines.stages.extract import make_estimator

    det, pose = onnx_models
    assert extract_key(ExtractParams(backend="rtmlib", device="cuda")) == extract_key(ExtractParams(backend="rtmlib"))
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        result = run_cli("extract", str(shortest_clip()), "--store", str(tmp_path / "store"), "--backend", "rtmlib",
                         "--det-model", str(det), "--pose-model", str(pose), "--device", "cuda")
        assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "no CUDA provider" in result.stderr and "--device cpu" in result.stderr
        assert not (tmp_path / "store" / "extract").exists()
    mediapipe = run_cli("extract", str(shortest_clip()), "--store", str(tmp_path / "mp"), "--device", "cuda")
    assert mediapipe.returncode != 0 and "MediaPipe's Python solutions run on the CPU only" in mediapipe.stderr

    opened = {}

    def recorder(kind):
        def build(model, **options):
            opened[kind] = options["device"]
        return build

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider",
                                                                       "CPUExecutionProvider"])
    monkeypatch.setattr(rtmlib, "YOLOX", recorder("detector"))
    monkeypatch.setattr(rtmlib, "RTMPose", recorder("pose"))
    make_estimator(ExtractParams(backend="rtmlib", det_model=str(det), pose_model=str(pose), device="cuda"))
    assert opened == {"detector": "cuda", "pose": "cuda"}
