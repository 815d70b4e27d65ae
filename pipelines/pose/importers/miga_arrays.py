"""MiGA challenge skeleton arrays: ``(N, 3, T, V, 1)`` numpy (x, y, score per joint) plus a label pickle.

The label pickle may be ST-GCN's ``(sample_names, labels)`` pair or a plain list of labels (then samples are named
``<array stem>_<index>``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dualnet.layouts import Layout
from pipelines.errors import InputError
from pipelines.pose.importers import ImportedClip
from pipelines.pose.importers.pyskl_pickle import load_pickle


def read_labels(path: Path, n: int, stem: str) -> tuple[list[str], list[int]]:
    data = load_pickle(path)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(x, (list, tuple, np.ndarray))
                                                                  for x in data):
        names, labels = [str(x) for x in data[0]], list(data[1])
    elif isinstance(data, (list, tuple, np.ndarray)):
        names, labels = [f"{stem}_{i}" for i in range(len(data))], list(data)
    else:
        raise InputError(path, "expected (sample_names, labels) or a list of labels")
    if len(labels) != n or len(names) != n:
        raise InputError(path, f"{len(labels)} labels for {n} arrays")
    try:
        return names, [int(x) for x in labels]
    except (TypeError, ValueError):
        raise InputError(path, "labels must be integers") from None


def read_miga(array_path: Path, label_path: Path, layout: Layout, fps: float) -> list[ImportedClip]:
    """Every sample of a MiGA array file, validated in full first. All-zero frames (padding) are not detected."""
    try:
        data = np.load(array_path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise InputError(array_path, f"not a readable .npy array ({e})") from None
    if data.ndim != 5 or data.shape[1] != 3 or data.shape[4] < 1:
        raise InputError(array_path, f"shape {data.shape}, expected (N, 3, T, V, M)")
    if data.shape[3] != layout.num_keypoints:
        raise InputError(array_path, f"{data.shape[3]} joints, but layout {layout.name} has {layout.num_keypoints}")
    names, labels = read_labels(label_path, data.shape[0], array_path.stem)
    clips = []
    for i in range(data.shape[0]):
        kp = np.asarray(data[i, :, :, :, 0], dtype=np.float64).transpose(1, 2, 0)  # (3, T, V) -> (T, V, 3)
        empty = (kp == 0).all(axis=2)  # (T, V)
        kp[empty] = (np.nan, np.nan, 0.0)
        clips.append(ImportedClip(name=names[i], keypoints=kp, detected=~empty.all(axis=1), layout=layout, fps=fps,
                                  source_path=str(array_path), coordinates="as in the MiGA arrays (x, y, score)",
                                  extra={"record": i, "label": labels[i]}))
    return clips
