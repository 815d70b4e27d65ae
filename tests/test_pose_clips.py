"""The pose-clip cache (`pipelines/formats/pose_clips.py`) behind pose-only training: the same samples as the eager
dataset it replaced, built once (in one process or spread over several, the same bytes), resumed after a kill,
rebuilt where an item changed, cheap to pickle, one line when damaged."""

from __future__ import annotations

import gc
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from reference_entities import entity_boxes
from torch.utils.data import DataLoader, Dataset

import dualnet
from conftest import REPO, requires_shared
from dualnet.entities import flip_order, get_entity_set
from dualnet.layouts import get_layout
from dualnet.transforms import hflip_pose
from pipelines.data.clips import KeypointClipDataset, LabelledClips, segment_indices
from pipelines.errors import StoreError
from pipelines.formats import pose_clips
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.params import ImportParams, TrainParams
from pipelines.formats.pose_clips import ensure_pose_clips, read_index
from pipelines.stages.import_poses import run_import


class EagerKeypointClipDataset(Dataset):
    """The dataset as it was before the cache (issue 14, point 7), kept verbatim as the reference: every clip
    loaded and every box computed in __init__, by the per-clip box computation of that time (`reference_entities`)."""

    def __init__(self, keypoints, clips: LabelledClips, config, params: TrainParams, train: bool):
        self.clips, self.config, self.params, self.train = clips, config, params, train
        self.entities = get_entity_set(config.entity_set)
        self.layout = get_layout(config.layout)
        self.epoch = 0
        self.items = []
        for name in clips.names:
            clip = keypoints.load(name)
            kp = clip.keypoints.astype(np.float64)
            boxes, visible = entity_boxes(kp, self.layout, self.entities, (clip.width or 1, clip.height or 1))
            self.items.append((kp.astype(np.float32), boxes.astype(np.float32), visible))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.params.seed, self.epoch, i])
        kp, boxes, visible = self.items[i]
        idx = segment_indices(len(kp), self.config.num_frames, self.train, rng, self.params.temporal_crop)
        kp, boxes, visible = kp[idx].copy(), boxes[idx].copy(), visible[idx]
        if self.train and rng.random() < self.params.flip:
            boxes, kp = hflip_pose(boxes, kp, 0.0, self.entities, self.layout)
            visible = visible[:, flip_order(self.entities)]
        if self.train and self.params.keypoint_noise > 0:
            side = float(np.median(boxes[..., 2] - boxes[..., 0]))
            kp[..., :2] += rng.normal(0, self.params.keypoint_noise * side, kp[..., :2].shape)
        return {"keypoints": torch.from_numpy(kp), "boxes": torch.from_numpy(boxes),
                "visible": torch.from_numpy(np.ascontiguousarray(visible, dtype=bool)),
                "label": torch.tensor(self.clips.labels[i])}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def jhmdb(jhmdb_keypoints):
    """The real JHMDB split-1 training clips (433, 15 joints); every third clip, labelled."""
    keypoints = jhmdb_keypoints
    names = keypoints.names()[::3]
    labels = tuple(int(keypoints.attributes(n)["label"] != "run") for n in names)
    return keypoints, LabelledClips(tuple(names), labels)


@requires_shared
def test_samples_equal_the_eager_dataset_on_real_data(jhmdb):
    keypoints, clips = jhmdb
    config = dualnet.preset("pose_tiny", num_classes=2, entity_set="k6", layout="jhmdb_15")
    params = TrainParams(keypoint_noise=0.02, temporal_crop=0.2, seed=3)
    eager = EagerKeypointClipDataset(keypoints, clips, config, params, True)
    cached = KeypointClipDataset(keypoints, clips, config, params, True)
    assert len(cached) == len(eager) == 145
    for train, epoch in ((True, 0), (True, 5), (False, 0)):
        eager.train = cached.train = train
        eager.epoch = cached.epoch = epoch
        for i in range(0, 145, 3):
            assert _same(cached[i], eager[i]), (train, epoch, i)
    # the dataset pickles as an index, not as the keypoints (the eager one carried every clip's arrays)
    assert len(pickle.dumps(cached)) < 64_000 < len(pickle.dumps(eager))
    copy = pickle.loads(pickle.dumps(cached))  # what a spawned DataLoader worker gets
    assert all(_same(copy[i], eager[i]) for i in range(0, 145, 11))
    part = torch.utils.data.Subset(cached, range(64))
    loaded = DataLoader(part, batch_size=16, num_workers=2)
    plain = DataLoader(part, batch_size=16, num_workers=0)
    for a, b in zip(loaded, plain, strict=True):
        assert _same(a, b)


