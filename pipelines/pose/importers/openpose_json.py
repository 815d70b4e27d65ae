"""OpenPose JSON: one file per frame (``<clip>_<frame:012d>_keypoints.json``), BODY_25 with optional face 70 and
hands 2 x 21, as the iMiGUE skeletons ship. A clip is a folder of such files."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dualnet.layouts import OPENPOSE_BODY25_FACE_HANDS
from pipelines.errors import InputError
from pipelines.pose.importers import ImportedClip, people_to_subject

# (JSON field, first keypoint index in the layout, number of keypoints)
PARTS = (("pose_keypoints_2d", 0, 25), ("face_keypoints_2d", 25, 70), ("hand_left_keypoints_2d", 95, 21),
         ("hand_right_keypoints_2d", 116, 21))
_FRAME = re.compile(r"(\d+)(?:_keypoints)?\.json$")


def frame_index(path: Path) -> int:
    """The frame number in an OpenPose file name (the last run of digits before ``_keypoints.json``)."""
    match = _FRAME.search(path.name)
    if match is None:
        raise InputError(path, "file name has no frame number (expected <clip>_<frame>_keypoints.json)")
    return int(match.group(1))


def read_person(record: dict, path: Path, k: int) -> np.ndarray:
    """One person's (137, 3) keypoints; OpenPose's (0, 0, 0) for an undetected point becomes NaN, score 0."""
    layout = OPENPOSE_BODY25_FACE_HANDS
    person = np.full((layout.num_keypoints, 3), np.nan)
    person[:, 2] = 0.0
    if not isinstance(record, dict) or "pose_keypoints_2d" not in record:
        raise InputError(path, f"people[{k}] has no pose_keypoints_2d")
    for field_name, start, count in PARTS:
        values = record.get(field_name) or []
        if len(values) == 0:
            continue
        if len(values) != 3 * count:
            raise InputError(path, f"people[{k}].{field_name} has {len(values)} values, expected {3 * count} "
                                   f"({count} keypoints x 3)")
        try:
            arr = np.asarray(values, dtype=np.float64).reshape(count, 3)
        except (TypeError, ValueError):
            raise InputError(path, f"people[{k}].{field_name} holds non-numeric values") from None
        missing = (arr[:, 2] <= 0) & (arr[:, 0] == 0) & (arr[:, 1] == 0)
        arr[missing, :2] = np.nan
        arr[missing, 2] = 0.0
        person[start:start + count] = arr
    return person


def read_clip(folder: Path, fps: float, width: int | None = None, height: int | None = None) -> ImportedClip:
    """One clip from a folder of per-frame JSON files; frames are ordered by the number in their names.

    Gaps in the numbering are kept as frames without a person, so frame indices stay those of the video.
    """
    files = sorted(folder.glob("*.json"), key=frame_index)
    if not files:
        raise InputError(folder, "no OpenPose *.json files")
    first, last = frame_index(files[0]), frame_index(files[-1])
    people: list[list[np.ndarray]] = [[] for _ in range(last - first + 1)]
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise InputError(path, f"not valid JSON ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("people"), list):
            raise InputError(path, "no 'people' list")
        people[frame_index(path) - first] = [read_person(p, path, k) for k, p in enumerate(data["people"])]
    keypoints, detected = people_to_subject(people, OPENPOSE_BODY25_FACE_HANDS)
    return ImportedClip(name=folder.name, keypoints=keypoints, detected=detected, layout=OPENPOSE_BODY25_FACE_HANDS,
                        fps=fps, source_path=str(folder), width=width, height=height,
                        extra={"first_frame": first})


def clip_folders(root: Path) -> list[Path]:
    """`root` itself when it holds JSON files, else its sub-folders that do (one clip each)."""
    if not root.is_dir():
        raise InputError(root, "not a folder of OpenPose JSON files")
    if any(root.glob("*.json")):
        return [root]
    folders = sorted(d for d in root.iterdir() if d.is_dir() and any(d.glob("*.json")))
    if not folders:
        raise InputError(root, "holds no OpenPose *.json files (directly or one folder down)")
    return folders


def read_openpose(root: Path, fps: float, width: int | None = None, height: int | None = None
                  ) -> Iterator[ImportedClip]:
    """Every clip under `root`."""
    for folder in clip_folders(root):
        yield read_clip(folder, fps, width, height)
