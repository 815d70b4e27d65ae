"""Whole-body 133 keypoints (COCO-WholeBody) with rtmlib's ONNX pipeline: a person detector, then RTMW/DWPose on
every detected person. All people are returned; `pipelines.pose.subject` keeps the main one across frames."""

from __future__ import annotations

import numpy as np

from dualnet.layouts import COCO_WHOLEBODY

# rtmlib's Wholebody 'balanced' mode: YOLOX-m (HumanArt) + RTMW-x 256x192 (cocktail14), from OpenMMLab's servers.
DEFAULT_DET = "https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/onnx_sdk/yolox_m_8xb8-300e_humanart-c2c7a14a.zip"
DEFAULT_POSE = ("https://download.openmmlab.com/mmpose/v1/projects/rtmw/onnx_sdk/"
                "rtmw-dw-x-l_simcc-cocktail14_270e-256x192_20231122.zip")
DEFAULT_DET_INPUT = (640, 640)  # (h, w) as rtmlib takes it
DEFAULT_POSE_INPUT = (192, 256)  # (w, h) as rtmlib takes it


class RTMLibEstimator:
    """Detector + top-down whole-body pose model through rtmlib (onnxruntime backend).

    Args:
        det_model: Path to the detector ONNX (YOLOX with baked-in NMS: output (1, N, 5) boxes + scores).
        pose_model: Path to the pose ONNX (SimCC heads: simcc_x (1, 133, 2W), simcc_y (1, 133, 2H)).
        device: onnxruntime device, ``cpu`` or ``cuda``.
    """

    layout = COCO_WHOLEBODY

    def __init__(self, det_model: str, pose_model: str, det_input_size: tuple[int, int] = DEFAULT_DET_INPUT,
                 pose_input_size: tuple[int, int] = DEFAULT_POSE_INPUT, det_score: float = 0.5, device: str = "cpu"):
        from rtmlib import YOLOX, RTMPose  # imported here: an optional dependency (the `rtm` extra)

        self.detector = YOLOX(det_model, model_input_size=tuple(det_input_size), score_thr=det_score,
                              backend="onnxruntime", device=device)
        self.pose = RTMPose(pose_model, model_input_size=tuple(pose_input_size), backend="onnxruntime",
                            device=device)

    def reset(self) -> None:
        """No state is kept between frames (tracking is done afterwards)."""

    def close(self) -> None:
        """Nothing to release (onnxruntime sessions go with the object)."""

    def __call__(self, rgb: np.ndarray) -> list[np.ndarray]:
        """People in one frame: a (133, 3) array each, x, y in pixels and score clipped to [0, 1].

        rtmlib follows OpenCV's BGR convention, so the frame is flipped to BGR first. RTMPose's SimCC maxima are not
        probabilities (they can exceed 1); they are clipped so that scores mean the same in every layout.
        """
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        boxes = self.detector(bgr)
        if len(boxes) == 0:
            return []
        keypoints, scores = self.pose(bgr, bboxes=list(boxes))  # (N, 133, 2), (N, 133)
        return [np.column_stack([keypoints[i], np.clip(scores[i], 0.0, 1.0)]) for i in range(len(keypoints))]
