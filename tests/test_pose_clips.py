"""The pose-clip cache (`pipelines/formats/pose_clips.py`) behind pose-only training: the same samples as the eager
dataset it replaced, built once, rebuilt where an item changed, cheap to pickle, one line when damaged."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import dualnet
from conftest import SHARED, requires_shared
from dualnet.entities import entity_boxes, flip_order, get_entity_set
from dualnet.layouts import get_layout
from dualnet.transforms import hflip_pose
from pipelines.data.clips import KeypointClipDataset, LabelledClips, segment_indices
from pipelines.errors import StoreError
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.params import ImportParams, TrainParams
from pipelines.formats.pose_clips import ensure_pose_clips
from pipelines.stages.import_poses import run_import


class EagerKeypointClipDataset(Dataset):
    """The dataset as it was before the cache (issue 14, point 7), kept verbatim as the reference: every clip
    loaded and every box computed in __init__."""

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
def jhmdb(tmp_path_factory):
    """The real JHMDB split-1 training pickle imported (433 clips, 15 joints); every third clip, labelled."""
    if not (SHARED / "jhmdb").is_dir():
        pytest.skip(f"real sample data not found at {SHARED}")
    store = tmp_path_factory.mktemp("jhmdb_store")
    run_import(SHARED / "jhmdb" / "GT_train_1.pkl", ImportParams("jhmdb"), store)
    keypoints = KeypointSet(store, ImportParams("jhmdb"))
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
