"""Verifiable zarr data: every chunk carries a CRC32C checksum and every chunk is written, so damage is found.

Arrays the stages write (`array_options`) end their codec chain with zarr's ``crc32c`` codec (a flipped bit in a
chunk fails the read instead of returning other numbers) and are written with ``write_empty_chunks``: each chunk
of the grid is a file (or, sharded, each shard), so a missing file is damage, never a run of fill values.

Two checks build on it:
- `missing` (cheap: metadata and file names, no data read): an array without its ``zarr.json``, or a checksummed
  array lacking one of its chunk or shard files. Done-checks use it, so a re-run redoes exactly the damaged items.
- `read_problem` (reads everything): `missing`, then every array read whole, checksums verified. `dualnet verify`.

Arrays written before checksums existed (no ``crc32c`` codec) are read as before: their missing chunks may be
legitimately empty, so only a missing ``zarr.json`` counts against them.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import zarr
from zarr.codecs import Crc32cCodec

CHECKSUM_CODEC = "crc32c"


def array_options(compressors=("zstd",)) -> dict:
    """Keyword arguments for ``create_array``: `compressors` (zarr codec objects or "zstd") then a checksum, and
    every chunk written."""
    chain = [zarr.codecs.ZstdCodec() if c == "zstd" else c for c in compressors]
    return {"compressors": [*chain, Crc32cCodec()], "config": {"write_empty_chunks": True}}


def _codec_names(codecs: list[dict]) -> set[str]:
    names = set()
    for codec in codecs:
        names.add(codec.get("name"))
        names |= _codec_names(codec.get("configuration", {}).get("codecs", []) or [])
    return names


def _chunk_files(array_path: Path, meta: dict) -> list[Path]:
    """The files a fully written array consists of: one per chunk of its (outer) chunk grid."""
    shape = meta["shape"]
    grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
    encoding = meta.get("chunk_key_encoding", {"name": "default"})
    separator = encoding.get("configuration", {}).get("separator", "/" if encoding["name"] == "default" else ".")
    counts = [math.ceil(s / c) for s, c in zip(shape, grid, strict=True)]
    if any(n == 0 for n in counts):
        return []
    prefix = "c" + separator if encoding["name"] == "default" else ""
    return [array_path / (prefix + separator.join(map(str, index)))
            for index in itertools.product(*(range(n) for n in counts))]


def missing(group: Path, arrays: tuple[str, ...] | list[str] | None = None) -> str | None:
    """What is missing from the zarr group `group` holding `arrays` (default: each of its sub-folders), or None
    when every file is there. Reads metadata and lists files only."""
    if not (group / "zarr.json").is_file():
        return "its zarr.json is missing"
    if arrays is None:
        arrays = sorted(e.name for e in os.scandir(group) if e.is_dir())
    for name in arrays:
        meta_path = group / name / "zarr.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            return f"array {name!r} has no zarr.json"
        except (OSError, ValueError) as e:
            return f"array {name!r}: unreadable zarr.json ({e})"
        if CHECKSUM_CODEC not in _codec_names(meta.get("codecs", [])):
            continue  # written before checksums: an absent chunk may be an empty one
        try:
            files = _chunk_files(group / name, meta)
        except (KeyError, TypeError, ValueError) as e:
            return f"array {name!r}: unexpected metadata ({e})"
        absent = [f for f in files if not f.is_file()]
        if absent:
            return (f"array {name!r} lacks {len(absent)} of its {len(files)} chunk files "
                    f"({absent[0].relative_to(group)})")
    return None


def damaged(entry: Path) -> bool:
    """Whether `entry`, if it is a zarr group (it or one of its sub-folders has a ``zarr.json``), lacks a file
    (`missing`). Entries of other formats (a prediction's parquet files) are never damaged by this test."""
    if not (entry / "zarr.json").is_file():
        try:
            subs = [e for e in os.scandir(entry) if e.is_dir()]
        except OSError:
            return False
        if not any(os.path.exists(os.path.join(e.path, "zarr.json")) for e in subs):
            return False
    return missing(entry) is not None


def read_problem(group: Path, arrays: tuple[str, ...] | list[str]) -> str | None:
    """`missing`, then every array of `group` read whole (checksums verified): the first problem, or None."""
    problem = missing(group, arrays)
    if problem is not None:
        return problem
    try:
        opened = zarr.open_group(group, mode="r")
    except Exception as e:  # noqa: BLE001 - any failure to open is the damage being looked for
        return f"cannot be opened ({type(e).__name__}: {e})"
    for name in arrays:
        try:
            opened[name][...]
        except Exception as e:  # noqa: BLE001 - a checksum mismatch, a truncated or garbled chunk, ...
            return f"array {name!r} cannot be read ({type(e).__name__}: {e})"
    return None


def is_checksum_error(error: BaseException) -> bool:
    """Whether `error` is zarr's report of a chunk whose stored checksum does not match its bytes."""
    return isinstance(error, ValueError) and "checksum" in str(error).lower()
