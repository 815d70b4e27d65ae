"""Batched crop and colour jitter (dualnet/transforms.py): what per-clip code would give, on any batch; the pose flip
with depth."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dualnet.entities import get_entity_set
from dualnet.layouts import get_layout
from dualnet.transforms import colour_jitter, draw_crop_windows, hflip_pose, jitter_crops, rotate_pose


def _reference_crop(tube: torch.Tensor, window) -> torch.Tensor:
    """One entity's tube (T, C, S, S) zoomed into its window the plain way: cut, then resize."""
    x0, y0, side = (int(v) for v in window)
    s = tube.shape[-1]
    cut = tube[:, :, y0:y0 + side, x0:x0 + side].float()
    return F.interpolate(cut, size=(s, s), mode="bilinear", align_corners=False).round().clamp(0, 255).to(torch.uint8)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(8, 40), st.floats(0.0, 0.9),
       st.integers(0, 2**32 - 1))
def test_batched_crop_jitter_equals_cut_and_resize(b, t, k, s, amount, seed):
    rng = np.random.default_rng(seed)
    tubes = torch.from_numpy(rng.integers(0, 256, (b, t, k, 3, s, s), dtype=np.uint8))
    windows = np.stack([draw_crop_windows(k, s, amount, rng) for _ in range(b)])  # (B, K, 3)
    assert (windows[..., 2] >= max(1, round(s * (1 - amount))) - 1).all()
    assert (windows[..., :2] >= 0).all() and (windows[..., :2] + windows[..., 2:] <= s).all()
    out = jitter_crops(tubes, torch.from_numpy(windows))
    assert out.shape == tubes.shape and out.dtype == torch.uint8
    for i in range(b):
        for e in range(k):
            want = _reference_crop(tubes[i, :, e], windows[i, e])
            # equal up to float rounding at exact .5 values (one grey level, at a few pixels)
            diff = (out[i, :, e].int() - want.int()).abs()
            assert diff.max() <= 1 and diff.float().mean() < 0.05


def test_whole_window_and_unit_factors_change_nothing():
    rng = np.random.default_rng(0)
    tubes = torch.from_numpy(rng.integers(0, 256, (2, 3, 6, 3, 16, 16), dtype=np.uint8))
    whole = torch.from_numpy(np.stack([draw_crop_windows(6, 16, 0.0, rng) for _ in range(2)]))
    assert torch.equal(jitter_crops(tubes, whole), tubes)
    ones = torch.ones(2)
    assert torch.equal(colour_jitter(tubes, ones, ones), tubes)


def test_colour_jitter_acts_per_clip_and_per_image():
    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.integers(0, 256, (3, 4, 3, 8, 8), dtype=np.uint8))  # (B, T, C, H, W)
    brightness, contrast = torch.tensor([0.8, 1.0, 1.2]), torch.tensor([1.1, 0.9, 1.0])
    out = colour_jitter(images, brightness, contrast)
    for i in range(3):
        alone = colour_jitter(images[i:i + 1], brightness[i:i + 1], contrast[i:i + 1])
        assert torch.equal(out[i:i + 1], alone)  # a clip's result does not depend on its batch
        x = images[i].double() * float(brightness[i])
        mean = x.mean(dim=(-3, -2, -1), keepdim=True)  # each frame about its own mean
        want = ((x - mean) * float(contrast[i]) + mean).round().clamp(0, 255)
        assert (out[i].double() - want).abs().max() <= 1
    dark = colour_jitter(torch.full((1, 3, 4, 4), 200, dtype=torch.uint8), torch.tensor([2.0]), torch.tensor([1.0]))
    assert dark.max() == 255  # clamped, not wrapped


