"""Loading cached keypoints as arrays and as a DataFrame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import zarr

from conftest import requires_shared, shortest_clip
from dualnet.layouts import MEDIAPIPE_HOLISTIC
from pipelines.errors import StoreError
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.params import ExtractParams

pytestmark = requires_shared


def test_dataframe_columns_and_dtypes_for_a_real_clip(ma52_store):
    kps = KeypointSet(ma52_store)
    name = shortest_clip().stem
    df = kps.dataframe(name)
    assert list(df.columns) == ["video", "frame", "keypoint", "x", "y", "score", "detected"]
    assert isinstance(df["video"].dtype, pd.CategoricalDtype)
    assert isinstance(df["keypoint"].dtype, pd.CategoricalDtype)
    assert list(df["keypoint"].cat.categories) == list(MEDIAPIPE_HOLISTIC.keypoint_names)
    assert df["frame"].dtype == np.int32 and df["detected"].dtype == bool
    assert all(df[c].dtype == np.float32 for c in ("x", "y", "score"))
    assert len(df) == 50 * 543

    clip = kps.load(name)
    row = df[(df.frame == 7) & (df.keypoint == "nose")].iloc[0]
    np.testing.assert_allclose([row.x, row.y, row.score], clip.keypoints[7, 0], rtol=1e-6)
    assert 0 < row.x < 1080 and 0 < row.y < 1296

    both = kps.dataframe()
    assert set(both["video"].cat.categories) == set(kps.names()) and len(both) == sum(
        len(kps.load(n).timestamps) * 543 for n in kps.names())


def test_loading_what_is_not_there(ma52_store):
    with pytest.raises(StoreError, match="no keypoints for video 'nope'"):
        KeypointSet(ma52_store).load("nope")
    with pytest.raises(StoreError, match="no extract output"):
        KeypointSet(ma52_store, ExtractParams(model_complexity=2))


def test_batch_writer_writes_what_the_single_writer_writes(ma52_store, tmp_path):
    from dualnet.layouts import get_layout
    from pipelines.formats.keypoint_items import write_keypoint_item, write_keypoint_items

    source = KeypointSet(ma52_store)
    items = []
    for i, name in enumerate(source.names()):
        clip = source.load(name)
        items.append({"group_path": tmp_path / ("batch" if i % 2 else "single") / name, "keypoints": clip.keypoints,
                      "detected": clip.detected, "timestamps": clip.timestamps, "layout": get_layout(clip.layout),
                      "fps": clip.fps, "width": clip.width, "height": clip.height, "source_name": f"{name}.mp4",
                      "source_path": f"/videos/{name}.mp4", "fingerprint": f"fp-{name}"})
    write_keypoint_items(items, concurrency=4)
    for item in items:
        twin = item["group_path"].parent.parent / "twin" / item["group_path"].name
        write_keypoint_item(twin, **{k: v for k, v in item.items() if k != "group_path"})
        a, b = zarr.open_group(item["group_path"], mode="r"), zarr.open_group(twin, mode="r")
        assert dict(a.attrs) == dict(b.attrs)
        for array in ("keypoints", "detected", "timestamps"):
            np.testing.assert_array_equal(a[array][:], b[array][:])
            assert a[array].chunks == b[array].chunks and a[array].dtype == b[array].dtype


def test_dataframe_of_3d_keypoints_has_z_after_y(tmp_path):
    """A 3D import's table has ``z`` (float32, after ``y``) equal to each item's depth, row for row."""
    from helpers import shrec_folder
    from pipelines.formats.params import ImportParams
    from pipelines.stages.import_poses import run_import

    shrec_folder(tmp_path / "shrec")
    params = ImportParams("shrec17")
    run_import(tmp_path / "shrec", params, tmp_path / "store")
    kps = KeypointSet(tmp_path / "store", params)
    name = kps.names()[3]
    df = kps.dataframe(name)
    assert list(df.columns) == ["video", "frame", "keypoint", "x", "y", "z", "score", "detected"]
    assert df["z"].dtype == np.float32
    clip = kps.load(name)
    np.testing.assert_array_equal(df["z"].to_numpy(), clip.depth.reshape(-1))
    row = df[(df.frame == 5) & (df.keypoint == df["keypoint"].cat.categories[9])].iloc[0]
    assert (row.x, row.y, row.z) == tuple(np.float32([*clip.keypoints[5, 9, :2], clip.depth[5, 9]]))
