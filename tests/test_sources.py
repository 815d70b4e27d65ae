"""Resolving inputs: folders, globs, dataset list files, explicit paths, shards."""

from __future__ import annotations

import pytest

from conftest import MA52_VIDEOS, requires_shared
from pipelines.errors import InputError
from pipelines.io.sources import resolve_sources
from pipelines.store import Shard

pytestmark = requires_shared


def test_folder_glob_and_list_file_agree(tmp_path):
    by_folder = resolve_sources([str(MA52_VIDEOS)])
    assert len(by_folder) == 6 and by_folder[0].name == "A1_shaking_body__0030_01_0002"
    assert resolve_sources([str(MA52_VIDEOS / "*.mp4")]) == by_folder
    listing = tmp_path / "train_list_videos.txt"
    listing.write_text("".join(f"{s.name}.mp4 {i}\n" for i, s in enumerate(by_folder)))
    assert resolve_sources([str(listing)], video_root=MA52_VIDEOS) == by_folder


def test_explicit_missing_path_is_kept_to_fail_later(tmp_path):
    sources = resolve_sources([str(tmp_path / "gone.mp4")])
    assert [s.name for s in sources] == ["gone"]


def test_errors_name_the_input(tmp_path):
    with pytest.raises(InputError, match="no files match"):
        resolve_sources([str(tmp_path / "*.mp4")])
    with pytest.raises(InputError, match="holds no videos"):
        resolve_sources([str(tmp_path)])
    bad_list = tmp_path / "list.txt"
    bad_list.write_text("a.mp4 1\nreadme 2\n")
    with pytest.raises(InputError, match=r"list.txt:2: 'readme' is not a video file name"):
        resolve_sources([str(bad_list)])
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "clip.mp4").write_bytes(b"1")
    (tmp_path / "y" / "clip.mp4").write_bytes(b"2")
    with pytest.raises(InputError, match="same name 'clip'"):
        resolve_sources([str(tmp_path / "x"), str(tmp_path / "y")])


def test_shards_partition_the_items():
    everything = resolve_sources([str(MA52_VIDEOS)])
    parts = [resolve_sources([str(MA52_VIDEOS)], shard=Shard(i, 3)) for i in range(3)]
    assert sorted(s.name for p in parts for s in p) == [s.name for s in everything]