def test_the_pose_flip_mirrors_x_and_carries_depth_with_its_joint():
    """Keypoints (F, V, 4) = x, y, score, z: a flip mirrors x, keeps every z value (a mirror in x does not move a
    joint nearer the camera) and swaps left and right joints, z included; flipping twice gives the input back."""
    layout, entities = get_layout("coco_17"), get_entity_set("k6")
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(0, 640, (5, 17, 2)), np.ones((5, 17, 1)), rng.uniform(300, 900, (5, 17, 1))],
                        axis=-1).astype(np.float32)
    kp[2, 9, 3] = np.nan  # a joint without z
    centre, half = rng.uniform(100, 500, (5, len(entities), 2)), rng.uniform(10, 50, (5, len(entities), 1))
    boxes = np.concatenate([centre - half, centre + half], -1).astype(np.float32)
    flipped_boxes, flipped = hflip_pose(boxes, kp, 0.0, entities, layout)  # about x = 0, as the pose dataset does
    left, right = layout.keypoint_names.index("left_wrist"), layout.keypoint_names.index("right_wrist")
    assert {left, right} in [set(p) for p in layout.flip_pairs]
    np.testing.assert_array_equal(flipped[:, left, 3], kp[:, right, 3])  # the wrists' z swap with them
    np.testing.assert_array_equal(flipped[:, right, 3], kp[:, left, 3])
    np.testing.assert_array_equal(flipped[:, left, 0], -kp[:, right, 0])  # x mirrored
    np.testing.assert_array_equal(flipped[:, left, 1:3], kp[:, right, 1:3])  # y, score as they were
    nose = layout.keypoint_names.index("nose")
    np.testing.assert_array_equal(flipped[:, nose, 3], kp[:, nose, 3])  # a centre joint keeps its z
    np.testing.assert_array_equal(np.sort(flipped[..., 3], axis=1), np.sort(kp[..., 3], axis=1))  # no z changed
    np.testing.assert_array_equal(hflip_pose(flipped_boxes, flipped, 0.0, entities, layout)[1], kp)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(2, 9), st.floats(-180, 180), st.integers(0, 2**16))
def test_rotating_a_clip_keeps_its_shape_and_turns_back(frames, points, degrees, seed):
    """Distances between points and from points to box centres are kept, the turn is `degrees` on the page (y down),
    missing points stay missing, score and z ride along, and the opposite angle gives the clip back."""
    rng = np.random.default_rng(seed)
    kp = np.concatenate([rng.uniform(0, 500, (frames, points, 2)), rng.uniform(0, 1, (frames, points, 1)),
                         rng.uniform(-50, 50, (frames, points, 1))], axis=-1).astype(np.float32)  # x, y, score, z
    kp[0, 0, :2] = np.nan
    lo = rng.uniform(0, 400, (frames, 3, 2))
    boxes = np.concatenate([lo, lo + rng.uniform(5, 90, (frames, 3, 1))], axis=-1).astype(np.float32)
    turned_boxes, turned = rotate_pose(boxes, kp, degrees)
    assert np.isnan(turned[0, 0, :2]).all() and np.array_equal(turned[..., 2:], kp[..., 2:])
    seen = np.isfinite(kp[..., 0])
    a, b = kp[seen][:, :2], turned[seen][:, :2]
    assert np.allclose(np.linalg.norm(a[:, None] - a[None], axis=-1), np.linalg.norm(b[:, None] - b[None], axis=-1),
                       atol=1e-2)
    assert np.allclose(turned_boxes[..., 2:] - turned_boxes[..., :2], boxes[..., 2:] - boxes[..., :2], atol=1e-3)
    if len(a) >= 2:  # the direction from one point to another turns by the angle, counter-clockwise on the page
        before, after = a[1] - a[0], b[1] - b[0]
        turn = np.degrees(np.arctan2(-after[1], after[0]) - np.arctan2(-before[1], before[0]))
        assert abs((turn - degrees + 180) % 360 - 180) < 0.05
    back_boxes, back = rotate_pose(turned_boxes, turned, -degrees)
    assert np.allclose(back[seen], kp[seen], atol=2e-2) and np.allclose(back_boxes, boxes, atol=2e-2)


def test_a_clip_without_a_detected_point_is_not_rotated():
    kp = np.full((3, 4, 3), np.nan, np.float32)
    boxes = np.full((3, 2, 4), np.nan, np.float32)
    out_boxes, out = rotate_pose(boxes, kp, 30.0)
    assert out is kp and out_boxes is boxes
