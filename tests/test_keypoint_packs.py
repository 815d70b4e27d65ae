"""Keypoint packs: compaction keeps every item bit for bit, the right copy wins, and a failure anywhere leaves a
valid store."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from conftest import requires_shared
from dualnet.layouts import COCO_17, get_layout
from helpers import assert_same_keypoints
from pipelines.errors import StoreError
from pipelines.formats import keypoint_packs
from pipelines.formats.keypoint_items import write_keypoint_item
from pipelines.formats.keypoint_packs import KeypointIndex, PackFrames, compact
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.tube_packs import count_files
from pipelines.store import Shard, Store


def _output(root, key="packtest"):
    store = Store(root)
    output = store.stage("import", key)
    tmp = output.prepare({"stage": "import", "version": 1, "params": {}, "inputs": {}}, Shard())
    return store, output, tmp


def _put(output, tmp, name, frames, seed, fingerprint=None, dtype="float32"):
    """Write and commit one loose item of random COCO-17 keypoints; returns its keypoints."""
    rng = np.random.default_rng(seed)
    kp = rng.uniform(0, 640, (frames, COCO_17.num_keypoints, 3)).astype(dtype)
    kp[rng.random(frames) < 0.2] = np.nan  # frames where nobody was found
    detected = ~np.isnan(kp[:, 0, 0])
    write_keypoint_item(tmp / f"{name}.w", kp, detected, np.arange(frames) / 25.0, layout=COCO_17, fps=25.0,
                        width=640, height=480, source_name=f"{name}.json", source_path=f"/data/{name}.json",
                        fingerprint=fingerprint or f"fp-{name}-{seed}", dtype=dtype, extra={"label": seed % 7})
    output.commit(tmp / f"{name}.w", name)
    return kp


def _snapshot(kps: KeypointSet) -> dict:
    return {n: (kps.load(n), kps.attributes(n)) for n in kps.names()}


def _assert_snapshot(kps: KeypointSet, snap: dict) -> None:
    assert kps.names() == sorted(snap)
    for name, (clip, attrs) in snap.items():
        got = kps.load(name)
        for arr in ("keypoints", "detected", "timestamps"):
            np.testing.assert_array_equal(getattr(got, arr), getattr(clip, arr), err_msg=f"{name}/{arr}")
            assert getattr(got, arr).dtype == getattr(clip, arr).dtype
        assert kps.attributes(name) == attrs, name


def test_compaction_keeps_every_item_bit_for_bit_in_few_files(tmp_path):
    store, output, tmp = _output(tmp_path)
    lengths = [1, 37, 64, 65, 90, 128, 3] * 10  # chunk edges, one-frame clips
    for i, t in enumerate(lengths):
        _put(output, tmp, f"clip{i:03d}", t, seed=i, dtype="float16" if i == 5 else "float32")
    kps = KeypointSet(store, key=output.key)
    before, files_before = _snapshot(kps), count_files(output.items_dir)
    assert files_before > 6 * len(lengths)  # 7 a group (less chunks zarr skips as all fill value)

    written = compact(output, tmp, pack_items=32)
    kps.refresh()
    _assert_snapshot(kps, before)
    index = KeypointIndex(output)
    assert not index.loose and len(index.packs) == written
    assert written == 4  # in name order: clip000-004, clip005 (float16: a pack of its own), 2 x 32
    assert count_files(output.items_dir) == 7 * written
    # frame ranges of a packed item read only that item
    clip = kps.load("clip004", 10, 20)
    np.testing.assert_array_equal(clip.keypoints, before["clip004"][0].keypoints[10:20])
    with pytest.raises(StoreError, match=r"frames \[80, 100\) are outside its 90 frames"):
        kps.load("clip004", 80, 100)
    # status counts packed items
    summary = output.summary()
    assert summary.done == len(lengths)
    # nothing loose, nothing to do: a second compaction writes nothing
    stamp = output.items_dir.stat().st_mtime_ns
    assert compact(output, tmp, pack_items=32) == 0
    assert output.items_dir.stat().st_mtime_ns == stamp


def test_the_counting_copy_loose_over_packed_newer_pack_over_older(tmp_path):
    store, output, tmp = _output(tmp_path)
    for i in range(6):
        _put(output, tmp, f"c{i}", 40 + i, seed=i)
    compact(output, tmp)
    first_pack, = KeypointIndex(output).packs
    # the source of c2 changed: a new loose item overrides the packed copy at once
    new_c2 = _put(output, tmp, "c2", 55, seed=100, fingerprint="fp-new")
    kps = KeypointSet(store, key=output.key)
    np.testing.assert_array_equal(kps.load("c2").keypoints, new_c2)
    assert KeypointIndex(output).fingerprint("c2") == "fp-new"
    snap = _snapshot(kps)
    # packing it again: a newer pack holds c2 and, being small, the old pack's live items with it; the old pack
    # is retired
    assert compact(output, tmp) == 1
    index = KeypointIndex(output)
    assert first_pack not in index.packs and len(index.packs) == 1 and not index.loose
    kps.refresh()
    _assert_snapshot(kps, snap)


def test_long_items_stay_loose_and_sharded_writers_pack_only_their_own(tmp_path, monkeypatch):
    store, output, tmp = _output(tmp_path)
    _put(output, tmp, "long", 300, seed=1)
    for i in range(8):
        _put(output, tmp, f"s{i}", 30, seed=10 + i)
    shard = Shard(0, 2)
    compact(output, tmp, owns=shard.owns, long_frames=256)
    index = KeypointIndex(output)
    mine = {f"s{i}" for i in range(8) if shard.owns(f"s{i}")}
    assert 0 < len(mine) < 8
    assert set(index.packed) == mine
    assert index.loose == {"long"} | ({f"s{i}" for i in range(8)} - mine)


def test_a_failure_at_any_step_of_a_compaction_leaves_the_same_data(tmp_path, monkeypatch):
    store, output, tmp = _output(tmp_path)
    for i in range(10):
        _put(output, tmp, f"c{i}", 20 + 3 * i, seed=i)
    kps = KeypointSet(store, key=output.key)
    snap = _snapshot(kps)

    # 1. the pack cannot be written (a full disk): nothing moves, the half pack is gone
    def no_space(self, path):
        (path / "keypoints").mkdir(parents=True)
        (path / "keypoints" / "partial").write_bytes(b"x" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keypoint_packs.KeypointPackBuilder, "write", no_space)
    with pytest.raises(StoreError, match="cannot write keypoint pack .*No space left on device"):
        compact(output, tmp)
    monkeypatch.undo()
    assert not list(tmp.iterdir())
    kps.refresh()
    _assert_snapshot(kps, snap)

    # 2. killed between committing the pack and removing the loose copies: both exist, both read the same
    calls = []

    def fail_after_three(self, name, tmp_dir):
        calls.append(name)
        if len(calls) > 3:
            raise OSError(5, "Input/output error")
        return original(self, name, tmp_dir)

    original = output.remove_item.__func__
    monkeypatch.setattr(type(output), "remove_item", fail_after_three)
    with pytest.raises(StoreError):
        compact(output, tmp)
    monkeypatch.undo()
    index = KeypointIndex(output)
    assert len(index.packs) == 1 and len(index.loose) == 7  # three moved away, seven duplicates left
    kps.refresh()
    _assert_snapshot(kps, snap)

    # 3. the next compaction cleans up: one pack, nothing loose, same data
    compact(output, tmp)
    index = KeypointIndex(output)
    assert len(index.packs) == 1 and not index.loose
    kps.refresh()
    _assert_snapshot(kps, snap)


def test_an_unreadable_pack_counts_as_missing_items_not_a_crash(tmp_path):
    store, output, tmp = _output(tmp_path)
    for i in range(3):
        _put(output, tmp, f"c{i}", 30, seed=i)
    compact(output, tmp)
    pack, = KeypointIndex(output).packs
    (output.items_dir / pack / "zarr.json").write_text("{ torn")
    kps = KeypointSet(store, key=output.key)
    assert kps.names() == []
    with pytest.raises(StoreError, match="no keypoints for video 'c1'"):
        kps.load("c1")


@requires_shared
def test_extract_packs_its_items_and_reads_equal_the_loose_items(ma52_store, tmp_path):
    """The real extraction is packed at the end of its run; a loose copy of every item reads the same."""
    packed = KeypointSet(ma52_store)
    index = packed.index
    assert len(index.packs) == 1 and not index.loose and len(index) == 6
    store, output, tmp = _output(tmp_path)
    for name in packed.names():
        clip, attrs = packed.load(name), packed.attributes(name)
        extra = {k: v for k, v in attrs.items() if k not in ("layout", "keypoint_names", "fps", "width", "height",
                                                            "num_frames", "source_name", "source_path",
                                                            "source_fingerprint", "coordinates")}
        write_keypoint_item(tmp / name, clip.keypoints, clip.detected, clip.timestamps,
                            layout=get_layout(clip.layout), fps=clip.fps, width=clip.width, height=clip.height,
                            source_name=attrs["source_name"], source_path=attrs["source_path"],
                            fingerprint=attrs["source_fingerprint"], coordinates=attrs["coordinates"], extra=extra)
        output.commit(tmp / name, name)
    loose = KeypointSet(store, key=output.key)
    assert loose.index.loose == set(packed.names())
    assert_same_keypoints(loose, packed)


def test_pack_writer_supersedes_loose_and_older_packed_copies(tmp_path):
    from pipelines.formats.keypoint_items import item_attrs
    from pipelines.formats.keypoint_packs import PackWriter

    store, output, tmp = _output(tmp_path)
    _put(output, tmp, "old_loose", 30, seed=1)  # as a store from before packs would hold it

    def write(names, seed, pack_items=256):
        writer = PackWriter(output, tmp, pack_items=pack_items)
        want = {}
        for i, name in enumerate(names):
            rng = np.random.default_rng([seed, i])
            kp = rng.uniform(0, 100, (20 + i, 17, 3)).astype(np.float32)
            attrs = item_attrs(COCO_17, 25.0, 640, 480, f"{name}.pkl", f"/data/{name}.pkl", f"fp{seed}", "px", None)
            writer.add(name, attrs, kp, np.ones(len(kp), bool), np.arange(len(kp)) / 25.0)
            want[name] = kp
        writer.finish()
        return want, writer.packs

    first, packs = write(["a", "b", "c", "old_loose"], seed=1, pack_items=2)
    assert packs == 2
    index = KeypointIndex(output)
    assert not index.loose and len(index.packs) == 2  # the loose copy was replaced, not left to win
    second, _ = write(["a", "b"], seed=2)  # a changed source: both items of the first pack are written again
    index = KeypointIndex(output)
    assert len(index.packs) == 2  # the first pack, now wholly superseded, was removed
    kps = KeypointSet(store, key=output.key)
    for name, kp in {**first, **second}.items():
        np.testing.assert_array_equal(kps.load(name).keypoints, kp)
    assert kps.attributes("a")["source_fingerprint"] == "fp2" and kps.attributes("c")["source_fingerprint"] == "fp1"


@pytest.mark.parametrize("paused", [0, 1])
def test_two_shards_compacting_side_by_side_lose_nothing_wherever_one_pauses(tmp_path, monkeypatch, paused):
    """Issue 18: the two shards of one run commit and compact items in one output at once. Deterministic
    interleaving, no timing: one shard's compaction pauses at each of its kill points in turn (pack written, pack
    committed, each loose copy moved away) while the other shard commits its items and compacts them; then the
    first goes on. Every item is then in exactly one pack, with its data. (A shard once took the other's pack,
    committed but with its loose copies not yet removed, for wholly superseded and removed it; those items were
    lost when their loose copies went.)"""
    import pipelines.store

    names = [f"s{i}" for i in range(6)]
    first, second = Shard(paused, 2), Shard(1 - paused, 2)
    assert 0 < sum(map(first.owns, names)) < len(names)
    hooked_modules = (keypoint_packs, pipelines.store)

    def interleaved(root, pause_at: int) -> tuple[list[str], dict, KeypointIndex]:
        store, output, _ = _output(root)
        tmps = {shard: output.prepare({}, shard) for shard in (first, second)}  # stage.json is already written
        data = {n: _put(output, tmps[first], n, 20 + i, seed=i) for i, n in enumerate(names) if first.owns(n)}
        points: list[str] = []

        def point(name: str) -> None:
            points.append(name)
            if len(points) == pause_at:  # the other shard extracts and compacts its items, start to end
                for i, n in enumerate(names):
                    if second.owns(n):
                        data[n] = _put(output, tmps[second], n, 20 + i, seed=i)
                compact(output, tmps[second], owns=second.owns)

        for module in hooked_modules:
            monkeypatch.setattr(module, "kill_point", point)
        compact(output, tmps[first], owns=first.owns)
        monkeypatch.undo()
        return points, data, KeypointIndex(output)

    alone, _, _ = interleaved(tmp_path / "trace", pause_at=0)  # the paused shard's kill points, when not paused
    assert alone == ["pack.written", "pack.committed"] + ["remove.moved"] * sum(map(first.owns, names))
    for pause_at in range(1, len(alone) + 1):
        root = tmp_path / f"paused-at-{pause_at}"
        _, data, index = interleaved(root, pause_at)
        held = [n for pack in index.packs.values() for n in pack]
        assert sorted(held) == names and not index.loose, (alone[pause_at - 1], index.packs, index.loose)
        kps = KeypointSet(Store(root), key="packtest")
        for name, kp in data.items():
            np.testing.assert_array_equal(kps.load(name).keypoints, kp, err_msg=f"{name} ({alone[pause_at - 1]})")


def test_windows_read_together_equal_each_window_read_alone(tmp_path):
    """`keypoint_windows` (one read per run of neighbouring windows in a pack) gives each window exactly as a read of
    it alone does, in the order asked, for whole items, parts, overlaps, repeats, items far apart in two packs and
    a loose item; a flipped bit in a merged read is named by the one item whose chunk holds it."""
    store, output, tmp = _output(tmp_path)
    lengths = [37, 64, 65, 90, 3, 128, 1, 40, 200, 33] * 2
    for i, t in enumerate(lengths):
        _put(output, tmp, f"c{i:02d}", t, seed=i, dtype="float16" if i == 4 else "float32")
    compact(output, tmp, pack_items=12)
    _put(output, tmp, "loose", 50, seed=99)
    kps = KeypointSet(store, key=output.key)
    assert len(kps.index.packs) == 4 and kps.index.loose == {"loose"}  # c04 (float16) in a pack of its own
    assert all(isinstance(kps._pack_frames(n), PackFrames) for n in ("c00", "c04", "c19"))  # read directly
    other = zarr.create_array(tmp_path / "other", shape=(64, 17, 3), chunks=(32, 17, 3), dtype="float32")
    assert PackFrames.open(tmp_path / "other") is None and other.shape == (64, 17, 3)  # any other layout: zarr
    spans = [(f"c{i:02d}", 0, t) for i, t in enumerate(lengths)][::-1]  # every item whole, last first
    spans += [("c03", 10, 80), ("c03", 0, 20), ("c03", 10, 80), ("c08", 150, 200), ("c08", 0, 1), ("loose", 5, 45),
              ("c00", 36, 37), ("c19", 0, 33)]
    got = kps.keypoint_windows(spans)
    for (name, start, end), window in zip(spans, got, strict=True):
        alone = kps.load(name, start, end).keypoints
        assert window.dtype == alone.dtype and window.tobytes() == alone.tobytes(), (name, start, end)
    with pytest.raises(StoreError, match=r"frames \[30, 38\) are outside its 37 frames"):
        kps.keypoint_windows([("c01", 0, 64), ("c00", 30, 38)])

    pack = kps.index.locate("c00").pack
    shard = output.items_dir / pack / "keypoints" / "c" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x40  # one flipped bit inside one item's chunk
    shard.write_bytes(bytes(data))
    kps.refresh()
    in_pack = [n for n in kps.names() if n != "loose" and kps.index.locate(n).pack == pack]
    damaged = []
    for name in in_pack:
        try:
            kps.load(name)
        except StoreError:
            damaged.append(name)
    assert len(damaged) == 1
    whole = [(n, 0, kps.index.locate(n).num_frames) for n in in_pack]
    with pytest.raises(StoreError, match=f"keypoints of '{damaged[0]}' are damaged"):
        kps.keypoint_windows(whole)
    others = [s for s in whole if s[0] != damaged[0]]  # the rest of the pack reads as before
    for (name, start, end), window in zip(others, kps.keypoint_windows(others), strict=True):
        assert window.tobytes() == kps.load(name, start, end).keypoints.tobytes()


def _put_3d(output, tmp, name, frames, seed):
    """Write and commit one loose COCO-17 item with depth; returns (keypoints, depth)."""
    rng = np.random.default_rng(seed)
    kp = rng.uniform(0, 640, (frames, COCO_17.num_keypoints, 3)).astype(np.float32)
    depth = rng.uniform(300, 900, (frames, COCO_17.num_keypoints)).astype(np.float32)
    depth[0, :3] = np.nan  # joints whose z is not known
    write_keypoint_item(tmp / f"{name}.w", kp, np.ones(frames, bool), np.arange(frames) / 25.0, layout=COCO_17,
                        fps=25.0, width=640, height=480, source_name=f"{name}.txt", source_path=f"/data/{name}.txt",
                        fingerprint=f"fp-{name}", depth=depth)
    output.commit(tmp / f"{name}.w", name)
    return kp, depth


def test_depth_rides_with_its_item_loose_packed_and_compacted(tmp_path):
    """An item's optional depth (T, V) reads back as written, loose and after compaction (3D and 2D items in packs
    of their own); an item without depth reads back exactly as before depth existed: depth None, the same keypoints
    and attributes (no ``depth`` attribute, no depth array)."""
    store, output, tmp = _output(tmp_path)
    flat = {n: _put(output, tmp, n, 40, seed) for seed, n in enumerate(("flat_a", "flat_b"))}
    deep = {n: _put_3d(output, tmp, n, 37 + seed, seed) for seed, n in enumerate(("deep_a", "deep_b", "deep_c"))}
    assert "depth" not in zarr.open_group(output.item_path("flat_a"), mode="r")
    loose = KeypointSet(store, key="packtest")
    before = _snapshot(loose)
    for name, kp in flat.items():
        clip = loose.load(name)
        assert clip.depth is None and "depth" not in loose.attributes(name)
        np.testing.assert_array_equal(clip.keypoints, kp)
    for name, (kp, depth) in deep.items():
        clip = loose.load(name)
        np.testing.assert_array_equal(clip.keypoints, kp)
        np.testing.assert_array_equal(clip.depth, depth)  # NaN where z is unknown, too
        assert clip.depth.dtype == np.float32 and loose.attributes(name)["depth"] is True
    assert compact(output, tmp) == 2  # items with depth and items without never share a pack
    packed = KeypointSet(store, key="packtest")
    assert not packed.index.loose and len(packed.index.packs) == 2
    _assert_snapshot(packed, before)
    for name, (_, depth) in deep.items():
        np.testing.assert_array_equal(packed.load(name).depth, depth)
        np.testing.assert_array_equal(packed.load(name, 5, 20).depth, depth[5:20])
    assert all(packed.load(n).depth is None for n in flat)
    assert packed.has_depth(list(deep)) and not packed.has_depth(["deep_a", "flat_a"]) and not packed.has_depth([])
    spans = [("deep_b", 3, 30), ("flat_a", 0, 10), ("deep_a", 0, 37)]
    windows = packed.keypoint_windows(spans, "depth")  # read straight from the pack's shard file
    assert windows[1] is None
    np.testing.assert_array_equal(windows[0], deep["deep_b"][1][3:30])
    np.testing.assert_array_equal(windows[2], deep["deep_a"][1])
    depth_pack = packed.index.locate("deep_a").pack
    assert PackFrames.open(output.items_dir / depth_pack / "depth") is not None
    assert not (output.items_dir / packed.index.locate("flat_a").pack / "depth").exists()


def test_pack_writer_keeps_depth_and_refuses_a_mismatch(tmp_path):
    """`PackWriter` (the import's writer) packs 3D items with their depth; depth without the attribute saying so
    (or the reverse), or of the wrong shape, is refused."""
    from pipelines.formats.keypoint_items import item_attrs

    store, output, tmp = _output(tmp_path)
    writer = keypoint_packs.PackWriter(output, tmp)
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 100, (12, 17, 3))
    depth = rng.uniform(0, 100, (12, 17))
    attrs = item_attrs(COCO_17, 30.0, None, None, "x", "x", "fp", "x, y, z", None, depth=True)
    with pytest.raises(ValueError, match="depth of shape"):
        writer.add("bad", attrs, kp, np.ones(12, bool), np.arange(12) / 30, depth[:, :5])
    with pytest.raises(ValueError, match="a depth array is missing"):
        writer.add("bad", attrs, kp, np.ones(12, bool), np.arange(12) / 30)
    writer.add("deep", attrs, kp, np.ones(12, bool), np.arange(12) / 30, depth)
    writer.add("flat", {**attrs, "depth": False}, kp, np.ones(12, bool), np.arange(12) / 30)
    writer.finish()
    kps = KeypointSet(store, key="packtest")
    np.testing.assert_allclose(kps.load("deep").depth, depth.astype(np.float32))
    assert kps.load("flat").depth is None


def test_a_damaged_or_lost_depth_array_is_damage_that_verify_finds(tmp_path):
    """A flipped bit in a pack's depth, or its depth folder gone, is found by `verify` (which `--repair` then
    removes) and read as one StoreError naming the pack; a loose 3D item without its depth counts as not done."""
    import shutil

    from pipelines.formats.verify import verify_store

    store, output, tmp = _output(tmp_path)
    for seed, name in enumerate(("deep_a", "deep_b")):
        _put_3d(output, tmp, name, 30 + seed, seed)
    assert not verify_store(store).damaged
    compact(output, tmp)
    pack = KeypointSet(store, key="packtest").index.locate("deep_a").pack
    assert not verify_store(store).damaged
    chunk = output.items_dir / pack / "depth" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 3] ^= 0xFF
    chunk.write_bytes(bytes(data))
    (damage,) = verify_store(store).damaged
    assert damage.entry == pack and "depth" in damage.problem
    shutil.rmtree(output.items_dir / pack / "depth")
    (damage,) = verify_store(store).damaged
    assert damage.entry == pack and "'depth' has no zarr.json" in damage.problem
    keypoints = KeypointSet(store, key="packtest")
    assert "deep_a" not in keypoints.index.packed  # a pack missing an array holds no live item
    with pytest.raises(StoreError, match=f"{pack}.*'depth' has no zarr.json"):
        keypoints.load("deep_a")
    _put_3d(output, tmp, "deep_c", 25, 7)  # loose
    shutil.rmtree(output.item_path("deep_c") / "depth")
    assert KeypointIndex(output).fingerprint("deep_c") is None  # not done: the next run redoes it
    with pytest.raises(StoreError, match="deep_c: damaged, array 'depth' has no zarr.json"):
        KeypointSet(store, key="packtest").load("deep_c")
