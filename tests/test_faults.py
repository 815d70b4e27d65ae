"""Disk and resource faults: a full disk while writing tubes and checkpoints (a real small tmpfs), a read-only
store (a read-only bind mount), and a store moved to another path. Each fault gives a one-line error naming the
file, corrupts nothing, and the work completes once the fault is gone.

The full-disk and read-only tests need mount privileges (root in a container that allows tmpfs and bind mounts, as
the CI machine does); elsewhere they skip and say so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from conftest import MA52_VIDEOS, requires_shared, run_cli
from helpers import assert_same_keypoints
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.tube_packs import ARRAYS, TubeSet

pytestmark = requires_shared


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def mounts(tmp_path):
    """Mount helper: `small(mb)` a tmpfs of that size, `read_only(path)` a read-only view; unmounted after."""
    mounted: list[Path] = []

    class Mounts:
        def small(self, megabytes: int) -> Path:
            target = tmp_path / f"small-{uuid.uuid4().hex[:6]}"
            target.mkdir()
            if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(target)):
                pytest.skip("mounting a small tmpfs needs root and a container that allows it (disk-full test)")
            mounted.append(target)
            return target

        def read_only(self, source: Path) -> Path:
            target = tmp_path / f"ro-{uuid.uuid4().hex[:6]}"
            target.mkdir()
            if os.geteuid() != 0 or not _mount("--bind", str(source), str(target)):
                pytest.skip("a read-only bind mount needs root and a container that allows it")
            mounted.append(target)
            if not _mount("-o", "remount,bind,ro", str(target)):
                pytest.skip("remounting read-only is not allowed here")
            return target

    yield Mounts()
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _same_tubes(got: TubeSet, want: TubeSet, names: list[str]) -> None:
    for name in names:
        a, b = got.load(name), want.load(name)
        for array in ARRAYS:
            np.testing.assert_array_equal(a[array], b[array], err_msg=f"{name}/{array}")


def test_disk_full_while_writing_tubes(ma52_tubes, mounts, tmp_path):
    small = mounts.small(8)  # the keypoints (2 MB) fit; packs of 2 clips (~12 MB each) do not
    store = small / "store"
    shutil.copytree(ma52_tubes.store.root / "extract", store / "extract")
    result = run_cli("tubes", "--store", str(store), "--pack-size", "2")
    line = _error_line(result)
    assert str(store) in line and "cannot write pack" in line and "No space left on device" in line
    assert_same_keypoints(KeypointSet(store), KeypointSet(ma52_tubes.store))  # nothing already there was hurt
    partial = TubeSet(store)
    _same_tubes(partial, ma52_tubes, partial.names())  # whatever packs made it are whole
    assert not [p for p in (partial.output.path / "tmp").rglob("*") if p.is_file()]  # the half pack is gone

    moved = tmp_path / "big" / "store"  # free space: the same store on a bigger disk, then resume
    shutil.copytree(store, moved)
    assert run_cli("tubes", "--store", str(moved), "--pack-size", "2").returncode == 0
    done = TubeSet(moved)
    assert done.names() == ma52_tubes.names()
    _same_tubes(done, ma52_tubes, done.names())


def _megabytes(root: Path) -> int:
    return -(-sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) // 2**20)


def test_disk_full_while_writing_a_checkpoint(ma52_tubes, mounts, tmp_path):
    """The disk fills while epoch 1's checkpoint is written: epoch 0's stays whole and the run resumes from it.

    A tiny-preset checkpoint is ~13 MB and is written beside the old one (temporary file, then rename): with 20 MB
    free after the store, epoch 0's fits and epoch 1's does not. Without validation `best.pt` follows -train loss,
    which stays below its start (-1) with 6 classes, so `last.pt` is the only checkpoint written."""
    small = mounts.small(_megabytes(ma52_tubes.store.root) + 20)
    store = small / "store"
    shutil.copytree(ma52_tubes.store.root, store)
    csv = tmp_path / "clips.csv"
    csv.write_text("path,label,split\n" + "".join(f"{v},{v.name[:2]},train\n"
                                                     for v in sorted(MA52_VIDEOS.glob("*.mp4"))))
    args = ["train", "--dataset", "csv", "--root", str(csv), "--preset", "tiny", "--epochs", "2", "--batch-size", "3",
            "--val-split", ""]
    line = _error_line(run_cli(*args, "--store", str(store)))
    assert "cannot write checkpoint" in line and "No space left on device" in line
    run_dir = next((store / "train").iterdir())
    assert not list(run_dir.glob(".*.tmp")) and not (run_dir / "done.json").exists()
    from pipelines.formats.checkpoints import load_checkpoint

    assert sorted(p.name for p in run_dir.glob("*.pt")) == ["last.pt"]
    assert load_checkpoint(run_dir / "last.pt")[1]["epoch"] == 0  # the earlier checkpoint, whole
    moved = tmp_path / "big"
    shutil.copytree(store, moved)
    result = run_cli(*args, "--store", str(moved))
    assert result.returncode == 0, result.stderr
    assert "resuming at epoch 1" in result.stdout + result.stderr
    done = moved / "train" / run_dir.name
    assert (done / "done.json").exists() and len((done / "metrics.jsonl").read_text().splitlines()) == 2


def test_read_only_store_reads_and_refuses_writes_in_one_line(ma52_tubes, mounts):
    view = mounts.read_only(ma52_tubes.store.root)
    _same_tubes(TubeSet(view), ma52_tubes, ma52_tubes.names())
    assert_same_keypoints(KeypointSet(view), KeypointSet(ma52_tubes.store))
    status = run_cli("status", "--store", str(view))
    assert status.returncode == 0 and "extract" in status.stdout, status.stderr
    line = _error_line(run_cli("extract", str(MA52_VIDEOS), "--store", str(view)))
    assert str(view) in line and "not writable" in line
    line = _error_line(run_cli("tubes", "--store", str(view), "--size", "64"))
    assert str(view) in line and "not writable" in line


def test_moved_store_stays_valid_and_holds_no_absolute_paths(ma52_tubes, tmp_path):
    original = tmp_path / "first" / "store"
    shutil.copytree(ma52_tubes.store.root, original)
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(original, moved)
    written_at = str(ma52_tubes.store.root).encode()  # where every item was first written
    for path in moved.rglob("*"):
        if path.is_file() and path.suffix in ("", ".json", ".jsonl", ".txt", ".sqlite"):
            assert written_at not in path.read_bytes(), path
    _same_tubes(TubeSet(moved), ma52_tubes, ma52_tubes.names())
    result = run_cli("extract", str(MA52_VIDEOS), "--store", str(moved))
    assert result.returncode == 0 and "0 processed, 6 skipped" in result.stdout, result.stdout + result.stderr
    result = run_cli("tubes", "--store", str(moved))
    assert result.returncode == 0 and "0 processed, 6 skipped" in result.stdout