@requires_shared
def test_rotation_turns_training_samples_only_and_off_leaves_them_as_they_were(jhmdb):
    """`rotate` turns each training clip by its own angle (boxes with it), never an evaluation clip; at 0 it draws
    nothing, so every other draw (frames, flips, noise) is as without it."""
    keypoints, clips = jhmdb
    config = dualnet.preset("pose_tiny", num_classes=2, entity_set="k6", layout="jhmdb_15")
    plain = KeypointClipDataset(keypoints, clips, config, TrainParams(seed=3, flip=0.0), True)
    turned = KeypointClipDataset(keypoints, clips, config, TrainParams(seed=3, flip=0.0, rotate=20.0), True)
    angles = []
    for i in range(0, 145, 7):
        a, b = plain[i], turned[i]
        assert torch.equal(a["visible"], b["visible"]) and torch.equal(a["keypoints"][..., 2], b["keypoints"][..., 2])
        seen = torch.isfinite(a["keypoints"][..., 0])
        p, q = a["keypoints"][seen][:, :2].double(), b["keypoints"][seen][:, :2].double()
        p, q = p - p.mean(0), q - q.mean(0)  # about the points' mean, the turn is the best-fitting rotation
        angles.append(float(torch.rad2deg(torch.atan2(-(p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0]).sum(),
                                                      (p * q).sum()))))
        assert torch.allclose(torch.cdist(p, p), torch.cdist(q, q), atol=1e-2)  # a rigid turn
    assert all(abs(x) <= 20.0 + 1e-3 for x in angles) and len({round(x, 3) for x in angles}) == len(angles)
    assert max(angles) > 5 and min(angles) < -5
    evaluation = KeypointClipDataset(keypoints, clips, config, TrainParams(seed=3, rotate=20.0), False)
    reference = KeypointClipDataset(keypoints, clips, config, TrainParams(seed=3), False)
    assert all(_same(evaluation[i], reference[i]) for i in range(0, 145, 29))


@requires_shared
def test_built_once_then_read_and_damage_is_one_line(jhmdb):
    keypoints, clips = jhmdb
    names = list(clips.names[:40])
    first, report = ensure_pose_clips(keypoints, names, "jhmdb_15", "hand")
    again, report_again = ensure_pose_clips(keypoints, names[:30] + [clips.names[-1]], "jhmdb_15", "hand")
    assert (report.computed, report.cached) == (40, 0)
    assert (report_again.computed, report_again.cached) == (1, 30)  # only the clip not asked for before
    output = keypoints.store.stage("poseclips", report.key)
    assert output.summary().done == 41 and keypoints.store.refs()["poseclips"] == report.key
    for i in (0, 17):
        np.testing.assert_array_equal(first.read(i)[0], keypoints.load(names[i]).keypoints)
    data = output.items_dir / first.packs[0] / "data.bin"
    raw = bytearray(data.read_bytes())
    raw[int(first.offset[5]) + 3] ^= 0xFF
    data.write_bytes(bytes(raw))
    fresh, _ = ensure_pose_clips(keypoints, names, "jhmdb_15", "hand")  # a new reader: no file open yet
    with pytest.raises(StoreError, match=rf"{data}: clip '{names[5]}' is damaged \(fails its CRC-32\)"):
        fresh.read(5)


def test_a_changed_item_is_computed_again(tmp_path):
    """A re-imported clip with new content (its source fingerprint changes) is not read from the cache."""
    from test_importers import write_openpose_clip

    write_openpose_clip(tmp_path / "json" / "clip_a", frames=8, seed=0)
    params = ImportParams("openpose", fps=25)
    run_import(tmp_path / "json", params, tmp_path / "store")
    cache, report = ensure_pose_clips(KeypointSet(tmp_path / "store", params), ["clip_a"],
                                      "openpose_body25_face_hands", "k5")
    before = cache.read(0)[0].copy()
    for f in (tmp_path / "json" / "clip_a").iterdir():
        f.unlink()
    (tmp_path / "json" / "clip_a").rmdir()
    write_openpose_clip(tmp_path / "json" / "clip_a", frames=8, seed=1)
    run_import(tmp_path / "json", params, tmp_path / "store")
    keypoints = KeypointSet(tmp_path / "store", params)
    cache, report = ensure_pose_clips(keypoints, ["clip_a"], "openpose_body25_face_hands", "k5")
    assert report.computed == 1
    np.testing.assert_array_equal(cache.read(0)[0], keypoints.load("clip_a").keypoints)
    assert not np.array_equal(cache.read(0)[0], before, equal_nan=True)


