"""Crash fuzzing: each stage runs as `dualnet ...` in a subprocess and is SIGKILLed at seeded random moments, again
and again (each restart resumes the one before), then runs to the end. After every kill, readers must see only
whole items that equal an uninterrupted run's; at the end, the store and checkpoints must equal it too.

21 kill points: 7 in extract (real clips), 7 in tubes (packs of 2 clips, so kills land between commits), 7 in
training (tiny preset, 4 epochs). Kill times are drawn from a seeded generator over the span the stage's work
takes here, so some land in start-up, most mid-write.
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
from pipelines.keypoints import KeypointSet
from pipelines.tubes import ARRAYS, TubeSet

pytestmark = requires_shared
SEED = 20261122
SHORT_CLIPS = ("B1_nodding__0019_02_0078", "B2_shaking_head__0035_02_0007", "B3_turning_head__0010_02_0101")


def kill_times(stage: str, count: int, low: float, high: float) -> list[float]:
    rng = np.random.default_rng([SEED, sum(map(ord, stage))])
    return sorted(rng.uniform(low, high, count).round(2).tolist(), reverse=True)


def run_with_kills(cmd: list[str], delays, after_kill) -> int:
    """Start `cmd`, SIGKILL it after each delay (restarting it each time), call `after_kill()` after every kill;
    then run it to the end. `delays` is a list, or a callable giving the next delay (None: stop killing). Returns
    how many runs were really killed (not finished before their moment)."""
    killed = 0
    schedule = iter(delays) if not callable(delays) else iter(delays, None)
    for delay in schedule:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            killed += 1
        else:
            assert proc.returncode == 0, proc.stderr.read()
        finally:
            proc.kill()
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

    killed = run_with_kills(cli("extract", str(videos), "--store", str(store)),
                            kill_times("extract", 7, 2.0, 14.0), check)
    assert killed >= 5, f"only {killed} of 7 runs were killed before finishing"
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

    killed = run_with_kills(cli("tubes", "--store", str(store), "--pack-size", "2"),
                            kill_times("tubes", 7, 2.0, 10.0), check)
    assert killed >= 4, f"only {killed} of 7 runs were killed before finishing"
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
                   "--epochs", "4", "--batch-size", "3", "--lr", "0.003")

    # the uninterrupted run, timing when each epoch's line lands: start-up and epoch length set the kill moments
    started = time.monotonic()
    proc = subprocess.Popen(cmd(tmp_path / "whole"), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    landed: list[float] = []
    while proc.poll() is None:
        history = list((tmp_path / "whole" / "train").glob("*/metrics.jsonl"))
        lines = len(history[0].read_text().splitlines()) if history else 0
        landed += [time.monotonic() - started] * (lines - len(landed))
        time.sleep(0.02)
    assert proc.returncode == 0, proc.stderr.read()
    proc.stderr.close()
    epoch = (landed[-1] - landed[0]) / (len(landed) - 1)
    startup = landed[0] - epoch
    epochs_seen: list[int] = []
    rng = np.random.default_rng([SEED, 7])
    kills = iter(range(7))

    def next_delay() -> float | None:
        """A moment within the work the next run has left (it resumes after the last whole epoch)."""
        done = len(epochs_seen) and max(epochs_seen) + 1
        if next(kills, None) is None or done >= 4:
            return None
        return startup + rng.uniform(0.1, 1.0) * (4 - done) * epoch

    def check() -> None:
        for last in (tmp_path / "killed" / "train").glob("*/last.pt"):
            state = torch.load(last, weights_only=False)  # a checkpoint on disk is always whole
            epochs_seen.append(state["epoch"])
            lines = last.with_name("metrics.jsonl").read_text().splitlines()
            for line in lines[:-1]:
                json.loads(line)

    killed = run_with_kills(cmd(tmp_path / "killed"), next_delay, check)
    assert killed >= 4, f"only {killed} of 7 runs were killed before finishing"
    run_a = next((tmp_path / "whole" / "train").glob("*/done.json")).parent
    run_b = next((tmp_path / "killed" / "train").glob("*/done.json")).parent
    assert run_a.name == run_b.name
    lines_a = [json.loads(x) for x in (run_a / "metrics.jsonl").read_text().splitlines()]
    lines_b = [json.loads(x) for x in (run_b / "metrics.jsonl").read_text().splitlines()]
    assert [a["epoch"] for a in lines_a] == [b["epoch"] for b in lines_b] == [0, 1, 2, 3]
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
