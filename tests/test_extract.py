"""The `extract` stage on real video: detection quality, zero-work re-runs, new keys, resume after SIGKILL,
bad inputs, concurrent writers, worker processes and the main subject among several people."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from conftest import MA52_VIDEOS, OTHER_VIDEOS, ma52_clips, requires_shared, run_cli, shortest_clip
from helpers import assert_same_keypoints
from pipelines.errors import StoreLockedError
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.params import ExtractParams
from pipelines.formats.params import extract_key as stage_key
from pipelines.io.video import iter_frames
from pipelines.pose.subject import StreamingSubjectTracker, body_box
from pipelines.stages import extract as stage
from pipelines.stages.extract import make_estimator, run_extract
from pipelines.store import Store, safe_name

pytestmark = requires_shared


def test_every_frame_has_a_body_with_nose_and_wrists_inside(ma52_store):
    kps = KeypointSet(ma52_store)
    assert len(kps.names()) == 6
    for name in kps.names():
        clip = kps.load(name)
        assert (clip.width, clip.height) == (1080, 1296)
        assert clip.detected.all(), f"{name}: frames without a body {np.flatnonzero(~clip.detected)}"
        for joint in ("nose", "left_wrist", "right_wrist"):
            xy = clip.keypoints[:, clip.keypoint_names.index(joint), :2]
            inside = (xy[:, 0] >= 0) & (xy[:, 0] < clip.width) & (xy[:, 1] >= 0) & (xy[:, 1] < clip.height)
            assert inside.all(), f"{name}: {joint} outside the image in {np.flatnonzero(~inside)}"
        assert np.all(np.diff(clip.timestamps) > 0)
        assert clip.fps == pytest.approx(30.0)


def test_second_run_does_zero_work(ma52_store):
    report = run_extract([str(MA52_VIDEOS)], ma52_store)
    assert report.processed == [] and report.frames == 0 and not report.failed
    assert sorted(report.skipped) == sorted(p.stem for p in ma52_clips())


def test_changed_parameter_gives_new_key_and_old_output_survives_until_gc(ma52_store, tmp_path):
    store = Store(tmp_path / "moved")
    # a moved store stays valid: nothing inside is absolute. Only the extract output and its ref: the session's
    # store may also hold tubes cut from it (another test's fixture), which would rightly keep it from gc.
    shutil.copytree(ma52_store.root / "extract", store.root / "extract")
    (store.root / "refs").mkdir()
    shutil.copy(ma52_store.root / "refs" / "extract.json", store.root / "refs" / "extract.json")
    old = KeypointSet(store)
    assert run_extract([str(MA52_VIDEOS)], store).processed == []

    half = ExtractParams(dtype="float16")
    assert stage_key(half) != stage_key(ExtractParams())
    report = run_extract([str(shortest_clip())], store, half)
    assert report.processed == [shortest_clip().stem] and report.key == stage_key(half)
    new = KeypointSet(store, half)
    assert new.load(shortest_clip().stem).keypoints.dtype == np.float16
    np.testing.assert_allclose(new.load(shortest_clip().stem).keypoints,
                               old.load(shortest_clip().stem).keypoints, rtol=1e-3, atol=0.5)
    assert len(old.names()) == 6  # the earlier output is still readable

    assert store.gc(dry_run=True) == [old.output.path]
    assert len(old.names()) == 6
    assert store.gc() == [old.output.path]
    assert not old.output.path.exists() and new.output.path.exists()


def test_bad_inputs_fail_one_by_one_with_a_line_naming_the_file(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    truncated = bad / "truncated.avi"
    data = (OTHER_VIDEOS / "pyskl__ntu_sample.avi").read_bytes()
    truncated.write_bytes(data[: int(len(data) * 0.6)])
    empty = bad / "empty.mp4"
    empty.write_bytes(b"")
    text = bad / "notes.mp4"
    text.write_text("these are interview notes, not a video\n" * 50)
    missing = bad / "missing.mp4"
    store = tmp_path / "store"

    result = run_cli("extract", str(truncated), str(empty), str(text), str(missing), str(shortest_clip()),
                     "--store", str(store))
    assert result.returncode == 1, result.stderr
    # MediaPipe's graph threads write native log lines ("INFO: ...") to the same stderr at any moment, so one of
    # them may precede our line on its row: each error line is taken from its "error: " on
    errors = [line[line.index("error: "):] for line in result.stderr.splitlines() if "error: " in line]
    expected = {truncated: "truncated video", empty: "empty file", text: "not a readable video",
                missing: "file not found"}
    assert len(errors) == len(expected), result.stderr
    for path, problem in expected.items():
        assert any(str(path) in line and problem in line for line in errors), (path, result.stderr)
    assert "1 processed" in result.stdout and "4 failed" in result.stdout

    kps = KeypointSet(store)
    assert kps.names() == [shortest_clip().stem]
    assert set(kps.output.failures()) == {"truncated", "empty", "notes", "missing"}

    status = run_cli("status", "--store", str(store))
    assert status.returncode == 0
    for path, problem in expected.items():
        assert f"{path.stem}: {path}: {problem}" in status.stdout.replace("\n", " ") or \
            any(path.stem in line and problem in line for line in status.stdout.splitlines()), status.stdout

    fixed = run_cli("extract", str(shortest_clip()), "--store", str(store))  # a good run does not clear others
    assert fixed.returncode == 0 and "0 processed, 1 skipped" in fixed.stdout


SHORT = [MA52_VIDEOS / f"{name}.mp4" for name in ("B2_shaking_head__0035_02_0007", "B3_turning_head__0010_02_0101")]


def test_decoding_ahead_changes_no_keypoint(ma52_store):
    """Issue 19: the stage decodes the next frames, and the next video, in a thread while the pose model works. Its
    keypoints equal, bit for bit, those of the plain loop with no overlap: `iter_frames` -> MediaPipe -> subject
    tracker (two clips that ran one after the other, the second decoded while the first was read)."""
    params = ExtractParams()
    estimator = make_estimator(params)
    layout = estimator.layout
    stored = KeypointSet(ma52_store)
    for clip in SHORT:
        estimator.reset()
        tracker = StreamingSubjectTracker(layout.num_keypoints, layout.body, params.max_jump)
        blocks = [tracker.push(estimator(rgb)) for _, rgb in iter_frames(clip)] + [tracker.flush()]
        blocks = [b for b in blocks if b is not None]
        item = stored.load(clip.stem)
        np.testing.assert_array_equal(item.keypoints, np.concatenate([k for k, _ in blocks]).astype(params.dtype))
        np.testing.assert_array_equal(item.detected, np.concatenate([d for _, d in blocks]))
    estimator.close()


def test_a_failing_video_leaves_nothing_and_the_next_is_whole(ma52_store, tmp_path, monkeypatch):
    """Issue 19, one worker: while a video fails, the next is already being decoded. The pose model failing at a
    video's 5th frame and a video truncated midway (its decoder fails after 31 frames went through the model) each
    fail alone with one line naming the file; neither leaves a half-written item; the video after them, decoded
    while they ran, gives the reference keypoints."""
    data = (OTHER_VIDEOS / "pyskl__ntu_sample.avi").read_bytes()
    truncated = tmp_path / "B2z_truncated.avi"  # between the two clips in name order
    truncated.write_bytes(data[: int(len(data) * 0.6)])

    class FailsAtFifthFrameOfFirstVideo:
        def __init__(self, inner):
            self.inner, self.layout, self.videos, self.frames = inner, inner.layout, 0, 0

        def reset(self):
            self.videos, self.frames = self.videos + 1, 0
            self.inner.reset()

        def close(self):
            self.inner.close()

        def __call__(self, rgb):
            self.frames += 1
            if self.videos == 1 and self.frames == 5:
                raise RuntimeError("graph stopped")
            return self.inner(rgb)

    monkeypatch.setattr(stage, "make_estimator", lambda *a, **k: FailsAtFifthFrameOfFirstVideo(make_estimator(*a, **k)))
    store = Store(tmp_path / "store")
    report = run_extract([str(SHORT[0]), str(truncated), str(SHORT[1])], store, workers=1)
    assert report.processed == [SHORT[1].stem]
    assert report.failed == {
        SHORT[0].stem: f"{SHORT[0]}: pose extraction failed (RuntimeError: graph stopped)",
        truncated.stem: f"{truncated}: truncated video: decoded 31 of 72 declared frames"}
    kps = KeypointSet(store)
    assert kps.names() == [SHORT[1].stem] and not (kps.output.path / "tmp").exists()
    assert_same_keypoints(kps, KeypointSet(ma52_store))


def test_second_concurrent_writer_fails_fast_and_nothing_is_corrupted(ma52_store, tmp_path):
    """Issue 18: deterministic, no race against a first run's finish: the test itself holds the store lock (as a
    running stage would), so a CLI writer must refuse at once, name the holder and write nothing; once the lock is
    released the same command runs and gives the reference keypoints."""
    store = Store(tmp_path / "store")
    with store.lock(command="dualnet extract (held by the test)"):
        second = run_cli("extract", str(shortest_clip()), "--store", str(store.root), timeout=120)
        assert second.returncode == 2
        assert f"{store.root}: store is in use by pid {os.getpid()}" in second.stderr
        assert "held by the test" in second.stderr and "Traceback" not in second.stderr
        assert not (store.root / "extract").exists()  # it refused before writing anything
        with pytest.raises(StoreLockedError):
            run_extract([str(shortest_clip())], store)
    first = run_cli("extract", str(shortest_clip()), "--store", str(store.root))
    assert first.returncode == 0, first.stderr
    assert_same_keypoints(KeypointSet(store), KeypointSet(ma52_store), [shortest_clip().stem])


def test_two_workers_give_the_same_keypoints(ma52_store, tmp_path):
    clips = [str(p) for p in ma52_clips()[:2]]
    report = run_extract(clips, tmp_path / "store", workers=2)
    assert len(report.processed) == 2 and not report.failed
    assert_same_keypoints(KeypointSet(tmp_path / "store"), KeypointSet(ma52_store))


def test_default_workers_follow_the_cores(monkeypatch, tmp_path):
    """Issue 19: `extract` (CLI default --workers 0) runs one worker per 1.36 available cores, what one MediaPipe
    process was measured to keep busy, rounded up: 2 on this 2-core machine (1.14x and 1.24x one worker, measured)."""
    from pipelines.stages import extract as stage

    assert [stage.default_workers(c) for c in (1, 2, 4, 16, 64)] == [1, 2, 3, 12, 48]
    monkeypatch.setattr(stage.os, "sched_getaffinity", lambda _: set(range(16)))  # a 16-core CPU set
    assert stage.default_workers() == 12
    seen = {}
    monkeypatch.setattr(stage, "_run_pool", lambda todo, *args: seen.setdefault("workers", args[-2]))
    monkeypatch.setattr(stage, "_run_inline", lambda *args: seen.setdefault("workers", 1))
    stage.run_extract([str(shortest_clip())], tmp_path / "store", workers=0)
    assert seen == {"workers": 12}


NTU_SAMPLE = OTHER_VIDEOS / "pyskl__ntu_sample.avi"  # 72 frames, 1920 x 1080, two men
TORSO = [11, 12, 23, 24]  # MediaPipe's shoulders and hips
# Hand-checked (issue 18): frames 0, 10, ..., 70 and 71 were decoded with PyAV, drawn with a grid every 25 px and the
# extracted torso keypoints, saved as PNG and looked at. Two men: on the left one in a grey striped T-shirt and beige
# trousers, on the right one in a dark jacket and dark trousers; from frame ~30 the left man reaches over and hugs
# the right one. In every one of those frames the extracted torso is the right man's. Per frame, the x range (px)
# that the right man's trunk covers at hip height (y = 600), read off the grid to about 10 px; the left man's trunk
# ends left of it in every one of them.
RIGHT_MAN_TRUNK = {0: (920, 1075), 10: (925, 1080), 20: (950, 1095), 30: (940, 1070), 40: (930, 1045),
                   50: (925, 1040), 60: (930, 1040), 70: (930, 1045), 71: (930, 1045)}
LEFT_MAN_ONLY = 900  # frames cut to x < 900 px show the left man's whole trunk and none of the right man's


def torso_x(keypoints: np.ndarray) -> np.ndarray:
    """Torso centre x of (..., V, 3) keypoints."""
    return keypoints[..., TORSO, 0].mean(axis=-1)


@pytest.fixture(scope="module")
def ntu_sample(tmp_path_factory):
    """`extract` (default parameters) of the two-person NTU sample."""
    store = tmp_path_factory.mktemp("ntu") / "store"
    report = run_extract([str(NTU_SAMPLE)], store)
    assert report.processed == [NTU_SAMPLE.stem]
    return KeypointSet(store).load(NTU_SAMPLE.stem)


def test_main_subject_is_the_same_hand_checked_man_throughout(ntu_sample):
    clip = ntu_sample
    assert clip.detected.mean() > 0.9
    x = torso_x(clip.keypoints)
    for t, (lo, hi) in RIGHT_MAN_TRUNK.items():
        assert clip.detected[t] and lo <= x[t] <= hi, f"frame {t}: torso x {x[t]:.0f} is not the right man's"
    # between the checked frames: no frame-to-frame jump of the tracked body (the tracker's own rule)
    boxes = np.array([body_box(k, range(33)) for k, d in zip(clip.keypoints, clip.detected, strict=True) if d])
    jumps = np.hypot(*np.diff(boxes[:, :2], axis=0).T) / boxes[:-1, 2]
    assert jumps.max() < 0.5, "the tracked subject switched between people"
    assert np.allclose(np.diff(clip.timestamps), 1 / 30)  # AVI pts are out of order; times are rebuilt


def test_tracker_keeps_one_man_when_both_are_candidates(ntu_sample):
    """MediaPipe finds one person a frame; the tracker is for pose models that find several (rtmlib). Here each
    frame offers it both real men in a random order: the right man as `extract` found him, the left man as MediaPipe
    finds him in the frame cut to x < LEFT_MAN_ONLY. Every second frame, to halve the pose model's time."""
    from pipelines.pose.subject import track_main_subject
    from pipelines.stages.extract import make_estimator

    params = ExtractParams()
    estimator = make_estimator(params)
    estimator.reset()
    steps = range(0, 72, 2)
    right = ntu_sample.keypoints[list(steps)].astype(np.float64)
    left = []
    for t, (_, rgb) in enumerate(iter_frames(NTU_SAMPLE)):
        if t % 2 == 0:
            people = estimator(np.ascontiguousarray(rgb[:, :LEFT_MAN_ONLY]))
            assert len(people) == 1, f"frame {t}: the left man not found"
            left.append(people[0])
    estimator.close()
    left = np.array(left)
    for t, (lo, _) in RIGHT_MAN_TRUNK.items():
        if t % 2 == 0:
            assert torso_x(left[t // 2]) < lo, f"frame {t}: the cut frame's person is not the left man"
    rng = np.random.default_rng(0)
    candidates = [[(left[i], right[i])[j] for j in rng.permutation(2)] for i in range(len(steps))]
    layout = estimator.layout
    kept, detected = track_main_subject(candidates, layout.num_keypoints, layout.body, params.max_jump)
    # anchored at the most prominent detection (body box size x mean score), which is the right man's
    assert detected.all()
    elsewhere = [2 * i for i in range(len(steps)) if not np.array_equal(kept[i], right[i], equal_nan=True)]
    assert not elsewhere, f"the tracker left the right man at frames {elsewhere}"


def test_an_item_is_never_replaced_by_a_different_video(ma52_store, tmp_path):
    """Issue 15.1: a video named like a stored item but elsewhere and different fails alone; predict's videos live
    apart from a dataset's; names that clean alike stay two items."""
    store = Store(tmp_path / "store")
    shutil.copytree(ma52_store.root / "extract", store.root / "extract")
    reference = KeypointSet(ma52_store)
    nodding, shaking = shortest_clip().stem, "B2_shaking_head__0035_02_0007"
    impostor = tmp_path / "other" / f"{nodding}.mp4"  # same stem, another folder, another video
    impostor.parent.mkdir()
    impostor.symlink_to(MA52_VIDEOS / f"{shaking}.mp4")

    report = run_extract([str(impostor)], store)
    assert report.processed == [] and list(report.failed) == [nodding]
    assert "already stored as item" in report.failed[nodding] and str(MA52_VIDEOS) in report.failed[nodding]
    assert_same_keypoints(KeypointSet(store), reference)  # the dataset's item is untouched
    result = run_cli("extract", str(impostor), "--store", str(store.root))
    assert result.returncode == 1 and "already stored as item" in result.stderr and "Traceback" not in result.stderr

    # predict's namespace: the same file is extracted into an output of its own, the dataset's stays as it was
    apart = run_extract([str(impostor)], store, namespace="predict", replace_changed=True)
    assert apart.processed == [nodding] and apart.key != stage_key(ExtractParams())
    own = KeypointSet(store, key=apart.key)
    np.testing.assert_array_equal(own.load(nodding).keypoints, reference.load(shaking).keypoints)
    assert_same_keypoints(KeypointSet(store), reference)
    assert Store(store.root).refs()["extract"] != apart.key  # the dataset's output stays the current one

    # names that clean to the same characters are two items, each with its own keypoints
    for folder, accent, clip in (("a", "é", nodding), ("b", "ü", shaking)):
        odd = tmp_path / folder / f"clip {accent} 1.mp4"
        odd.parent.mkdir()
        odd.symlink_to(MA52_VIDEOS / f"{clip}.mp4")
        assert run_extract([str(odd)], store).processed == [safe_name(odd.stem)]
    both = KeypointSet(store)
    np.testing.assert_array_equal(both.load("clip é 1").keypoints, reference.load(nodding).keypoints)
    np.testing.assert_array_equal(both.load("clip ü 1").keypoints, reference.load(shaking).keypoints)


def test_two_shards_extracting_while_one_compacts_equal_one_process(ma52_store, tmp_path, monkeypatch):
    """Issue 18: shards 0/2 and 1/2 of one run extract into one store side by side. Deterministic interleaving, no
    timing: shard 1 extracts its two clips and, at the kill point right after committing their pack (their loose
    copies not yet removed), shard 0 runs start to end: extracts its clip and compacts. The store then equals the
    one-process extraction: every clip once, equal values, `status` complete, `dualnet verify` clean."""
    from collections import Counter

    from pipelines.formats import keypoint_packs
    from pipelines.formats.keypoint_packs import KeypointIndex
    from pipelines.store import Shard

    names = ["A2_turning_around__0078_01_0005", "B2_shaking_head__0035_02_0007", "B3_turning_head__0010_02_0101"]
    assert [Shard(0, 2).owns(n) for n in names] == [True, False, False]  # shard 0: A2 (60 frames); 1: B2, B3
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in names:
        (videos / f"{name}.mp4").symlink_to(MA52_VIDEOS / f"{name}.mp4")
    store = Store(tmp_path / "store")
    other = []

    def pause(point: str) -> None:
        if point == "pack.committed" and not other:
            other.append("running")
            other.append(run_extract([str(videos)], store, shard=Shard(0, 2)))

    monkeypatch.setattr(keypoint_packs, "kill_point", pause)
    first = run_extract([str(videos)], store, shard=Shard(1, 2))
    monkeypatch.undo()
    assert len(other) == 2, "shard 1 never reached its pack commit"
    assert other[1].processed == names[:1] and sorted(first.processed) == names[1:]
    kps = KeypointSet(store)
    index = KeypointIndex(kps.output)
    held = Counter(n for pack in index.packs.values() for n in pack)
    assert not index.loose and held == Counter(names), (index.loose, index.packs)  # each clip in exactly one pack
    assert_same_keypoints(kps, KeypointSet(ma52_store), names)
    (summary,) = store.status()
    assert (summary.done, summary.failed, summary.total) == (3, 0, 3)
    verify = run_cli("verify", "--store", str(store.root))
    assert verify.returncode == 0 and "in 1 output(s), 0 damaged" in verify.stdout, verify.stdout + verify.stderr
