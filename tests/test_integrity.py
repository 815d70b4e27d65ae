"""Store integrity (issue 15.2): a missing chunk file, a missing array `zarr.json` or a flipped bit is found, read
as a clear error (never as fill values), reported by `dualnet verify`, and redone by the next run, exactly."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import requires_shared, run_cli, shortest_clip
from helpers import assert_same_keypoints
from pipelines.errors import StoreError
from pipelines.formats.keypoints import KeypointSet
from pipelines.formats.tube_packs import ARRAYS, TubeSet
from pipelines.stages.extract import run_extract
from pipelines.stages.tubes import run_tubes
from pipelines.store import Store
from pipelines.store.integrity import missing

pytestmark = requires_shared


def _only_pack(store: Store, stage: str = "extract"):
    (pack,) = [p for p in store.root.glob(f"{stage}/*/items/*") if p.is_dir()]
    return pack


def _done(store: Store, stage: str) -> int:
    (row,) = [r for r in store.status() if r.stage == stage]
    return row.done


@pytest.fixture()
def one_clip(ma52_store, tmp_path):
    """A store with `extract` of the shortest real clip (one pack), and the session's reference keypoints."""
    store = Store(tmp_path / "store")
    assert run_extract([str(shortest_clip())], store).processed == [shortest_clip().stem]
    return store, KeypointSet(ma52_store)


def test_missing_chunk_file_reads_as_an_error_and_is_redone(one_clip):
    store, reference = one_clip
    name = shortest_clip().stem
    pack = _only_pack(store)
    assert pack.name.startswith("@") and missing(pack, ("keypoints", "detected", "timestamps")) is None
    (pack / "detected" / "c" / "0").unlink()  # the pack's one shard of `detected`

    with pytest.raises(StoreError, match="damaged.*detected"):
        KeypointSet(store).load(name)  # not a run of fill values with detected = False/True
    assert _done(store, "extract") == 0  # status no longer counts it as done

    again = run_extract([str(shortest_clip())], store)
    assert again.processed == [name] and not again.skipped  # exactly the damaged item is redone
    assert_same_keypoints(KeypointSet(store), reference, [name])
    assert not [p for p in store.root.glob("extract/*/items/*") if missing(p) is not None]  # damaged pack gone
    assert run_extract([str(shortest_clip())], store).skipped == [name]


def test_missing_array_metadata_and_flipped_bits_are_found_by_verify(one_clip):
    store, reference = one_clip
    name = shortest_clip().stem
    clean = run_cli("verify", "--store", str(store.root))
    assert clean.returncode == 0 and "0 damaged" in clean.stdout, clean.stderr

    pack = _only_pack(store)
    shard = pack / "keypoints" / "c" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x40  # one flipped bit inside a chunk: the files are all there
    shard.write_bytes(bytes(data))
    assert missing(pack) is None and _done(store, "extract") == 1
    with pytest.raises(StoreError, match="checksum"):
        KeypointSet(store).load(name)
    found = run_cli("verify", "--store", str(store.root))
    assert found.returncode == 1 and str(pack) in found.stderr and name in found.stderr
    assert "Traceback" not in found.stderr and len(found.stderr.strip().splitlines()) == 1
    repaired = run_cli("verify", "--store", str(store.root), "--repair")
    assert repaired.returncode == 0 and "removed 1" in repaired.stdout and not pack.exists()
    assert _done(store, "extract") == 0
    assert run_extract([str(shortest_clip())], store).processed == [name]
    assert_same_keypoints(KeypointSet(store), reference, [name])

    pack = _only_pack(store)
    (pack / "timestamps" / "zarr.json").unlink()
    with pytest.raises(StoreError, match="timestamps.*zarr.json"):
        KeypointSet(store).load(name)
    found = run_cli("verify", "--store", str(store.root))
    assert found.returncode == 1 and "'timestamps' has no zarr.json" in found.stderr
    assert run_extract([str(shortest_clip())], store).processed == [name]

    missing_store = run_cli("verify", "--store", str(store.root / "nowhere"))
    assert missing_store.returncode == 1 and "no store there" in missing_store.stderr


def test_damaged_tube_pack_is_an_error_and_its_clips_are_redone(ma52_tubes, tmp_path):
    store = Store(tmp_path / "store")
    shutil.copytree(ma52_tubes.store.root / "extract", store.root / "extract")
    shutil.copytree(ma52_tubes.store.root / "refs", store.root / "refs")
    assert len(run_tubes(store, names=ma52_tubes.names()[:2]).processed) == 2
    first = run_tubes(store)  # the other 4 clips: a second pack
    assert len(first.processed) == 4 and first.packs == 1
    packs = sorted(p for p in store.root.glob("tubes/*/items/*"))
    damaged = packs[0]
    held = sorted(TubeSet(store).names())
    (shard,) = [f for f in (damaged / "frames" / "c").rglob("*") if f.is_file()]  # the pack's one shard
    shard.unlink()

    tubes = TubeSet(store)
    lost = sorted(set(held) - set(tubes.names()))
    assert lost == sorted(ma52_tubes.names()[:2])
    with pytest.raises(StoreError, match="damaged"):
        tubes.load(lost[0])
    redo = run_tubes(store)
    assert sorted(redo.processed) == lost and len(redo.skipped) == 4  # exactly the damaged pack's clips
    assert not damaged.exists()
    for name in held:
        got, want = TubeSet(store).load(name), ma52_tubes.load(name)
        for array in ARRAYS:
            np.testing.assert_array_equal(got[array], want[array], err_msg=f"{name}/{array}")
