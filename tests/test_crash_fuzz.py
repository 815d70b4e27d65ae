"""Crash fuzzing: each stage runs as `dualnet ...` in a subprocess and is SIGKILLed at seeded random moments, again
and again (each restart resumes the one before), then runs to the end. After every kill, readers must see only
whole items that equal an uninterrupted run's; at the end, the store and checkpoints must equal it too.

20 kill points: 6 in extract (2 real clips), 7 in tubes (packs of 2 clips, so kills land between commits), 7 in
training (tiny preset, 3 epochs). An uninterrupted run first measures the stage's start-up and the time per unit
of work (clip, pack, epoch); each kill moment is then drawn from a seeded generator within the work the next run
has left, so kills land mid-work however fast the machine is.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MA52_VIDEOS, REPO, requires_shared
from helpers import assert_same_keypoints
from pipelines.keypoint_packs import KeypointIndex
from pipelines.keypoints import KeypointSet
from pipelines.store import Store
from pipelines.tubes import ARRAYS, TubeSet

pytestmark = requires_shared
SEED = 20261122
SHORT_CLIPS = ("B2_shaking_head__0035_02_0007", "B3_turning_head__0010_02_0101")  # 45 and 47 frames


def timed_reference(cmd: list[str], count_done) -> tuple[float, float]:
    """Run `cmd` uninterrupted, noting when each unit of work (item, pack, epoch) lands: (start-up, per unit)."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    landed: list[float] = []
    while proc.poll() is None:
        landed += [time.monotonic() - started] * (count_done() - len(landed))
        time.sleep(0.02)
    landed += [time.monotonic() - started] * (count_done() - len(landed))
    assert proc.returncode == 0, proc.stderr.read()
    proc.stderr.close()
    per_unit = (landed[-1] - landed[0]) / (len(landed) - 1)
    return landed[0] - per_unit, per_unit


def kill_schedule(stage: str, count: int, startup: float, per_unit: float, total: int, count_done):
    """Seeded kill points, each within the work the next run has left (runs resume after the last whole unit): a
    callable giving the next point, None when the points are used up or nothing is left to do.

    A point is (units, delay): kill `delay` seconds after the run has landed `units` more units of work (for
    units = 0, after its start). Tying kills to landed work rather than to the clock alone makes the schedule hold
    however fast or loaded the machine is: a kill after unit u always finds u units done, and the delay stays well
    inside one unit, so the run is still working when it comes.
    """
    rng = np.random.default_rng([SEED, sum(map(ord, stage))])
    points = iter(range(count))

    def next_point() -> tuple[int, float] | None:
        left = total - count_done()
        if next(points, None) is None or left <= 0:
            return None
        units = int(rng.integers(0, left))
        if units == 0:  # during start-up or the first unit
            return 0, rng.uniform(0.3, 1.0) * startup + rng.uniform(0.05, 0.6) * per_unit
        return units, rng.uniform(0.05, 0.6) * per_unit

    return next_point


def run_with_kills(cmd: list[str], points, count_done, after_kill) -> int:
    """Start `cmd` and SIGKILL it at each kill point (restarting it each time), calling `after_kill()` after every
    kill; then run it to the end. `points` is a callable giving the next (units, delay), None to stop. Returns how
    many runs were really killed (not finished before their point)."""
    killed = 0
    for units, delay in iter(points, None):
        base = count_done()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        mark = time.monotonic() if units == 0 else None
        try:
            while proc.poll() is None:
                if mark is None and count_done() >= base + units:
                    mark = time.monotonic()
                if mark is not None and time.monotonic() - mark >= delay:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(30)
                    killed += 1
                    break
                time.sleep(0.02)
            else:
                assert proc.returncode == 0, proc.stderr.read()
        finally:
            proc.kill()
            proc.wait(30)
            if proc.stderr:
                proc.stderr.close()
        after_kill()
    final = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    return killed


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


