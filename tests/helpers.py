"""Comparisons between stores, and stage runs with traced (and killed) kill points, used by several tests."""

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
