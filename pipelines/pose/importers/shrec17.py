"""SHREC'17 / DHG-14/28 hand gestures (De Smedt et al., 3DOR 2017), in the dataset's own folder layout.

``<root>/train_gestures.txt`` and ``test_gestures.txt`` list one sequence a line: ``gesture finger subject essai
label_14 label_28 frames``; the sequence is ``<root>/gesture_<g>/finger_<f>/subject_<s>/essai_<e>/
skeletons_world.txt``, one frame a line of 66 numbers (22 joints x, y, z in metres, depth-camera world coordinates).

x, y and z are all kept, in millimetres (so that boxes and scales are in the same range as pixel data): x, y and a
score as the item's keypoints, z as its depth array; every joint is tracked in every frame (score 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dualnet.layouts import SHREC17_22
from pipelines.errors import InputError
from pipelines.pose.importers import ImportedClip

LISTS = ("train_gestures.txt", "test_gestures.txt")
GESTURES = ("grab", "tap", "expand", "pinch", "rotation_cw", "rotation_ccw", "swipe_right", "swipe_left",
            "swipe_up", "swipe_down", "swipe_x", "swipe_plus", "swipe_v", "shake")  # label_14 order (1-based)
FINGERS = ("one_finger", "whole_hand")  # finger 1, 2: label_28 = 2 * (gesture - 1) + finger


def clip_name(gesture: int, finger: int, subject: int, essai: int) -> str:
    return f"shrec17_g{gesture:02d}_f{finger}_s{subject:02d}_e{essai}"


def read_lists(root: Path) -> list[dict]:
    """Every sequence of both official lists: {gesture, finger, subject, essai, label_14, label_28, frames, split,
    path}. A malformed line is an InputError naming the file and line."""
    records = []
    for name in LISTS:
        path = root / name
        if not path.is_file():
            raise InputError(path, "SHREC'17 list not found (the dataset root holds train_gestures.txt, "
                                   "test_gestures.txt and the gesture_* folders)")
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split()
            try:
                g, f, s, e, l14, l28, frames = (int(x) for x in fields)
            except ValueError:
                raise InputError(f"{path}:{number}", f"expected 7 integers (gesture finger subject essai label_14 "
                                                     f"label_28 frames), got {line.strip()!r}") from None
            if not (1 <= g <= 14 and f in (1, 2) and l14 == g and l28 == 2 * (g - 1) + f):
                raise InputError(f"{path}:{number}", f"labels do not agree (gesture {g}, finger {f}, label_14 {l14}, "
                                                     f"label_28 {l28})")
            records.append({"gesture": g, "finger": f, "subject": s, "essai": e, "label_14": l14, "label_28": l28,
                            "frames": frames, "split": name.split("_")[0],
                            "path": root / f"gesture_{g}" / f"finger_{f}" / f"subject_{s}" / f"essai_{e}" /
                            "skeletons_world.txt"})
    return records


def read_shrec17(root: Path, fps: float = 30.0) -> list[ImportedClip]:
    """Every sequence the official lists name, checked against its declared frame count."""
    clips = []
    for r in read_lists(Path(root)):
        path = r["path"]
        try:
            values = np.loadtxt(path, dtype=np.float64, ndmin=2)
        except FileNotFoundError:
            raise InputError(path, "skeleton file not found (listed in the official split)") from None
        except ValueError as e:
            raise InputError(path, f"not 66 numbers a line ({e})") from None
        if values.shape[1] != 66:
            raise InputError(path, f"{values.shape[1]} numbers a line, expected 66 (22 joints x, y, z)")
        if len(values) != r["frames"]:
            raise InputError(path, f"{len(values)} frames, but the list says {r['frames']}")
        xyz = values.reshape(len(values), 22, 3)
        keypoints = np.concatenate([xyz[..., :2] * 1000.0, np.ones((len(values), 22, 1))], axis=-1)
        absent = ~np.isfinite(xyz).all(axis=-1)
        keypoints[absent] = np.nan
        depth = np.where(absent, np.nan, xyz[..., 2] * 1000.0)  # (T, 22) millimetres
        extra = {k: r[k] for k in ("gesture", "finger", "subject", "essai", "label_14", "label_28", "split")}
        clips.append(ImportedClip(clip_name(r["gesture"], r["finger"], r["subject"], r["essai"]), keypoints,
                                  np.isfinite(keypoints[..., 0]).any(axis=1), SHREC17_22, fps, str(path),
                                  coordinates="x, y and depth z in millimetres (depth-camera world coordinates); "
                                              "score 1", extra=extra, depth=depth))
    return clips
