"""The feature store: locks, atomic commits, failure records, status and gc."""

from __future__ import annotations

import json
import os

import pytest

import pipelines.formats  # noqa: F401 - registers how each output format counts finished work (status)
from pipelines.errors import StoreError, StoreLockedError
from pipelines.store import Shard, StageSpec, Store, safe_name
from pipelines.store.stage_run import manifest_key


def test_exclusive_lock_names_its_holder_and_is_released(tmp_path):
    store = Store(tmp_path)
    with store.lock(command="dualnet extract videos/"):
        with pytest.raises(StoreLockedError) as err:
            store.lock().acquire()
        assert f"pid {os.getpid()}" in str(err.value) and "dualnet extract videos/" in str(err.value)
        assert str(tmp_path) in str(err.value)
    with store.lock():
        pass


def test_shards_write_side_by_side_but_not_beside_an_unsharded_writer(tmp_path):
    store = Store(tmp_path)
    with store.lock(Shard(0, 2)), store.lock(Shard(1, 2)):
        with pytest.raises(StoreLockedError, match="shard|pid"):
            store.lock(Shard(0, 2)).acquire()
        with pytest.raises(StoreLockedError):
            store.lock().acquire()
    with store.lock():
        with pytest.raises(StoreLockedError):
            store.lock(Shard(1, 2)).acquire()


def test_shard_parse_and_partition():
    assert Shard.parse("1/4") == Shard(1, 4)
    for bad in ("4/4", "-1/2", "a/b", "3", "0/0"):
        with pytest.raises(ValueError, match="shard"):
            Shard.parse(bad)
    names = [f"{i:04d}_01_{i % 7:04d}" for i in range(400)]
    parts = [[n for n in names if Shard(i, 4).owns(n)] for i in range(4)]
    assert sorted(sum(parts, [])) == sorted(names)  # disjoint and complete
    assert all(60 < len(p) < 140 for p in parts)  # roughly even


def test_commit_replaces_atomically_and_clears_failure(tmp_path):
    out = Store(tmp_path).stage("demo", "k1")
    tmp = out.prepare({"stage": "demo", "params": {}}, Shard())
    out.record_failure("clip", "/videos/clip.mp4", "/videos/clip.mp4: empty file (0 bytes)")
    assert out.failures()["clip"]["error"].endswith("empty file (0 bytes)")
    for version in ("one", "two"):
        item = tmp / f"clip.{version}"
        item.mkdir()
        (item / "data.txt").write_text(version)
        out.commit(item, "clip")
    assert (out.item_path("clip") / "data.txt").read_text() == "two"
    assert out.failures() == {} and out.item_names() == ["clip"]
    assert list(tmp.iterdir()) == []


def test_status_counts_and_gc_keeps_what_refs_reach(tmp_path):
    store = Store(tmp_path)
    for key in ("old", "new"):
        out = store.stage("extract", key)
        tmp = out.prepare({"stage": "extract", "params": {"dtype": key}, "inputs": {}}, Shard())
        out.record_run(Shard(), ["a", "b", "c"])
        (tmp / "a").mkdir()
        (tmp / "a" / "x.bin").write_bytes(b"0" * 100)
        out.commit(tmp / "a", "a")
        out.record_failure("b", "b.mp4", "b.mp4: file not found")
    downstream = store.stage("tubes", "t1")
    downstream.prepare({"stage": "tubes", "params": {}, "inputs": {"extract": "old"}}, Shard())
    store.set_ref("extract", "new", {})
    store.set_ref("tubes", "t1", {})
    rows = {(r.stage, r.key): r for r in store.status()}
    assert (rows[("extract", "new")].done, rows[("extract", "new")].failed, rows[("extract", "new")].total) == (1, 1, 3)
    assert rows[("extract", "new")].bytes == 100 and rows[("extract", "new")].current
    assert not rows[("extract", "old")].current
    assert store.reachable() == {("extract", "new"), ("tubes", "t1"), ("extract", "old")}  # old feeds tubes
    store.set_ref("tubes", "other", {})
    assert {p.name for p in store.gc()} >= {"old", "t1"}
    assert {(r.stage, r.key) for r in store.status()} == {("extract", "new")}


def test_read_only_store_gives_a_clear_error(tmp_path):
    store = Store(tmp_path / "ro")
    store.root.mkdir()
    os.chmod(store.root, 0o555)
    try:
        if os.access(store.root, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(StoreError, match="not writable"):
            store.lock().acquire()
    finally:
        os.chmod(store.root, 0o755)


def test_missing_output_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="no extract output with key abc"):
        Store(tmp_path).stage("extract", "abc").manifest()


def test_manifest_is_plain_json_without_absolute_paths(tmp_path):
    out = Store(tmp_path).stage("extract", "k")
    out.prepare({"stage": "extract", "params": {"dtype": "float32"}, "inputs": {}}, Shard())
    text = (out.path / "stage.json").read_text()
    assert json.loads(text)["params"] == {"dtype": "float32"} and str(tmp_path) not in text


def test_safe_name():
    assert safe_name("0019_02_0078") == "0019_02_0078"
    odd = safe_name("B1 nodding/clip:1")
    assert odd.startswith("B1_nodding_clip_1-") and len(odd) == len("B1_nodding_clip_1-") + 8
    assert safe_name("..hidden").startswith("hidden-") and safe_name("").startswith("_-")
    # names that clean alike stay distinct; a safe name maps to itself
    names = ["clip é 1", "clip ü 1", "clip_1", "clip 1", "..hidden", "hidden", ".hidden"]
    assert len({safe_name(n) for n in names}) == len(names)
    assert all(safe_name(safe_name(n)) == safe_name(n) for n in names)


def test_a_stage_run_writes_the_manifest_its_key_hashes(tmp_path):
    """Issue 16: one run context for every stage. The key is the hash of the manifest less its `recorded` section,
    the ref and the run record are written, and the shard's temporary folder is gone after a normal exit."""
    store = Store(tmp_path)
    spec = StageSpec("tubes", 7, {"frames": 16}, inputs={"extract": "abc"}, extra={"namespace": "x"},
                     recorded={"pack_size": 4}, output_format="tube-packs")
    with store.run(spec) as run:
        assert run.tmp.is_dir() and run.output.key == spec.key
        run.record_request(["a", "b"])
    manifest = run.output.manifest()
    assert manifest_key(manifest) == spec.key
    assert manifest["recorded"] == {"format": "tube-packs", "pack_size": 4} and manifest["namespace"] == "x"
    assert store.refs() == {"tubes": spec.key} and not (run.output.path / "tmp").exists()
    (row,) = store.status()
    assert (row.done, row.total) == (0, 2)
    # a recorded field changes nothing keyed; a keyed one changes the key
    assert StageSpec("tubes", 7, {"frames": 16}, inputs={"extract": "abc"}, extra={"namespace": "x"},
                     recorded={"pack_size": 8}).key == spec.key
    assert StageSpec("tubes", 7, {"frames": 8}, inputs={"extract": "abc"}, extra={"namespace": "x"}).key != spec.key


def test_an_unknown_output_format_is_one_line(tmp_path):
    store = Store(tmp_path)
    with store.run(StageSpec("extract", 1, {}, output_format="from-the-future")):
        pass
    with pytest.raises(StoreError, match="output format 'from-the-future' is unknown"):
        store.status()