def test_extract_survives_random_kills(ma52_store, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in SHORT_CLIPS:
        (videos / f"{name}.mp4").symlink_to(MA52_VIDEOS / f"{name}.mp4")
    store = tmp_path / "store"
    reference = KeypointSet(ma52_store)
    seen: list[int] = []

    def check() -> None:
        try:
            partial = KeypointSet(store)
        except Exception:  # the stage output may not exist yet (killed during start-up)
            return
        names = partial.names()
        seen.append(len(names))
        if names:
            assert_same_keypoints(partial, reference, names)  # every visible item is whole and right

    def items(root: Path):  # videos done, loose or packed
        def count() -> int:
            outputs = list(root.glob("extract/*/stage.json"))
            return len(KeypointIndex(Store(root).stage("extract", outputs[0].parent.name))) if outputs else 0
        return count

    startup, per_clip = timed_reference(cli("extract", str(videos), "--store", str(tmp_path / "whole")),
                                        items(tmp_path / "whole"))
    killed = run_with_kills(cli("extract", str(videos), "--store", str(store)),
                            kill_schedule("extract", 6, startup, per_clip, len(SHORT_CLIPS), items(store)),
                            items(store), check)
    assert killed >= 3, f"only {killed} of 6 runs were killed before finishing"
    assert_same_keypoints(KeypointSet(tmp_path / "whole"), reference, list(SHORT_CLIPS))
    assert_same_keypoints(KeypointSet(store), reference, list(SHORT_CLIPS))
    assert KeypointSet(store).names() == sorted(SHORT_CLIPS)
    assert not any((KeypointSet(store).output.path / "tmp").rglob("zarr.json"))  # no stray half item left


def test_tubes_survive_random_kills(ma52_tubes, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(ma52_tubes.store.root / "extract", store / "extract")
    reference = ma52_tubes

    def check() -> None:
        try:
            partial = TubeSet(store)
        except Exception:
            return
        for name in partial.names():
            got, want = partial.load(name), reference.load(name)
            for array in ARRAYS:
                np.testing.assert_array_equal(got[array], want[array], err_msg=f"{name}/{array}")

    def packs(root: Path):
        return lambda: len(list(root.glob("tubes/*/items/*")))

    shutil.copytree(ma52_tubes.store.root / "extract", tmp_path / "whole" / "extract")
    startup, per_pack = timed_reference(cli("tubes", "--store", str(tmp_path / "whole"), "--pack-size", "2"),
                                        packs(tmp_path / "whole"))
    killed = run_with_kills(cli("tubes", "--store", str(store), "--pack-size", "2"),
                            kill_schedule("tubes", 7, startup, per_pack, 3, packs(store)), packs(store), check)
    assert killed >= 3, f"only {killed} of 7 runs were killed before finishing"
    final = TubeSet(store)
    assert final.names() == reference.names()
    check()


def test_training_survives_random_kills(ma52_tubes, tmp_path):
    csv = tmp_path / "clips.csv"
    csv.write_text("path,label,split\n" + "".join(f"{v},{v.name[:2]},train\n{v},{v.name[:2]},val\n"
                                                     for v in sorted(MA52_VIDEOS.glob("*.mp4"))))
    for name in ("whole", "killed"):
        shutil.copytree(ma52_tubes.store.root, tmp_path / name)

    def cmd(store: Path) -> list[str]:
        return cli("train", "--dataset", "csv", "--root", str(csv), "--store", str(store), "--preset", "tiny",
                   "--epochs", "3", "--batch-size", "3", "--lr", "0.003")

    def epochs(root: Path):
        def count() -> int:
            history = list((root / "train").glob("*/metrics.jsonl"))
            return len(history[0].read_text().splitlines()) if history else 0
        return count

    def whole_epochs(root: Path):  # what a resumed run would not redo: epochs with a whole checkpoint
        seen: dict[int, int] = {}  # checkpoint mtime -> its epochs (polled often: load each version once)

        def count() -> int:
            last = list((root / "train").glob("*/last.pt"))
            if not last:
                return 0
            try:
                stamp = last[0].stat().st_mtime_ns
            except FileNotFoundError:
                return max(seen.values(), default=0)
            if stamp not in seen:
                seen[stamp] = torch.load(last[0], weights_only=False)["epoch"] + 1
            return seen[stamp]
        return count

    startup, per_epoch = timed_reference(cmd(tmp_path / "whole"), epochs(tmp_path / "whole"))
    epochs_seen: list[int] = []

    def check() -> None:
        for last in (tmp_path / "killed" / "train").glob("*/last.pt"):
            state = torch.load(last, weights_only=False)  # a checkpoint on disk is always whole
            epochs_seen.append(state["epoch"])
            lines = last.with_name("metrics.jsonl").read_text().splitlines()
            for line in lines[:-1]:
                json.loads(line)

    killed = run_with_kills(cmd(tmp_path / "killed"),
                            kill_schedule("train", 7, startup, per_epoch, 3, whole_epochs(tmp_path / "killed")),
                            whole_epochs(tmp_path / "killed"), check)
    assert killed >= 4, f"only {killed} of 7 runs were killed before finishing"
    run_a = next((tmp_path / "whole" / "train").glob("*/done.json")).parent
    run_b = next((tmp_path / "killed" / "train").glob("*/done.json")).parent
    assert run_a.name == run_b.name
    lines_a = [json.loads(x) for x in (run_a / "metrics.jsonl").read_text().splitlines()]
    lines_b = [json.loads(x) for x in (run_b / "metrics.jsonl").read_text().splitlines()]
    assert [a["epoch"] for a in lines_a] == [b["epoch"] for b in lines_b] == [0, 1, 2]
    for a, b in zip(lines_a, lines_b, strict=True):
        for key in ("train_loss", "lr", "val_top1", "val_f1_macro"):
            assert a[key] == b[key], key
    for checkpoint in ("last.pt", "best.pt"):
        state_a = torch.load(run_a / checkpoint, weights_only=False)
        state_b = torch.load(run_b / checkpoint, weights_only=False)
        assert state_a["epoch"] == state_b["epoch"]
        for key in state_a["model"]:
            torch.testing.assert_close(state_a["model"][key], state_b["model"][key], rtol=0, atol=0)
    if not epochs_seen:
        pytest.fail("no kill landed after the first checkpoint: the resume path was not exercised")
