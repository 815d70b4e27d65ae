"""pyskl / mmaction2 ``PoseDataset`` pickles, and the JHMDB joint pickles of DD-Net.

pyskl: ``{"split": {name: [frame_dir, ...]}, "annotations": [{"frame_dir", "label", "img_shape": (h, w),
"total_frames", "keypoint": (M, T, V, C), "keypoint_score": (M, T, V)}]}``; C is 2 (x, y) or 3 (x, y, z: pyskl's 3D
skeletons, whose z is kept as the item's depth), scores are `keypoint_score` (1 without it), as pyskl reads them.
JHMDB (DD-Net): ``{"pose": [(T, 15, 2)], "label": [str]}`` with centred, scale-normalised coordinates.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from dualnet.layouts import JHMDB_15, Layout
from pipelines.errors import InputError
from pipelines.pose.importers import ImportedClip, people_to_subject


def load_pickle(path: Path) -> object:
    """Unpickle a file the user named; a bad file is an InputError, not a traceback.

    Pickles can run code when loaded: import only files you trust (as with pyskl and mmaction2 themselves).
    """
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError) as e:
        raise InputError(path, f"not a readable pickle ({type(e).__name__}: {e})") from None


def _annotation_clip(path: Path, i: int, ann: object, layout: Layout, fps: float) -> ImportedClip:
    where = f"annotation {i}"
    if not isinstance(ann, dict):
        raise InputError(path, f"{where} is a {type(ann).__name__}, not a dict")
    name = str(ann.get("frame_dir", f"clip_{i:06d}"))
    where = f"annotation {i} ({name})"
    if "keypoint" not in ann:
        raise InputError(path, f"{where}: missing 'keypoint'")
    kp = np.asarray(ann["keypoint"], dtype=np.float64)
    if kp.ndim != 4 or kp.shape[-1] not in (2, 3):
        raise InputError(path, f"{where}: 'keypoint' has shape {kp.shape}, expected (M, T, V, 2) or (M, T, V, 3)")
    m, t, v, _ = kp.shape
    if v != layout.num_keypoints:
        raise InputError(path, f"{where}: {v} keypoints per person, but layout {layout.name} has "
                               f"{layout.num_keypoints} (choose --layout)")
    if "keypoint_score" in ann:
        score = np.asarray(ann["keypoint_score"], dtype=np.float64)
        if score.shape != (m, t, v):
            raise InputError(path, f"{where}: 'keypoint_score' has shape {score.shape}, expected {(m, t, v)}")
    else:
        score = np.ones((m, t, v))
    people = np.concatenate([kp[..., :2], score[..., None], kp[..., 2:]], axis=-1)  # (M, T, V, 3 or 4: + z)
    absent = (kp == 0).all(-1)  # pyskl pads missing people/joints with zeros
    people[absent] = (np.nan, np.nan, 0.0, np.nan)[:people.shape[-1]]
    per_frame = [[people[p, f] for p in range(m) if not absent[p, f].all()] for f in range(t)]
    tracked, detected = people_to_subject(per_frame, layout)  # (T, V, 3 or 4): z travels with its person
    keypoints, depth = tracked[..., :3], None
    if kp.shape[-1] == 3:  # a 3D source: z of the kept person, all NaN where nobody is (a clip without a subject)
        depth = tracked[..., 3] if tracked.shape[-1] == 4 else np.full(tracked.shape[:2], np.nan)
    h, w = (ann.get("img_shape") or ann.get("original_shape") or (None, None))[:2]
    extra = {"record": i}
    if "label" in ann:
        extra["label"] = int(ann["label"])
    coordinates = ("x, y in pixels of the source frame, depth z in the source's units; score in [0, 1]; NaN where "
                   "not detected") if depth is not None else ImportedClip.coordinates
    return ImportedClip(name=name, keypoints=keypoints, detected=detected, layout=layout, fps=fps,
                        source_path=str(path), width=None if w is None else int(w),
                        height=None if h is None else int(h), coordinates=coordinates, extra=extra, depth=depth)


def read_pyskl(path: Path, layout: Layout, fps: float) -> list[ImportedClip]:
    """Every annotation of a pyskl pickle, validated in full before any is returned."""
    data = load_pickle(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise InputError(path, "not a pyskl PoseDataset pickle (no 'annotations' list)")
    return [_annotation_clip(path, i, ann, layout, fps) for i, ann in enumerate(data["annotations"])]


def pyskl_splits(path: Path) -> dict[str, list[str]]:
    """The ``split`` dict of a pyskl pickle (split name -> frame_dir list); empty when it has none."""
    data = load_pickle(path)
    splits = data.get("split", {}) if isinstance(data, dict) else {}
    return {str(k): [str(x) for x in v] for k, v in splits.items()}


def read_jhmdb(path: Path, fps: float = 30.0) -> list[ImportedClip]:
    """The clips of one DD-Net JHMDB pickle, named ``<file stem>_<index:04d>``; scores are 1 (annotated joints)."""
    data = load_pickle(path)
    if not isinstance(data, dict) or "pose" not in data or "label" not in data:
        raise InputError(path, "not a JHMDB joint pickle (expected keys 'pose' and 'label')")
    if len(data["pose"]) != len(data["label"]):
        raise InputError(path, f"{len(data['pose'])} poses but {len(data['label'])} labels")
    clips = []
    for i, (pose, label) in enumerate(zip(data["pose"], data["label"], strict=True)):
        arr = np.asarray(pose, dtype=np.float64)
        if arr.ndim != 3 or arr.shape[1:] != (JHMDB_15.num_keypoints, 2):
            raise InputError(path, f"record {i}: pose has shape {arr.shape}, expected (T, 15, 2)")
        keypoints = np.concatenate([arr, np.ones(arr.shape[:2] + (1,))], axis=-1)
        clips.append(ImportedClip(
            name=f"{path.stem}_{i:04d}", keypoints=keypoints, detected=np.ones(len(arr), dtype=bool),
            layout=JHMDB_15, fps=fps, source_path=str(path),
            coordinates="x, y centred and scale-normalised (DD-Net's JHMDB release); score 1 = annotated",
            extra={"record": i, "label": str(label)}))
    return clips
