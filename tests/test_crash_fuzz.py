"""Crash fuzzing: each stage runs as `dualnet ...` in a subprocess that SIGKILLs itself at seeded kill points,
again and again (each restart resumes the one before), then runs to the end. After every kill, readers must open
the partial store and see only whole items that equal an uninterrupted run's; at the end, the store and
checkpoints must equal it too.

Kill points are deterministic (`pipelines/kill_points.py`): the stages mark each unit of work (a block of frames,
an item, a pack, a training batch, a checkpoint) and the steps inside a write (temporary file written, old copy
moved away), and ``DUALNET_KILL_AT=N`` makes a run die at its N-th mark. An uninterrupted traced run lists every
mark; each kill's N is drawn from a seeded generator within the marks the next run has left (those after the last
whole unit the store holds). Where a run dies depends only on the work it has done, never on the machine's speed,
so the same kills land on every machine.

23 kill points: 6 in extract (2 real clips), 7 in tubes (packs of 2), 3 in import (JHMDB, packs of 256 clips),
7 in training (tiny preset, 3 epochs).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MA52_VIDEOS, SHARED, requires_shared
from helpers import assert_same_keypoints, cli, traced_run
from pipelines.formats.keypoint_packs import KeypointIndex
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.params import ImportParams
from pipelines.formats.tube_packs import ARRAYS, TubeSet
from pipelines.store import Store

pytestmark = requires_shared
SEED = 20261122
IMPORT = ImportParams("jhmdb")
SHORT_CLIPS = ("B2_shaking_head__0035_02_0007", "B3_turning_head__0010_02_0101")  # 45 and 47 frames


def unit_spans(reference: list[str], unit_mark: str, units_done: int) -> list[tuple[int, int]]:
    """The kill points a resumed run will pass, unit by unit: [(first, last)] (1-based, inclusive), one span per
    unit left. The run starts with its start-up (the writes every run begins with: manifest, ref, run record),
    counted in the first span, then passes the uninterrupted run's points after its `units_done`-th `unit_mark`
    (the units a store holds whole are not redone); what follows the last mark (compaction, the final record) is
    one more unit. Empty when nothing is left to do."""
    marks = [i for i, p in enumerate(reference) if p == unit_mark]
    ends = [m + 1 for m in marks] + ([len(reference)] if not marks or marks[-1] < len(reference) - 1 else [])
    start = marks[units_done - 1] + 1 if units_done > 0 else 0
    startup = next(i for i, p in enumerate(reference) if p != "atomic.written") if units_done > 0 else 0
    spans, first = [], 1
    for end in ends:
        if end > start:
            last = startup + end - start
            spans.append((first, last))
            first = last + 1
    return spans


class KillRun:
    """Runs a stage again and again, each run killed at a seeded kill point (each restart resumes the one before),
    then once to the end: a round. Rounds start over from a fresh store until the wanted number of kills landed
    (a round ends once every unit is whole: kills after that would all land in the start-up).

    Args:
        stage: Names the seed's stream (each stage draws its own points).
        cmd: The command to run.
        reference: The kill points of an uninterrupted run.
        unit_mark: The kill point that follows each whole unit of work (what a resumed run does not redo).
        units_done: How many whole units the partial store holds now.
        after_kill: Checks the partial store after every kill.
        reset: Gives the stage a fresh store (the inputs only) at the start of each round.
        after_round: Checks the store after each round's final run, given (units the store held when that run
            started, the kill points that run passed).
    """

    def __init__(self, stage: str, cmd: list[str], reference: list[str], unit_mark: str,
                 units_done: Callable[[], int], after_kill: Callable[[], None], reset: Callable[[], None],
                 after_round: Callable[[int, list[str]], None], trace: Path):
        assert unit_mark in reference, f"{unit_mark} never marked in an uninterrupted run: {sorted(set(reference))}"
        self.cmd, self.reference, self.unit_mark, self.units_done = cmd, reference, unit_mark, units_done
        self.after_kill, self.reset, self.after_round, self.trace = after_kill, reset, after_round, trace
        self.rng = np.random.default_rng([SEED, sum(map(ord, stage))])
        self.killed_at: list[str] = []  # where each killed run died: "point@n/points the run had left"
        self.rounds = 0

    def run(self, kills: int) -> None:
        """Land `kills` kills, in as many rounds as it takes."""
        while len(self.killed_at) < kills:
            self.reset()
            self.rounds += 1
            landed = len(self.killed_at)
            units = self.reference.count(self.unit_mark)
            while len(self.killed_at) < kills and self.units_done() < units and self._killed_run():
                self.after_kill()  # at most one kill in what follows the last unit: then the round ends
            assert len(self.killed_at) > landed, "a round from a fresh store must land its first kill"
            resumed_from = self.units_done()
            code, points, stderr = traced_run(self.cmd, self.trace)
            assert code == 0, stderr
            self.after_round(resumed_from, points)

    def _killed_run(self) -> bool:
        """One run killed at a point drawn (uniformly) from the work it has left. False when there was nothing
        left to do or the run finished first."""
        spans = unit_spans(self.reference, self.unit_mark, self.units_done())
        if not spans:
            return False
        n = int(self.rng.integers(1, spans[-1][1] + 1))
        code, points, stderr = traced_run(self.cmd, self.trace, n)
        if code == 0:  # it needed fewer points than the reference: the work is done
            assert len(points) < n, stderr
            return False
        assert code == -9, f"exit {code} instead of the kill at point {n}: {stderr}"
        assert len(points) == n, (len(points), n)  # it died where it was told to, not elsewhere
        self.killed_at.append(f"{points[-1]}@{n}/{spans[-1][1]}")
        return True


def output_exists(root: Path, stage: str) -> bool:
    """Whether a run got as far as creating its stage output (a kill during start-up leaves none)."""
    return any(root.glob(f"{stage}/*/stage.json"))


def keypoint_items(root: Path, stage: str = "extract") -> Callable[[], int]:
    """How many items (loose or packed) the keypoint output under `root` holds."""
    def count() -> int:
        outputs = list(root.glob(f"{stage}/*/stage.json"))
        return len(KeypointIndex(Store(root).stage(stage, outputs[0].parent.name))) if outputs else 0
    return count


def test_extract_survives_kills(ma52_store, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in SHORT_CLIPS:
        (videos / f"{name}.mp4").symlink_to(MA52_VIDEOS / f"{name}.mp4")
    store = tmp_path / "store"
    reference = KeypointSet(ma52_store)
    seen: list[int] = []

    def check() -> None:
        if not output_exists(store, "extract"):
            return  # killed before its output existed: nothing written yet
        names = KeypointSet(store).names()  # every other state must open
        seen.append(len(names))
        if names:
            assert_same_keypoints(KeypointSet(store), reference, names)  # every visible item is whole and right

    def after_round(_: int, __: list[str]) -> None:
        assert_same_keypoints(KeypointSet(store), reference, list(SHORT_CLIPS))
        assert KeypointSet(store).names() == sorted(SHORT_CLIPS)
        assert not any((KeypointSet(store).output.path / "tmp").rglob("zarr.json"))  # no stray half item left

    # one worker: the kill points are counted in this one process (a pool's workers would each count their own)
    code, whole, _ = traced_run(cli("extract", str(videos), "--workers", "1", "--store", str(tmp_path / "whole")),
                                tmp_path / "t")
    assert code == 0 and whole.count("extract.item_committed") == 2
    assert_same_keypoints(KeypointSet(tmp_path / "whole"), reference, list(SHORT_CLIPS))
    run = KillRun("extract", cli("extract", str(videos), "--workers", "1", "--store", str(store)), whole,
                  "extract.item_committed",
                  keypoint_items(store), check, lambda: shutil.rmtree(store, ignore_errors=True), after_round,
                  tmp_path / "trace")
    run.run(6)
    assert any(seen), f"no kill left an item to check: {run.killed_at}"


def test_tubes_survive_kills(ma52_tubes, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(ma52_tubes.store.root / "extract", tmp_path / "whole" / "extract")
    reference = ma52_tubes
    checked: list[int] = []

    def reset() -> None:
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(ma52_tubes.store.root / "extract", store / "extract")

    def check() -> None:
        if not output_exists(store, "tubes"):
            return
        partial = TubeSet(store)
        for name in partial.names():
            got, want = partial.load(name), reference.load(name)
            for array in ARRAYS:
                np.testing.assert_array_equal(got[array], want[array], err_msg=f"{name}/{array}")
        checked.append(len(partial.names()))

    def after_round(_: int, __: list[str]) -> None:
        assert TubeSet(store).names() == reference.names()
        check()

    def packs() -> int:
        return len(list(store.glob("tubes/*/items/*")))

    cmd = ["tubes", "--pack-size", "2", "--store"]
    code, whole, _ = traced_run(cli(*cmd, str(tmp_path / "whole")), tmp_path / "t")
    assert code == 0 and whole.count("tubes.pack_committed") == 3
    run = KillRun("tubes", cli(*cmd, str(store)), whole, "tubes.pack_committed", packs, check, reset, after_round,
                  tmp_path / "trace")
    run.run(7)
    assert any(checked), f"no kill left a pack to check: {run.killed_at}"


def test_import_survives_kills(tmp_path):
    pickle = SHARED / "jhmdb" / "GT_train_1.pkl"  # 433 clips: two packs of up to 256
    store = tmp_path / "store"
    code, whole, stderr = traced_run(cli("import", "jhmdb", str(pickle), "--store", str(tmp_path / "whole")),
                                     tmp_path / "t")
    assert code == 0, stderr
    reference = KeypointSet(tmp_path / "whole", IMPORT)
    seen: list[int] = []

    def check() -> None:
        if not output_exists(store, "import"):
            return
        names = KeypointSet(store, IMPORT).names()
        seen.append(len(names))
        if names:
            assert_same_keypoints(KeypointSet(store, IMPORT), reference, names)

    def after_round(_: int, __: list[str]) -> None:
        assert_same_keypoints(KeypointSet(store, IMPORT), reference)
        assert len(KeypointSet(store, IMPORT).names()) == 433

    run = KillRun("import", cli("import", "jhmdb", str(pickle), "--store", str(store)), whole, "pack.committed",
                  lambda: keypoint_items(store, "import")() // 256, check,
                  lambda: shutil.rmtree(store, ignore_errors=True), after_round, tmp_path / "trace")
    run.run(3)
    assert any(seen), f"no kill left an imported clip to check: {run.killed_at}"


def assert_same_state(a, b, where: str) -> None:
    """Equal nested checkpoint contents: tensors bit for bit (dtype included), everything else by ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=where)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (where, sorted(a), sorted(b) if isinstance(b, dict) else b)
        for key in a:
            assert_same_state(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}/{i}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_training_survives_kills_and_resumes(ma52_tubes, tmp_path):
    csv = tmp_path / "clips.csv"
    csv.write_text("path,label,split\n" + "".join(f"{v},{v.name[:2]},train\n{v},{v.name[:2]},val\n"
                                                     for v in sorted(MA52_VIDEOS.glob("*.mp4"))))
    shutil.copytree(ma52_tubes.store.root, tmp_path / "whole")
    killed = tmp_path / "killed"

    def cmd(store: Path) -> list[str]:
        return cli("train", "--dataset", "csv", "--root", str(csv), "--store", str(store), "--preset", "tiny",
                   "--epochs", "3", "--batch-size", "3", "--lr", "0.003")

    def reset() -> None:
        shutil.rmtree(killed, ignore_errors=True)
        shutil.copytree(ma52_tubes.store.root, killed)

    def whole_epochs() -> int:  # what a resumed run does not redo: epochs with a whole checkpoint
        last = list((killed / "train").glob("*/last.pt"))
        return torch.load(last[0], weights_only=False)["epoch"] + 1 if last else 0

    epochs_seen: list[int] = []

    def check() -> None:
        for last in (killed / "train").glob("*/last.pt"):
            state = torch.load(last, weights_only=False)  # a checkpoint on disk is always whole
            epochs_seen.append(state["epoch"])
            lines = last.with_name("metrics.jsonl").read_text().splitlines()
            for line in lines[:-1]:
                json.loads(line)

    code, whole, stderr = traced_run(cmd(tmp_path / "whole"), tmp_path / "t")
    assert code == 0, stderr
    batches = whole.count("train.batch") // 3
    assert whole.count("train.epoch_saved") == 3 and batches == 2  # 6 clips in batches of 3
    run_a = next((tmp_path / "whole" / "train").glob("*/done.json")).parent
    resumed: list[int] = []

    def after_round(resumed_from: int, last_run: list[str]) -> None:
        # The resume itself: the last run did only the epochs no checkpoint held, not a restart from epoch 0.
        resumed.append(resumed_from)
        assert last_run.count("train.batch") == (3 - resumed_from) * batches, (resumed_from, last_run)
        assert last_run.count("train.epoch_saved") == 3 - resumed_from
        run_b = next((killed / "train").glob("*/done.json")).parent
        assert run_a.name == run_b.name
        lines_a = [json.loads(x) for x in (run_a / "metrics.jsonl").read_text().splitlines()]
        lines_b = [json.loads(x) for x in (run_b / "metrics.jsonl").read_text().splitlines()]
        assert [a["epoch"] for a in lines_a] == [b["epoch"] for b in lines_b] == [0, 1, 2]
        for a, b in zip(lines_a, lines_b, strict=True):  # every metric but the timing
            assert a.keys() == b.keys() and {"train_loss", "lr", "val_top1", "val_f1_macro"} <= a.keys()
            for key in a.keys() - {"clips_per_s"}:
                assert a[key] == b[key], key
        for checkpoint in ("last.pt", "best.pt"):  # every entry: weights, optimizer, scheduler, RNG, epoch, ...
            assert_same_state(torch.load(run_a / checkpoint, weights_only=False),
                              torch.load(run_b / checkpoint, weights_only=False), checkpoint)

    run = KillRun("train", cmd(killed), whole, "train.epoch_saved", whole_epochs, check, reset, after_round,
                  tmp_path / "trace")
    run.run(7)
    if not epochs_seen:
        pytest.fail(f"no kill landed after the first checkpoint: the resume path was not exercised {run.killed_at}")
    assert any(0 < r < 3 for r in resumed) or any(e < 2 for e in epochs_seen), "no run resumed mid-training"
