"""Comparisons between stores, stage runs with traced (and killed) kill points, and small synthetic hand data
(SHREC'17's folder layout), used by several tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import REPO
from pipelines.formats.keypoints import KeypointSet

_VOLATILE = {"source_path"}  # may differ between two runs over copies of the same file


def assert_same_keypoints(a: KeypointSet, b: KeypointSet, names: list[str] | None = None) -> None:
    """Both sets hold the same items with equal arrays (NaN == NaN) and attributes."""
    names = names if names is not None else a.names()
    assert names and set(names) <= set(b.names())
    for name in names:
        ca, cb = a.load(name), b.load(name)
        for arr in ("keypoints", "detected", "timestamps"):
            np.testing.assert_array_equal(getattr(ca, arr), getattr(cb, arr), err_msg=f"{name}/{arr}")
            assert getattr(ca, arr).dtype == getattr(cb, arr).dtype, f"{name}/{arr}"
        assert (ca.depth is None) == (cb.depth is None), f"{name}/depth"
        if ca.depth is not None:
            np.testing.assert_array_equal(ca.depth, cb.depth, err_msg=f"{name}/depth")
        attrs_a = {k: v for k, v in a.attributes(name).items() if k not in _VOLATILE}
        attrs_b = {k: v for k, v in b.attributes(name).items() if k not in _VOLATILE}
        assert attrs_a == attrs_b, name


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


def traced_run(cmd: list[str], trace: Path, kill_at: int = 0) -> tuple[int, list[str], str]:
    """Run `cmd` with its kill points traced to `trace` (and a kill at the `kill_at`-th, if > 0): (exit code, the
    kill points it passed, stderr)."""
    trace.unlink(missing_ok=True)
    env = {**os.environ, "DUALNET_KILL_TRACE": str(trace), "DUALNET_KILL_AT": str(kill_at)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=600)
    points = trace.read_text().splitlines() if trace.exists() else []
    return proc.returncode, points, proc.stderr


def hand_clip(rng: np.random.Generator, frames: int, label: int) -> np.ndarray:
    """(T, 22, 2) a hand whose fingers open (label 0) or close (label 1) over the clip, drifting a little."""
    base = rng.uniform(300, 500, size=(1, 1, 2))
    spread = np.linspace(20, 80, frames) if label == 0 else np.linspace(80, 20, frames)
    offsets = rng.normal(0, 1, size=(1, 22, 2))
    return base + offsets * spread[:, None, None] + rng.normal(0, 2, size=(frames, 22, 2))


def shrec_folder(root, depth_shift: float = 0.0) -> None:
    """A SHREC'17-format folder (its two lists, one skeletons_world.txt of 22 x (x, y, z) a line per sequence):
    gestures 1 (grab) and 2 (tap), 3 training subjects and 1 test subject; z shifted by `depth_shift` metres."""
    rng = np.random.default_rng(5)
    lists = {"train": [], "test": []}
    for gesture in (1, 2):
        for subject in (1, 2, 3, 4):
            frames = 20
            xy = hand_clip(rng, frames, gesture - 1) / 1000  # millimetre-scale hand, in metres
            z = 0.4 + 0.02 * rng.standard_normal((frames, 22, 1)) + depth_shift
            path = root / f"gesture_{gesture}" / "finger_1" / f"subject_{subject}" / "essai_1"
            path.mkdir(parents=True)
            np.savetxt(path / "skeletons_world.txt", np.concatenate([xy, z], -1).reshape(frames, 66), fmt="%.6f")
            lists["test" if subject == 4 else "train"].append(f"{gesture} 1 {subject} 1 {gesture} "
                                                              f"{2 * (gesture - 1) + 1} {frames}")
    for split, lines in lists.items():
        (root / f"{split}_gestures.txt").write_text("\n".join(lines) + "\n")
