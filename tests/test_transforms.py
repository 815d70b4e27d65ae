"""Batched crop and colour jitter (dualnet/transforms.py): what per-clip code would give, on any batch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dualnet.transforms import colour_jitter, draw_crop_windows, jitter_crops


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
