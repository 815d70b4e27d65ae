"""Cutting crops and letterboxed frames."""

from __future__ import annotations

import numpy as np

from pipelines.data.crops import crop_boxes, letterbox, sample_indices


def test_sample_indices_uniform_in_range_and_ordered():
    assert sample_indices(160, 16).tolist() == list(range(5, 160, 10))
    assert sample_indices(3, 8).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    idx = sample_indices(1, 16)
    assert (idx == 0).all()


def test_crop_pads_outside_the_frame_and_records_it():
    frame = np.full((100, 200, 3), 255, np.uint8)
    crops, padding = crop_boxes(frame, np.array([[-50, -50, 50, 50], [20, 20, 60, 60]], float), 20)
    assert crops.shape == (2, 3, 20, 20) and crops.dtype == np.uint8
    assert padding.tolist() == [[50, 50, 0, 0], [0, 0, 0, 0]]
    assert crops[0, :, :9, :9].max() == 0 and crops[0, :, 11:, 11:].min() == 255  # black outside, white inside
    assert crops[1].min() == 255


def test_letterbox_keeps_aspect_and_maps_points():
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[40:60, 90:110] = 255  # a white square in the middle
    image, scale, pad_x, pad_y = letterbox(frame, 100)
    assert image.shape == (3, 100, 100) and scale == 0.5 and (pad_x, pad_y) == (0, 25)
    assert image[:, :25].max() == 0 and image[:, 75:].max() == 0  # bands above and below
    y, x = 50 * scale + pad_y, 100 * scale + pad_x
    assert image[0, int(y), int(x)] > 200
