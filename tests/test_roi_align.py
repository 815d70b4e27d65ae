"""ROIAlign (the paper's SEM) against a scalar transcription of Mask R-CNN's aligned ROIAlign, and on maps whose
pooled values are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dualnet.roi_align import roi_align


def _bilinear(plane: np.ndarray, y: float, x: float) -> float:
    """One sample as the reference CPU kernel takes it: zero beyond a pixel outside the map, the edge value within
    a pixel of it, else bilinear between the four neighbours."""
    h, w = plane.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= h - 1:
        y_low = y_high = h - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= w - 1:
        x_low = x_high = w - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * plane[y_low, x_low] + hy * lx * plane[y_low, x_high] + ly * hx * plane[y_high, x_low]
            + ly * lx * plane[y_high, x_high])


def reference_roi_align(plane: np.ndarray, box: np.ndarray, size: int, scale: float, ratio: int) -> np.ndarray:
    """(size, size) for one channel and one box, loop by loop: the box shifted by half a pixel (aligned), bins of
    (box side / size), `ratio` x `ratio` samples per bin at sub-bin centres, averaged."""
    x1, y1, x2, y2 = (float(v) * scale - 0.5 for v in box)
    bin_w, bin_h = (x2 - x1) / size, (y2 - y1) / size
    out = np.zeros((size, size))
    for py in range(size):
        for px in range(size):
            total = 0.0
            for iy in range(ratio):
                y = y1 + py * bin_h + (iy + 0.5) * bin_h / ratio
                for ix in range(ratio):
                    x = x1 + px * bin_w + (ix + 0.5) * bin_w / ratio
                    total += _bilinear(plane, y, x)
            out[py, px] = total / (ratio * ratio)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_scalar_reference_inside_at_and_beyond_the_edges(seed):
    rng = np.random.default_rng(seed)
    n, k, c, h, w, size, ratio, image = 2, 5, 3, 7, 9, 3, 2, 224
    maps = rng.normal(size=(n, c, h, w))
    centres = rng.uniform(-30, image + 30, (n, k, 2))  # some boxes hang off the frame, some lie outside it
    halves = rng.uniform(2, 60, (n, k, 2))
    boxes = np.concatenate([centres - halves, centres + halves], axis=-1)
    got = roi_align(torch.tensor(maps), torch.tensor(boxes), size, w / image, ratio).numpy()  # float64
    assert got.shape == (n, k, c, size, size)
    for i in range(n):
        for j in range(k):
            for ch in range(c):
                want = reference_roi_align(maps[i, ch], boxes[i, j], size, w / image, ratio)
                np.testing.assert_allclose(got[i, j, ch], want, atol=1e-9)


def test_a_linear_map_pools_to_each_bins_centre():
    """On a map whose value is the x coordinate (and another whose value is y), each bin's mean is its centre's
    coordinate, for boxes inside the map: where each entity sits is what ROIAlign keeps."""
    h = w = 14
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    maps = torch.stack([xs, ys])[None]  # (1, 2, H, W): value = pixel-centre coordinate
    box = torch.tensor([[[40.0, 64.0, 120.0, 96.0]]])  # image pixels; map = image / 16
    out = roi_align(maps, box, 4, 1 / 16, 2)[0, 0]  # (2, 4, 4)
    bin_x = 40 / 16 + (torch.arange(4, dtype=torch.float64) + 0.5) * (80 / 16) / 4 - 0.5
    bin_y = 64 / 16 + (torch.arange(4, dtype=torch.float64) + 0.5) * (32 / 16) / 4 - 0.5
    torch.testing.assert_close(out[0], bin_x.expand(4, 4), atol=1e-12, rtol=0)
    torch.testing.assert_close(out[1], bin_y[:, None].expand(4, 4), atol=1e-12, rtol=0)


def test_gradients_reach_exactly_the_pixels_under_the_box():
    maps = torch.zeros(1, 1, 8, 8, requires_grad=True)
    roi_align(maps, torch.tensor([[[8.0, 8.0, 24.0, 24.0]]]), 2, 1 / 4, 2).sum().backward()
    touched = (maps.grad[0, 0] != 0).nonzero().tolist()
    # the box is map [2, 6] less half a pixel, [1.5, 5.5]; 4 samples a side at 1.5 + (i + 0.5) -> 2, 3, 4, 5: each
    # sample falls on a pixel centre, so exactly those pixels (rows and columns 2..5) get a gradient
    assert {r for r, _ in touched} == {2, 3, 4, 5} and {c for _, c in touched} == {2, 3, 4, 5}
    assert math.isclose(float(maps.grad.sum()), 4.0)  # 2 x 2 bins, each a mean of weights summing to 1
