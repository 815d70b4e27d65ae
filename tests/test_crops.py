"""Cutting crops and global frames."""

from __future__ import annotations

import numpy as np
import pytest

from dualnet.entities import global_window, window_transform
from pipelines.data.crops import crop_boxes, cut_global, sample_indices


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
    window = global_window(np.full((1, 1, 3), np.nan), np.array([], int), 200, 100, "letterbox")
    image = cut_global(frame, window, 100)
    scale, dx, dy = window_transform(window, 100)
    assert window.tolist() == [0, -50, 200] and image.shape == (3, 100, 100) and (scale, dx, dy) == (0.5, 0, 25)
    assert image[:, :25].max() == 0 and image[:, 75:].max() == 0  # bands above and below
    y, x = 50 * scale + dy, 100 * scale + dx
    assert image[0, int(y), int(x)] > 200


def _person_at(x: float, y: float, frames: int = 5) -> np.ndarray:
    """(F, 3, 3) keypoints: three body joints around (x, y), seen with score 0.9."""
    kp = np.zeros((frames, 3, 3))
    kp[:, :, 0] = x + np.array([-40, 0, 40])
    kp[:, :, 1] = y + np.array([-100, 0, 100])
    kp[:, :, 2] = 0.9
    return kp


def test_person_view_is_a_short_side_square_centred_on_the_person():
    body = np.arange(3)
    assert global_window(_person_at(1500, 540), body, 1920, 1080).tolist() == [960 - 120, 0, 1080]  # kept inside
    assert global_window(_person_at(900, 500), body, 1920, 1080).tolist() == [360, 0, 1080]  # centred on x = 900
    assert global_window(_person_at(300, 900), body, 720, 1280).tolist() == [0, 540, 720]  # portrait: y moves
    kp = _person_at(900, 500, frames=7)
    kp[:3, :, :2] = np.nan  # unseen frames
    kp[3, :, 2] = 0.1  # below the score threshold: not counted
    kp[3, :, 0] += 700
    assert global_window(kp, body, 1920, 1080).tolist() == [360, 0, 1080]
    nobody = np.full((4, 3, 3), np.nan)
    assert global_window(nobody, body, 1920, 1080).tolist() == [420, 0, 1080]  # the frame's centre (TSM's)


def test_person_view_frame_holds_the_person_where_the_transform_says():
    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[400:600, 1400:1500] = 255  # the "person"
    window = global_window(_person_at(1450, 500), np.arange(3), 1920, 1080)
    image = cut_global(frame, window, 216)
    scale, dx, dy = window_transform(window, 216)
    assert image.min(axis=0).max() == 255 and (image[0] > 127).mean() == pytest.approx(
        (200 * 100) * scale ** 2 / 216 ** 2, rel=0.05)  # the whole white patch, and no black bars cut off
    x1, y1, x2, y2 = 1400 * scale + dx, 400 * scale + dy, 1500 * scale + dx, 600 * scale + dy
    assert image[0, int(y1) + 2:int(y2) - 2, int(x1) + 2:int(x2) - 2].min() == 255
    assert image[0, :, :int(x1) - 2].max() == 0 and image[0, :, int(x2) + 2:].max() == 0
