"""The pose stream's input representation (issue 14.4): temporal pooling (`pose_stride`), joint-pair distances
(`pose_encoding="body_distances"`) and test-time flip, on real JHMDB joints where the data matters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dualnet
from conftest import SHARED, requires_shared
from dualnet.encoders import PoseEntityEncoder, TemporalHalving
from dualnet.entities import entity_boxes, get_entity_set
from dualnet.layouts import get_layout

JHMDB = get_layout("jhmdb_15")
K6 = get_entity_set("k6")


@pytest.fixture(scope="module")
def jhmdb_clip() -> np.ndarray:
    """(T, 15, 3) the first clip of JHMDB's split-1 test pickle: real joints, x, y in pixels, score 1."""
    if not (SHARED / "jhmdb").is_dir():
        pytest.skip(f"needs the JHMDB joints in {SHARED / 'jhmdb'}")
    from pipelines.pose.importers.pyskl_pickle import read_jhmdb

    return read_jhmdb(SHARED / "jhmdb" / "GT_test_1.pkl")[0].keypoints


def _inputs(kp: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    boxes, _ = entity_boxes(kp, JHMDB, K6, (320, 240))
    return torch.tensor(kp[None], dtype=torch.float32), torch.tensor(boxes[None], dtype=torch.float32)


def test_stride_needs_a_power_of_two_that_divides_the_frames_and_pose_alone():
    with pytest.raises(ValueError, match="pose_stride 3 must be a power of 2 dividing num_frames 32"):
        dualnet.preset("pose", pose_stride=3)
    with pytest.raises(ValueError, match="pose_stride 4 must be a power of 2 dividing num_frames 6"):
        dualnet.preset("pose", pose_stride=4, num_frames=6)
    with pytest.raises(ValueError, match="it needs modality 'pose'"):
        dualnet.preset("tiny", pose_stride=2)


def test_halving_keeps_entities_apart_and_time_local():
    """Entity k's output depends on entity k's input only (one grouped convolution, not a mix of entities), and
    token j on frames 2j - 1 .. 2j + 1 only (kernel 3, stride 2)."""
    torch.manual_seed(0)
    halving = TemporalHalving(3, 8).eval()
    x = torch.randn(2, 8, 3, 8)  # (B, T, K, D)
    base = halving(x)
    assert base.shape == (2, 4, 3, 8)
    other = x.clone()
    other[:, :, 1] += 5.0 * torch.randn(2, 8, 8)  # entity 1 changes everywhere (not by a constant: LayerNorm)
    changed = (halving(other) - base).abs().amax(dim=(0, 1, 3))  # per entity
    assert changed[1] > 0.1 and changed[0] == 0 and changed[2] == 0
    late = x.clone()
    late[:, 6] += 5.0 * torch.randn(2, 3, 8)  # frame 6: token 3 only (its pair 6, 7 and conv taps 5, 6, 7)
    moved = (halving(late) - base).abs().amax(dim=(0, 2, 3))  # per token
    assert moved[3] > 0.1 and (moved[:3] == 0).all()
    early = x.clone()
    early[:, 1] += 5.0 * torch.randn(2, 3, 8)  # frame 1: tokens 0 (pair 0, 1) and 1 (taps 1, 2, 3)
    moved = (halving(early) - base).abs().amax(dim=(0, 2, 3))
    assert moved[0] > 0.1 and moved[1] > 0.1 and (moved[2:] == 0).all()


@requires_shared
def test_strided_model_sees_a_token_per_stride_and_an_entity_seen_in_any_of_its_frames(jhmdb_clip):
    torch.manual_seed(0)
    config = dualnet.preset("pose", layout="jhmdb_15", num_classes=21, num_frames=16, pose_stride=4, dim=32,
                            heads=2, mac_dim=8)
    model = dualnet.MicroDualNet(config).eval()
    kp, boxes = _inputs(jhmdb_clip[:16])
    visible = torch.zeros(1, 16, len(K6), dtype=torch.bool)
    visible[0, 5, 0] = True  # entity 0 seen in frame 5 only: token 1 (frames 4..7)
    with torch.no_grad():
        x = model.entity_features(keypoints=kp, boxes=boxes, visible=visible)  # (1, 4, K, D)
        out = model(keypoints=kp, boxes=boxes, visible=visible)
    assert x.shape == (1, 4, len(K6), 32) and out.logits.shape == (1, 21)
    missing = model.missing_token[0, 0, 0] + model.entity_embedding[0, 0, 0]
    for token in range(4):
        is_missing = torch.allclose(x[0, token, 0] - model.time_embedding[0, token, 0], missing, atol=1e-6)
        assert is_missing == (token != 1), token
    assert model.time_embedding.shape[1] == 4


def _distances(encoder: PoseEntityEncoder, kp: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
    """The joint-pair distance block of the body features, (T, V_b (V_b - 1) / 2)."""
    keypoints = torch.tensor(kp[None], dtype=torch.float32)
    person = encoder.person_frame(keypoints, encoder.body)
    return encoder.body_features(keypoints, 1, person)[0, :, 0, -encoder.pairs.shape[1]:]


@requires_shared
def test_joint_pair_distances_are_the_joints_distances_in_person_scales_and_ignore_rotation(jhmdb_clip):
    encoder = PoseEntityEncoder(JHMDB, K6, 16, encoding="body_distances")
    kp = jhmdb_clip[:8].copy()
    _, boxes = _inputs(kp)
    got = _distances(encoder, kp, boxes)
    assert got.shape == (8, 15 * 14 // 2)
    xy = kp[..., :2]
    scale = np.mean([np.ptp(f, axis=0).max() for f in xy])  # the body's mean extent over the frames
    i, j = 3, 11  # one pair, by hand: its column among the (i < j) pairs in row-major order
    column = sum(15 - 1 - r for r in range(i)) + (j - i - 1)
    np.testing.assert_allclose(got[:, column].numpy(), np.linalg.norm(xy[:, i] - xy[:, j], axis=-1) / scale,
                               rtol=1e-4)
    angle = math.radians(37)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    turned = kp.copy()
    turned[..., :2] = (xy - xy.mean((0, 1))) @ rotation.T + xy.mean((0, 1))
    # the person's scale is its extent along x or y, which a rotation changes: compare shapes, not sizes
    rotated = _distances(encoder, turned, boxes)
    ratio = rotated / got.clamp_min(1e-6)
    np.testing.assert_allclose(ratio.numpy(), ratio[0, 0].item(), rtol=1e-3)
    gone = kp.copy()
    gone[:, 4] = np.nan  # a missing joint: its pairs are zeros, the others unchanged
    without = _distances(encoder, gone, boxes)
    pairs = encoder.pairs.T.tolist()
    with_4 = [c for c, (a, b) in enumerate(pairs) if 4 in (a, b)]
    assert (without[:, with_4] == 0).all()
    assert torch.isfinite(without).all()


@requires_shared
def test_test_time_flip_averages_the_clip_and_its_mirror_image(tmp_path):
    """The pose dataset in evaluation gives the mirrored clip too, and `predict` scores the mean of both logits."""
    from dualnet.entities import flip_order
    from dualnet.transforms import hflip_pose
    from pipelines.data.clips import KeypointClipDataset, LabelledClips, predict
    from pipelines.formats.keypoints import KeypointSet
    from pipelines.formats.params import ImportParams, TrainParams
    from pipelines.stages.import_poses import run_import

    params = ImportParams("jhmdb")
    run_import(SHARED / "jhmdb" / "GT_test_1.pkl", params, tmp_path)
    kps = KeypointSet(tmp_path, params)
    names = sorted(kps.names())[:5]
    clips = LabelledClips(tuple(names), (0, 1, 2, 3, 4))
    config = dualnet.preset("pose", layout="jhmdb_15", num_classes=21, num_frames=16, pose_stride=4, dim=32,
                            heads=2, mac_dim=8)
    torch.manual_seed(0)
    model = dualnet.MicroDualNet(config).eval()
    flipping = KeypointClipDataset(kps, clips, config, TrainParams(test_flip=True), train=False)
    plain = KeypointClipDataset(kps, clips, config, TrainParams(), train=False)
    item = flipping[0]
    boxes, kp = hflip_pose(item["boxes"].numpy(), item["keypoints"].numpy(), 0.0, K6, JHMDB)
    np.testing.assert_array_equal(item["flipped_keypoints"].numpy(), kp)
    np.testing.assert_array_equal(item["flipped_boxes"].numpy(), boxes)
    np.testing.assert_array_equal(item["flipped_visible"].numpy(), item["visible"].numpy()[:, flip_order(K6)])
    assert "flipped_keypoints" not in plain[0]
    loader = torch.utils.data.DataLoader(flipping, batch_size=2)
    both = predict(model, loader, torch.device("cpu"))["scores"]
    alone = predict(model, torch.utils.data.DataLoader(plain, batch_size=2), torch.device("cpu"))["scores"]
    with torch.no_grad():
        mirrored = torch.cat([model(keypoints=b["flipped_keypoints"], boxes=b["flipped_boxes"],
                                    visible=b["flipped_visible"]).logits for b in loader]).numpy()
    np.testing.assert_allclose(both, (alone + mirrored) / 2, atol=1e-5)
    assert np.abs(both - alone).max() > 1e-3  # the mirror image does change the scores


# parameters of the pose presets on SHREC'17's 22-joint hand (14 classes, hand entities) before depth existed
BEFORE_DEPTH = {("pose", "body"): 1965466, ("pose", "entity"): 1759642, ("pose_tiny", "body"): 140010,
                ("pose_tiny", "entity"): 88554}


def _hand_inputs(config, seed: int = 0, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints (B, T, 22, 4) = x, y, score, z (millimetres) and hand-entity boxes (B, T, K, 4)."""
    g = torch.Generator().manual_seed(seed)
    t, k = config.num_frames, len(get_entity_set("hand"))
    xy = torch.rand(batch, t, 22, 2, generator=g) * 100 + 200
    z = torch.rand(batch, t, 22, 1, generator=g) * 60 + 400
    centre = torch.rand(batch, t, k, 2, generator=g) * 100 + 200
    half = torch.rand(batch, t, k, 1, generator=g) * 20 + 10
    return torch.cat([xy, torch.ones(batch, t, 22, 1), z], -1), torch.cat([centre - half, centre + half], -1)


@pytest.mark.parametrize(("preset", "encoding"), sorted(BEFORE_DEPTH))
def test_depth_off_is_the_model_of_before_and_on_widens_only_the_pose_input(preset, encoding):
    """pose_depth=False: the parameters of before depth existed (counted then); pose_depth=True: the same model
    but for the first layer of each entity's MLP, wider by the z features (per point 2, with a body encoding 5, and
    2 + 2 per body joint of context)."""
    from dualnet.model import MicroDualNet

    common = dict(num_classes=14, layout="shrec17_22", entity_set="hand", pose_encoding=encoding)
    flat = MicroDualNet(dualnet.preset(preset, **common))
    deep = MicroDualNet(dualnet.preset(preset, **common, pose_depth=True))
    assert sum(p.numel() for p in flat.parameters()) == BEFORE_DEPTH[preset, encoding]
    enc = flat.pose
    points, body = enc.index.shape[1], len(enc.body)
    extra = points * 2 + (points * 3 + 2 + 2 * body if encoding != "entity" else 0)
    flat_shapes, deep_shapes = ({k: v.shape for k, v in m.state_dict().items()} for m in (flat, deep))
    assert flat_shapes.keys() == deep_shapes.keys()
    changed = {k for k in flat_shapes if flat_shapes[k] != deep_shapes[k]}
    assert changed == {f"pose.mlps.{k}.0.weight" for k in range(len(enc.mlps))}
    for k in range(len(enc.mlps)):
        assert deep.pose.mlps[k][0].in_features == enc.mlps[k][0].in_features + extra


def test_a_depth_model_trains_responds_to_z_alone_and_ignores_missing_z():
    """One training step runs with depth; changing only z changes the output (x, y, score the same); a missing z
    (NaN) gives finite features, and z is not read without pose_depth (a 4-channel input is refused)."""
    from dualnet.model import MicroDualNet

    config = dualnet.preset("pose_tiny", num_classes=14, layout="shrec17_22", entity_set="hand", pose_depth=True)
    torch.manual_seed(0)
    model = MicroDualNet(config)
    kp, boxes = _hand_inputs(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.pose.parameters()]
    out = model(keypoints=kp, boxes=boxes, labels=torch.tensor([0, 1]))
    loss, _ = model.loss(out, torch.tensor([0, 1]))
    loss.backward()
    assert model.pose.mlps[0][0].weight.grad[:, -1].abs().sum() > 0  # the z columns get gradient
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.pose.parameters(), strict=True))
    model.eval()
    with torch.no_grad():
        base = model(keypoints=kp, boxes=boxes).logits
        moved = kp.clone()
        moved[..., 3] += torch.linspace(0, 40, 22)  # fingers at other depths, nothing else changed
        assert not torch.allclose(model(keypoints=moved, boxes=boxes).logits, base, atol=1e-5)
        shifted = kp.clone()
        shifted[..., 3] += 250.0  # the whole hand further away: features are relative, motion unchanged
        torch.testing.assert_close(model(keypoints=shifted, boxes=boxes).logits, base, atol=1e-4, rtol=1e-4)
        holes = kp.clone()
        holes[0, 1, 3:9, 3] = float("nan")
        assert torch.isfinite(model(keypoints=holes, boxes=boxes).logits).all()
        feats = model.pose.depth_features(holes, boxes, model.pose.person_frame(holes, model.pose.body))
        assert torch.isfinite(feats).all()
    flat = MicroDualNet(config.override(pose_depth=False))
    with pytest.raises(ValueError, match=r"takes \(B, T, V, 3\)"):
        flat(keypoints=kp, boxes=boxes)
    with pytest.raises(ValueError, match=r"takes \(B, T, V, 4\)"):
        model(keypoints=kp[..., :3], boxes=boxes)
    with pytest.raises(ValueError, match="pose_depth reads z"):
        dualnet.preset("tiny", pose_depth=True)