def _assert_cached_as_computed_before(cache, keypoints: KeypointSet, names: list[str], layout: str, entity_set: str,
                                      smooth_sigma: float) -> None:
    """Each clip of `cache` holds, bit for bit, the stored keypoints and the boxes and visibility that the per-clip
    box computation of before the batching (`reference_entities`) gives for them."""
    layout_, entities = get_layout(layout), get_entity_set(entity_set)
    for i, name in enumerate(names):
        clip = keypoints.load(name)
        boxes, visible = entity_boxes(clip.keypoints.astype(np.float64), layout_, entities,
                                      (clip.width or 1, clip.height or 1), smooth_sigma)
        got = cache.read(i)
        for a, b in zip(got, (clip.keypoints.astype(np.float32), boxes.astype(np.float32), visible), strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), name


@requires_shared
def test_a_build_spread_over_processes_writes_what_one_process_computes(jhmdb, monkeypatch, tmp_path):
    """Over the processes' limit the clips are computed in worker processes, a pack each: as many packs as a multiple
    of the processes, every clip as the per-clip computation of before gives it."""
    keypoints, clips = jhmdb
    names = list(clips.names)  # 145 clips
    monkeypatch.setattr(pose_clips, "MIN_CLIPS_PER_PROCESS", 16)
    monkeypatch.setattr(pose_clips, "_cores", lambda: 2)
    monkeypatch.setattr(pose_clips, "PACK_CLIPS", 24)
    write_pack = pose_clips._write_pack

    def noting_the_process(*args):
        with open(tmp_path / "writers", "a") as f:
            f.write(f"{os.getpid()}\n")
        return write_pack(*args)

    monkeypatch.setattr(pose_clips, "_write_pack", noting_the_process)  # (a forked worker has it too)
    cache, report = ensure_pose_clips(keypoints, names, "jhmdb_15", "k5", smooth_sigma=1.5)
    writers = (tmp_path / "writers").read_text().split()
    assert len(writers) == 8 and len(set(writers)) == 2 and str(os.getpid()) not in writers
    assert (report.computed, report.cached) == (145, 0)
    assert len(cache.packs) == 8  # 2 processes x ceil(145 / (2 x 24)) packs of 19 clips (the last 12)
    assert sorted(np.bincount(cache.pack)) == [12] + [19] * 7
    _assert_cached_as_computed_before(cache, keypoints, names, "jhmdb_15", "k5", 1.5)
    output = keypoints.store.stage("poseclips", report.key)
    assert not (output.path / "tmp").exists()  # every pack the workers wrote was committed


@requires_shared
def test_the_pose_clip_build_forks_its_workers_frozen(jhmdb, monkeypatch, tmp_path):
    """The forked build's workers inherit a frozen generation: their collections never free the parent's objects."""
    keypoints, clips = jhmdb
    monkeypatch.setattr(pose_clips, "MIN_CLIPS_PER_PROCESS", 16)
    monkeypatch.setattr(pose_clips, "_cores", lambda: 2)
    write_pack = pose_clips._write_pack

    def noting_the_frozen_count(*args):
        with open(tmp_path / "frozen", "a") as f:
            f.write(f"{os.getpid()} {gc.get_freeze_count()}\n")
        return write_pack(*args)

    monkeypatch.setattr(pose_clips, "_write_pack", noting_the_frozen_count)
    # a smoothing of its own: a build no other test made in this session store
    pose_clips.ensure_pose_clips(keypoints, list(clips.names), "jhmdb_15", "k5", smooth_sigma=1.25)
    counts = [int(line.split()[1]) for line in (tmp_path / "frozen").read_text().splitlines()]
    assert counts and all(c > 0 for c in counts)
    assert gc.get_freeze_count() == 0  # the parent unfroze after forking


