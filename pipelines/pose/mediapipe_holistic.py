"""MediaPipe Holistic (0.10.14, models bundled, runs offline): 33 body + 2 x 21 hand + 468 face points."""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager

import numpy as np

from dualnet.layouts import MEDIAPIPE_HOLISTIC

N_BODY, N_HAND = 33, 21


def _quiet_native_logs() -> None:
    # MediaPipe's C++ side logs through glog/absl to stderr; keep one-line errors readable.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # protobuf 4 warns on every graph MediaPipe 0.10.14 builds; it is MediaPipe's call, not ours to act on.
    warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated")


@contextmanager
def _stderr_silenced():
    """Point file descriptor 2 at /dev/null for the duration (native libraries write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class HolisticEstimator:
    """One person per frame, tracked by MediaPipe across consecutive frames of one video.

    Call `reset()` between videos: Holistic keeps tracking state from frame to frame.

    Args:
        model_complexity: 0, 1 or 2 (pose landmark model size).
        min_detection_confidence: Person detector threshold.
        min_tracking_confidence: Below this the tracker re-detects.
    """

    layout = MEDIAPIPE_HOLISTIC

    def __init__(self, model_complexity: int = 1, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5):
        _quiet_native_logs()
        import mediapipe as mp  # imported here: the model package and loaders must not need mediapipe

        self._holistic_cls = mp.solutions.holistic.Holistic
        self._kwargs = dict(static_image_mode=False, model_complexity=model_complexity, smooth_landmarks=True,
                            refine_face_landmarks=False, min_detection_confidence=min_detection_confidence,
                            min_tracking_confidence=min_tracking_confidence)
        self._model = None
        self._fresh = False

    def reset(self) -> None:
        """Forget the tracking state (start of a new video)."""
        # Graph start-up and the first inference log a dozen native warnings per video ("Feedback manager requires a
        # model with a single signature...") that nobody can act on; they would bury our one-line errors.
        with _stderr_silenced():
            if self._model is None:
                self._model = self._holistic_cls(**self._kwargs)
            else:
                self._model.reset()  # restarts the graph: no state carries over from the previous video
        self._fresh = True

    def close(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None

    def __call__(self, rgb: np.ndarray) -> list[np.ndarray]:
        """People in one frame: a list of zero or one (V, 3) array of x, y in pixels and score.

        Body scores are MediaPipe's visibility; a detected hand or face has score 1 on its points, a missing one
        NaN coordinates and score 0.
        """
        if self._model is None:
            self.reset()
        h, w = rgb.shape[:2]
        if self._fresh:
            with _stderr_silenced():
                result = self._model.process(rgb)
            self._fresh = False
        else:
            result = self._model.process(rgb)
        if result.pose_landmarks is None:
            return []
        v = self.layout.num_keypoints
        person = np.full((v, 3), np.nan)
        person[:, 2] = 0.0
        body = result.pose_landmarks.landmark
        person[:N_BODY] = [(p.x * w, p.y * h, p.visibility) for p in body]
        parts = ((result.left_hand_landmarks, N_BODY), (result.right_hand_landmarks, N_BODY + N_HAND),
                 (result.face_landmarks, N_BODY + 2 * N_HAND))
        for landmarks, start in parts:
            if landmarks is not None:
                pts = landmarks.landmark
                person[start:start + len(pts)] = [(p.x * w, p.y * h, 1.0) for p in pts]
        return [person]