KILLED_BUILD = """
import sys
from pipelines.formats import pose_clips
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.params import ImportParams

pose_clips.PACK_CLIPS = 16
keypoints = KeypointSet(sys.argv[1], ImportParams("jhmdb"))
_, report = pose_clips.ensure_pose_clips(keypoints, sys.argv[2].split(","), "jhmdb_15", "hand", smooth_sigma=0.5)
print(report.computed)
"""


@requires_shared
def test_a_killed_build_loses_only_the_pack_in_progress_and_resumes(jhmdb, tmp_path):
    """SIGKILLed once its 4th pack is written but not committed (`kill_points`): the store holds the 3 packs
    committed before, and the written one in ``tmp`` is never read; the next build computes only the rest."""
    keypoints, clips = jhmdb
    names = list(clips.names[:64])

    def build(**env) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", KILLED_BUILD, str(keypoints.store.root), ",".join(names)],
                              cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)

    trace = tmp_path / "trace"
    traced = build(DUALNET_KILL_TRACE=str(trace))
    assert traced.returncode == 0 and traced.stdout.split() == ["64"], traced.stderr
    points = trace.read_text().split()
    assert points.count("poseclips.pack_written") == points.count("poseclips.pack_committed") == 4
    _, report = ensure_pose_clips(keypoints, names, "jhmdb_15", "hand", smooth_sigma=0.5)
    output = keypoints.store.stage("poseclips", report.key)
    shutil.rmtree(output.path)  # start again from nothing, as the traced run did
    third = [i for i, p in enumerate(points) if p == "poseclips.pack_committed"][2]
    assert points[third + 1] == "poseclips.pack_written"
    killed = build(DUALNET_KILL_AT=str(third + 2))  # (1-based) the 4th pack written, not committed
    assert killed.returncode == -9, killed.stderr
    index = read_index(output)
    assert len(output.pack_names()) == 3 and len(index) == 48
    written = list((output.path / "tmp").rglob("clips.json"))
    assert len(written) == 1 and {c["name"] for c in json.loads(written[0].read_text())["clips"]}.isdisjoint(index)
    resumed = build()
    assert resumed.returncode == 0 and resumed.stdout.split() == ["16"], resumed.stderr
    assert not (output.path / "tmp").exists() and len(read_index(output)) == 64
    cache, report = ensure_pose_clips(keypoints, names, "jhmdb_15", "hand", smooth_sigma=0.5)
    assert report.computed == 0
    _assert_cached_as_computed_before(cache, keypoints, names, "jhmdb_15", "hand", 0.5)


KILLED_PARALLEL_BUILD = """
import os, sys
from pipelines.formats import pose_clips
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.params import ImportParams

pose_clips.PACK_CLIPS, pose_clips.MIN_CLIPS_PER_PROCESS, pose_clips._cores = 16, 8, lambda: 2
write_pack = pose_clips._write_pack


def noting_the_process(*args):
    with open(sys.argv[3], "a") as f:
        f.write(f"{os.getpid()}\\n")
    return write_pack(*args)


pose_clips._write_pack = noting_the_process
keypoints = KeypointSet(sys.argv[1], ImportParams("jhmdb"))
pose_clips.ensure_pose_clips(keypoints, sys.argv[2].split(","), "jhmdb_15", "k6", smooth_sigma=0.75)
"""


@requires_shared
def test_a_killed_parallel_build_leaves_no_worker_behind_and_resumes(jhmdb, tmp_path):
    """The building process SIGKILLed after committing 3 of its 4 packs: its worker processes die with it (they hold
    a copy of the store lock's descriptor), so the next build takes the lock at once and computes only the rest."""
    keypoints, clips = jhmdb
    names = list(clips.names[:64])

    def build(**env) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", KILLED_PARALLEL_BUILD, str(keypoints.store.root), ",".join(names),
                               str(tmp_path / "writers")], cwd=REPO, env={**os.environ, **env}, capture_output=True,
                              text=True, timeout=120)

    trace = tmp_path / "trace"
    assert build(DUALNET_KILL_TRACE=str(trace)).returncode == 0
    own = [p for p in trace.read_text().split() if p != "poseclips.pack_written"]  # the building process's points
    at = [i for i, p in enumerate(own) if p == "poseclips.pack_committed"][2] + 1  # its 3rd commit (1-based)
    assert at > 4  # a worker (which counts its own points) writes 4 packs at most: none dies first
    _, report = ensure_pose_clips(keypoints, names, "jhmdb_15", "k6", smooth_sigma=0.75)
    output = keypoints.store.stage("poseclips", report.key)
    shutil.rmtree(output.path)
    (tmp_path / "writers").unlink()
    killed = build(DUALNET_KILL_AT=str(at))
    assert killed.returncode == -9, killed.stderr
    workers = set((tmp_path / "writers").read_text().split())
    assert len(workers) == 2

    def gone(pid: str) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
        except OSError:
            return True

    deadline = time.monotonic() + 10
    while not all(gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(gone(pid) for pid in workers)
    assert len(read_index(output)) == 48
    cache, report = ensure_pose_clips(keypoints, names, "jhmdb_15", "k6", smooth_sigma=0.75)  # the lock is free
    assert report.computed == 16
    _assert_cached_as_computed_before(cache, keypoints, names, "jhmdb_15", "k6", 0.75)


def test_the_cache_carries_depth_and_the_dataset_gives_it_through_flips_and_noise(tmp_path):
    """A 3D import's clips are cached with their depth (flagged per clip, read back bit for bit; boxes from x, y
    alone, as for the same clips without z); a depth model's samples are (T, V, 4) = x, y, score, z, whose first
    three channels are the 2D model's samples exactly (flip, noise and sampling drawn alike) and whose z follows its
    joint through a flip; a depth model on clips without depth is one InputError."""
    from helpers import shrec_folder
    from pipelines.data.datasets import shrec17
    from pipelines.errors import InputError

    shrec_folder(tmp_path / "shrec")
    params = ImportParams("shrec17")
    run_import(tmp_path / "shrec", params, tmp_path / "store")
    keypoints = KeypointSet(tmp_path / "store", params)
    names = keypoints.names()
    cache, report = ensure_pose_clips(keypoints, names, "shrec17_22", "hand")
    assert report.computed == 8 and cache.depth.all()
    header = json.loads(next((keypoints.store.stage("poseclips", report.key).items_dir).glob("@*/clips.json"))
                        .read_text())
    assert all(entry["depth"] is True for entry in header["clips"])
    layout, entities = get_layout("shrec17_22"), get_entity_set("hand")
    for i, name in enumerate(names):
        clip = keypoints.load(name)
        kp, boxes, visible, depth = cache.read_with_depth(i)
        assert depth.dtype == np.float32 and depth.tobytes() == clip.depth.tobytes()
        assert kp.tobytes() == clip.keypoints.astype(np.float32).tobytes()
        want, _ = entity_boxes(clip.keypoints.astype(np.float64), layout, entities, (1, 1), 1.0)
        assert boxes.tobytes() == want.astype(np.float32).tobytes()  # z plays no part in the boxes
        assert all(a.tobytes() == b.tobytes() for a, b in zip(cache.read(i), (kp, boxes, visible), strict=True))
    index = shrec17(tmp_path / "shrec")
    clips = LabelledClips(tuple(names), tuple(c.label for c in sorted(index.clips, key=lambda c: c.clip_id)))
    flat_config = dualnet.preset("pose_tiny", num_classes=14, layout="shrec17_22", entity_set="hand")
    deep_config = flat_config.override(pose_depth=True)
    for train_params, train in ((TrainParams(flip=1.0, keypoint_noise=0.05, seed=2), True),
                                (TrainParams(test_flip=True), False)):
        flat = KeypointClipDataset(keypoints, clips, flat_config, train_params, train)
        deep = KeypointClipDataset(keypoints, clips, deep_config, train_params, train)
        for i in range(len(names)):
            a, b = flat[i], deep[i]
            assert b["keypoints"].shape == (flat_config.num_frames, 22, 4)
            assert torch.equal(b["keypoints"][..., :3], a["keypoints"]) and torch.equal(b["boxes"], a["boxes"])
            if not train:  # the test-time mirror image: z with its joint, unchanged in value
                assert torch.equal(b["flipped_keypoints"][..., :3], a["flipped_keypoints"])
                idx = segment_indices(len(keypoints.load(names[i]).depth), flat_config.num_frames, False)
                z = torch.from_numpy(keypoints.load(names[i]).depth[idx])
                assert torch.equal(b["keypoints"][..., 3], z)
                perm = np.arange(22)
                for p, q in layout.flip_pairs:
                    perm[p], perm[q] = q, p
                assert torch.equal(b["flipped_keypoints"][..., 3], z[:, perm])
            else:  # noise on z too, at the scale of x, y's
                z = torch.from_numpy(keypoints.load(names[i]).depth)
                assert not any(torch.equal(b["keypoints"][t, :, 3], z[f]) for t in range(4) for f in range(len(z)))
    pyskl = tmp_path / "flat.pkl"
    kp = np.random.default_rng(0).uniform(100, 200, (1, 8, 22, 2))
    pyskl.write_bytes(pickle.dumps({"annotations": [{"frame_dir": "flat", "label": 0, "keypoint": kp}]}))
    flat_params = ImportParams("pyskl", layout="shrec17_22")
    run_import(pyskl, flat_params, tmp_path / "store")
    with pytest.raises(InputError, match=r"takes depth \(pose_depth\), but 1 of the 1 clips have none"):
        KeypointClipDataset(KeypointSet(tmp_path / "store", flat_params), LabelledClips(("flat",), (0,)),
                            deep_config, TrainParams(), False)


def test_a_flipped_sample_moves_each_joints_depth_with_it(tmp_path):
    """On a body layout with left/right pairs (COCO-17, from a 3D pyskl pickle), the training flip and the test-time
    mirror put each joint's z where its joint goes, values unchanged: z equal to the joint's index makes the
    permutation visible."""
    frames, joints = 12, 17
    rng = np.random.default_rng(5)
    kp = np.concatenate([rng.uniform(100, 400, (1, frames, joints, 2)),
                         np.broadcast_to(np.arange(1.0, joints + 1)[None, None, :, None], (1, frames, joints, 1))], -1)
    (tmp_path / "3d.pkl").write_bytes(pickle.dumps({"annotations": [
        {"frame_dir": "deep", "label": 0, "keypoint": kp, "keypoint_score": np.ones((1, frames, joints))}]}))
    params = ImportParams("pyskl", layout="coco_17")
    run_import(tmp_path / "3d.pkl", params, tmp_path / "store")
    keypoints = KeypointSet(tmp_path / "store", params)
    layout = get_layout("coco_17")
    assert layout.flip_pairs  # the permutation is not the identity here
    perm = np.arange(joints)
    for p, q in layout.flip_pairs:
        perm[p], perm[q] = q, p
    config = dualnet.preset("pose_tiny", num_classes=2, layout="coco_17", entity_set="k6").override(pose_depth=True)
    clips = LabelledClips(("deep",), (0,))
    z = torch.arange(1.0, joints + 1)
    flipped = KeypointClipDataset(keypoints, clips, config, TrainParams(flip=1.0, seed=1), True)[0]
    assert torch.equal(flipped["keypoints"][..., 3], z[perm].expand(config.num_frames, -1))
    evaluated = KeypointClipDataset(keypoints, clips, config, TrainParams(test_flip=True), False)[0]
    assert torch.equal(evaluated["keypoints"][..., 3], z.expand(config.num_frames, -1))
    assert torch.equal(evaluated["flipped_keypoints"][..., 3], z[perm].expand(config.num_frames, -1))
    # x, y travel the same way: the flipped sample's joint j is the mirror of the original's joint perm[j]
    assert torch.allclose(evaluated["flipped_keypoints"][..., 1], evaluated["keypoints"][:, perm, 1])


@requires_shared
def test_tubes_refuse_rotation_in_training(ma52_tubes):
    """Turning keypoints would leave the tubes' crops as they were cut: a tube dataset refuses `rotate` for training
    (and takes it for evaluation, where nothing is rotated)."""
    from pipelines.data.clips import make_dataset

    tubes = ma52_tubes
    names = tuple(sorted(tubes.names()))
    clips = LabelledClips(names, tuple(range(len(names))))
    config = dualnet.preset("tiny", num_classes=52)
    with pytest.raises(ValueError, match="rotate 10.0 turns pose-only training clips; tubes cannot be rotated"):
        make_dataset(tubes, clips, config, TrainParams(rotate=10.0), train=True)
    assert len(make_dataset(tubes, clips, config, TrainParams(rotate=10.0), train=False)) == len(clips.names)
