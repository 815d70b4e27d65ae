"""The content-hashed feature store.

Layout of a store root (``cache/`` by default, ``--store`` / ``DUALNET_STORE`` to move it)::

    <root>/locks/                  flock files: one writer per store (or one per shard of a sharded run)
    <root>/refs/<stage>.json       the key the latest run of each stage used (what ``gc`` keeps)
    <root>/fingerprints.sqlite     memoised content hashes of input files (an accelerator only)
    <root>/<stage>/<key>/stage.json     stage name, version, parameters and upstream keys behind <key>
    <root>/<stage>/<key>/items/<name>/  one finished work item (a zarr group); present means complete
    <root>/<stage>/<key>/items/@<id>/   a pack of many finished items (keypoint stages; see keypoint_packs)
    <root>/<stage>/<key>/failed/<name>.json  why an item failed in its latest attempt
    <root>/<stage>/<key>/runs/<shard>.json   the items the latest run of each shard was asked for
    <root>/<stage>/<key>/tmp/<shard>/   items being written; never read, cleared when a writer starts

An item is written under ``tmp/`` and moved into ``items/`` with one ``os.replace``, so a killed run leaves either a
whole item or none. Nothing inside the store refers to its own absolute path: a store can be moved or copied.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import StoreError, StoreLockedError
from pipelines.hashing import FingerprintCache, stable_hash
from pipelines.kill_points import kill_point
from pipelines.store.integrity import damaged
from pipelines.store.stage_run import StageReport, StageSpec, open_run  # noqa: F401 (re-exported)

DEFAULT_STORE = "cache"
STORE_ENV = "DUALNET_STORE"
PACK_PREFIX = "@"  # items/@<id> is a pack of items: no item name (a safe_name) can start with it
_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
NAME_MAX = 255  # bytes in one file name (ext4, XFS, APFS); item names are ASCII, so also characters
# The longest file name the store makes from an item's is its failure record while being written,
# ".<name>.json.<8 hex>.tmp" (write_file_atomic): a longer name is an input error, not a full disk.
MAX_ITEM_NAME = NAME_MAX - len("..json.01234567.tmp")  # 236


def default_store_root() -> Path:
    """The store root from ``DUALNET_STORE``, else ``cache/`` under the working directory."""
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def safe_name(name: str) -> str:
    """A file-system-safe item name, distinct for distinct names: a name of [A-Za-z0-9._-] only (not starting with
    '.') is kept; in any other, those characters become '_' and a short hash of the original name is appended, so
    that ``clip é 1`` and ``clip ü 1`` stay two items (``clip___1-<hash>``). Idempotent: a safe name maps to itself.
    """
    cleaned = "".join(c if c in _SAFE else "_" for c in name).lstrip(".")
    if cleaned == name and name:
        return name
    return f"{cleaned or '_'}-{hashlib.sha1(name.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def write_file_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Let `write` fill a temporary file beside `path`, then rename it over `path`: readers see the old file or the
    new one, never a torn one. On an error the temporary file is removed and the error raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        kill_point("atomic.written")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never a torn one."""
    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())

    write_file_atomic(path, write)


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


@dataclass(frozen=True)
class Shard:
    """A deterministic 1/count of the work items: those whose name hashes to `index` (0-based)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Parse ``"i/n"`` with 0 <= i < n."""
        try:
            i, n = (int(p) for p in text.split("/"))
        except ValueError:
            raise ValueError(f"shard {text!r} is not of the form i/n (e.g. 0/4)") from None
        if n < 1 or not 0 <= i < n:
            raise ValueError(f"shard {text!r} needs 0 <= i < n")
        return cls(i, n)

    @property
    def label(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def owns(self, name: str) -> bool:
        """Whether item `name` belongs to this shard (independent of input order and machine)."""
        return self.count == 1 or int(stable_hash(name, chars=12), 16) % self.count == self.index


class StoreLock:
    """One writer per store, held with ``flock`` so that a killed holder never leaves a stale lock.

    An unsharded writer takes the store lock exclusively. Writers of a sharded run take it shared, plus their own
    shard's lock exclusively: shards of one run write side by side, while a second writer of the same shard, or an
    unsharded writer, fails fast with a message that names the holder.
    """

    def __init__(self, root: Path, shard: Shard = Shard(), command: str = ""):
        self.root = root
        self.shard = shard
        self.command = command or " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))
        self._fds: list[int] = []

    def _open(self, path: Path) -> int:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"{self.root}: store is not writable ({e.strerror})") from None

    def _holders(self) -> str:
        found = []
        for lock_file in sorted((self.root / "locks").glob("*.lock")):
            fd = os.open(lock_file, os.O_RDONLY)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    continue  # nobody holds this one
                except BlockingIOError:
                    pass
                text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            finally:
                os.close(fd)
            try:
                info = json.loads(text)
                found.append(f"pid {info['pid']} on {info['host']} ({info['command']}, since {info['started']})")
            except (ValueError, KeyError):
                continue
        return "; ".join(found) or "another process"

    def _take(self, path: Path, mode: int) -> int:
        fd = self._open(path)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self.release()
            raise StoreLockedError(f"{self.root}: store is in use by {self._holders()}") from None
        self._fds.append(fd)
        return fd

    def _write_holder(self, fd: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command, "started": now_iso()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)

    def acquire(self) -> StoreLock:
        locks = self.root / "locks"
        if self.shard.count == 1:
            self._write_holder(self._take(locks / "store.lock", fcntl.LOCK_EX))
        else:
            self._take(locks / "store.lock", fcntl.LOCK_SH)
            self._write_holder(self._take(locks / f"{self.shard.label}.lock", fcntl.LOCK_EX))
        return self

    def release(self) -> None:
        for fd in reversed(self._fds):
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class StageSummary:
    """One row of ``dualnet status``."""

    stage: str
    key: str
    params: dict
    done: int
    failed: int
    total: int
    bytes: int
    updated: str
    current: bool


@dataclass(frozen=True)
class OutputFormat:
    """How the store counts the finished work of one kind of output; each format module registers its own.

    Attributes:
        done: Names of the finished units (items, clips, epochs) of an output; damaged entries do not count.
        total: How many units the output should hold (default: the items its runs asked for, or found done).
        outside_items: Its files live beside ``items/`` too (a training run's checkpoints): sizes walk it all.
    """

    done: Callable[[StageOutput], list[str]]
    total: Callable[[StageOutput, dict], int] | None = None
    outside_items: bool = False


_FORMATS: dict[str, OutputFormat] = {}


def register_output_format(name: str, fmt: OutputFormat) -> None:
    """Make `name` (a manifest's ``recorded.format``) count its finished work with `fmt`."""
    _FORMATS[name] = fmt


def output_format(manifest: dict, where: Path) -> OutputFormat:
    """The registered format of an output's manifest. Manifests written before formats were recorded name none:
    theirs is told by the fields they had (``packed``: tube packs; ``epochs``: a training run)."""
    name = manifest.get("recorded", {}).get("format")
    if name is None:
        name = "tube-packs" if manifest.get("packed") else "training-run" if "epochs" in manifest else "keypoint-items"
    if name not in _FORMATS:
        raise StoreError(f"{where}: output format {name!r} is unknown here (import pipelines.formats first, or a "
                         "newer micro-dualnet wrote it)")
    return _FORMATS[name]


def _done_item_folders(output: StageOutput) -> list[str]:
    """The generic format: one finished item per undamaged folder under ``items/``."""
    return [n for n in output.item_names() if not damaged(output.items_dir / n)]


class StageOutput:
    """The directory ``<root>/<stage>/<key>/``: finished items, failure records and run bookkeeping."""

    def __init__(self, root: Path, stage: str, key: str):
        self.root = root
        self.stage = stage
        self.key = key
        self.path = root / stage / key
        self.items_dir = self.path / "items"
        self.failed_dir = self.path / "failed"
        self.runs_dir = self.path / "runs"

    # -- reading -------------------------------------------------------------------------------------------------
    def manifest(self) -> dict:
        path = self.path / "stage.json"
        if not path.exists():
            raise StoreError(f"{self.path}: no {self.stage} output with key {self.key} in this store")
        return read_json(path)

    def item_path(self, name: str) -> Path:
        return self.items_dir / safe_name(name)

    def _entries(self) -> list[str]:
        if not self.items_dir.is_dir():
            return []
        return sorted(e.name for e in os.scandir(self.items_dir) if e.is_dir())

    def item_names(self) -> list[str]:
        """Names of the finished items that have their own folder, sorted (packs are not listed)."""
        return [n for n in self._entries() if not n.startswith(PACK_PREFIX)]

    def pack_names(self) -> list[str]:
        """Names of the item packs (``@<id>``), oldest first."""
        return [n for n in self._entries() if n.startswith(PACK_PREFIX)]

    def failures(self) -> dict[str, dict]:
        """Failure records by item name: ``{"source": ..., "error": ..., "time": ...}``."""
        if not self.failed_dir.is_dir():
            return {}
        out = {}
        for p in sorted(self.failed_dir.glob("*.json")):
            try:
                record = read_json(p)
            except (OSError, ValueError):
                continue
            out[record.get("name", p.stem)] = record
        return out

    def requested_items(self) -> set[str]:
        names: set[str] = set()
        if self.runs_dir.is_dir():
            for p in self.runs_dir.glob("*.json"):
                try:
                    names.update(read_json(p)["items"])
                except (OSError, ValueError, KeyError):
                    continue
        return names

    def done_items(self, manifest: dict) -> list[str]:
        """Names of the finished work of this output, as its output format counts it (damaged entries do not
        count)."""
        return output_format(manifest, self.path).done(self)

    def summary(self, current: bool = False) -> StageSummary:
        manifest = self.manifest()
        fmt = output_format(manifest, self.path)
        done = fmt.done(self)
        failed = self.failures()
        total = fmt.total(self, manifest) if fmt.total else len(self.requested_items() | set(done))
        latest = (self.path / "stage.json").stat().st_mtime
        for base in (self.items_dir, self.runs_dir, self.failed_dir):
            if base.is_dir():
                latest = max(latest, base.stat().st_mtime)
        size = self.size_bytes(walk_all=fmt.outside_items)
        updated = dt.datetime.fromtimestamp(latest, dt.UTC).isoformat(timespec="seconds")
        return StageSummary(self.stage, self.key, manifest.get("params", {}), len(done), len(failed), total, size,
                            updated, current)

    def size_bytes(self, walk_all: bool = False) -> int:
        """Bytes of the finished items (of the whole output with `walk_all`).

        Committed items never change in place, so the total is memoised in ``size.json`` against the items
        folder's mtime (which every commit and removal changes): `status` on 20,000 items must not stat 140,000
        files each time. A read-only store computes it without memoising.
        """
        root = self.path if walk_all else self.items_dir
        if not root.is_dir():
            return 0
        stamp = root.stat().st_mtime_ns
        memo = self.path / "size.json"
        if not walk_all:
            try:
                cached = read_json(memo)
                if cached["items_mtime_ns"] == stamp:
                    return int(cached["bytes"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
        size = 0
        for dirpath, _, files in os.walk(root):
            for f in files:
                try:
                    size += os.stat(os.path.join(dirpath, f)).st_size
                except OSError:
                    continue  # removed while walking (gc, a concurrent commit)
        if not walk_all:
            try:
                write_json_atomic(memo, {"items_mtime_ns": stamp, "bytes": size})
            except OSError:
                pass
        return size

    # -- writing (only under a StoreLock) ------------------------------------------------------------------------
    def prepare(self, manifest: dict, shard: Shard) -> Path:
        """Create the directory, write the manifest once, and clear this shard's stale temporary items."""
        for d in (self.items_dir, self.failed_dir, self.runs_dir):
            d.mkdir(parents=True, exist_ok=True)
        if not (self.path / "stage.json").exists():
            write_json_atomic(self.path / "stage.json", manifest)
        tmp = self.path / "tmp" / shard.label
        if tmp.exists():
            shutil.rmtree(tmp)  # left by a killed run of this shard: we hold its lock, so nothing else writes here
        tmp.mkdir(parents=True)
        return tmp

    def finish(self, shard: Shard) -> None:
        """Remove this shard's (now empty) temporary folder at the end of a run."""
        for d in (self.path / "tmp" / shard.label, self.path / "tmp"):
            try:
                d.rmdir()
            except OSError:
                return  # not empty (another shard is writing) or already gone

    def commit(self, tmp_item: Path, name: str) -> Path:
        """Move a fully written item into place; an older item of the same name is replaced."""
        final = self.item_path(name)
        if final.exists():
            trash = tmp_item.with_name(tmp_item.name + ".old")
            os.replace(final, trash)  # a crash right here leaves the item missing, so it is redone: never torn
            kill_point("commit.old_moved")
            os.replace(tmp_item, final)
            shutil.rmtree(trash)
        else:
            os.replace(tmp_item, final)
        _fsync_dir(self.items_dir)
        self.clear_failure(name)
        return final

    def commit_pack(self, tmp_pack: Path, pack: str) -> Path:
        """Move a fully written pack (a new, unique ``@<id>`` name) into place."""
        if pack != PACK_PREFIX + safe_name(pack[len(PACK_PREFIX):]):
            raise ValueError(f"{pack!r} is not a pack name")
        final = self.items_dir / pack
        os.replace(tmp_pack, final)
        _fsync_dir(self.items_dir)
        return final

    def remove_item(self, name: str, tmp: Path) -> None:
        """Remove a finished item or pack: moved into `tmp` first (one rename, so readers never see it half
        removed), then deleted. An entry already gone is not an error."""
        gone = tmp / f"{name}.{uuid.uuid4().hex[:8]}.gone"
        try:
            os.replace(self.items_dir / name, gone)
        except FileNotFoundError:
            return
        _fsync_dir(self.items_dir)
        kill_point("remove.moved")
        shutil.rmtree(gone, ignore_errors=True)

    @staticmethod
    def discard(tmp_item: Path) -> None:
        """Remove a half-written temporary item (after a write error: give back the space it took)."""
        shutil.rmtree(tmp_item, ignore_errors=True)

    def _failure_path(self, name: str) -> Path:
        """``failed/<name>.json``; a name too long for that (one the store refused as an item) is cut and given a
        hash of the whole name, so that its failure can still be recorded."""
        name = safe_name(name)
        if len(name) > MAX_ITEM_NAME:
            name = f"{name[:MAX_ITEM_NAME - 9]}-{stable_hash(name, chars=8)}"
        return self.failed_dir / f"{name}.json"

    def record_failure(self, name: str, source: str, error: str) -> None:
        write_json_atomic(self._failure_path(name),
                          {"name": safe_name(name), "source": source, "error": error, "time": now_iso()})

    def clear_failure(self, name: str) -> None:
        self._failure_path(name).unlink(missing_ok=True)

    def record_run(self, shard: Shard, names: list[str]) -> None:
        write_json_atomic(self.runs_dir / f"{shard.label}.json",
                          {"items": sorted(safe_name(n) for n in names), "updated": now_iso()})


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


register_output_format("items", OutputFormat(_done_item_folders))


class Store:
    """A feature-store root. Cheap to construct; creates nothing until a writer needs it."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_store_root()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def require(self) -> Store:
        """This store, for a command that reads one: a root that does not exist or is not a folder is a StoreError,
        never an empty store (and a reader does not create it)."""
        if not self.root.is_dir():
            problem = "not a folder" if self.root.exists() else "the folder does not exist"
            raise StoreError(f"{self.root}: no store here ({problem})")
        return self

    def stage(self, stage: str, key: str) -> StageOutput:
        return StageOutput(self.root, stage, key)

    def lock(self, shard: Shard = Shard(), command: str = "") -> StoreLock:
        return StoreLock(self.root, shard, command)

    def run(self, spec: StageSpec, shard: Shard = Shard(), *, set_ref: bool = True):
        """The context a stage writes in (see `stage_run.open_run`): lock, manifest, ref, and cleanup."""
        return open_run(self, spec, shard, set_ref=set_ref)

    def fingerprints(self) -> FingerprintCache:
        db = self.root / "fingerprints.sqlite"
        return FingerprintCache(db if os.access(self.root, os.W_OK) else None)

    def set_ref(self, stage: str, key: str, params: dict) -> None:
        write_json_atomic(self.root / "refs" / f"{stage}.json", {"key": key, "params": params, "updated": now_iso()})

    def refs(self) -> dict[str, str]:
        """The current key of each stage (the one its latest run used)."""
        out = {}
        for p in sorted((self.root / "refs").glob("*.json")):
            try:
                out[p.stem] = read_json(p)["key"]
            except (OSError, ValueError, KeyError):
                continue
        return out

    def outputs(self) -> Iterator[StageOutput]:
        """Every stage output in the store (directories with a stage.json)."""
        if not self.root.is_dir():
            return
        for manifest in sorted(self.root.glob("*/*/stage.json")):
            yield StageOutput(self.root, manifest.parent.parent.name, manifest.parent.name)

    def status(self) -> list[StageSummary]:
        refs = self.refs()
        return [out.summary(current=refs.get(out.stage) == out.key) for out in self.outputs()]

    def reachable(self) -> set[tuple[str, str]]:
        """(stage, key) pairs the current refs reach, following each output's upstream keys."""
        seen: set[tuple[str, str]] = set()
        todo = list(self.refs().items())
        while todo:
            stage, key = todo.pop()
            if (stage, key) in seen:
                continue
            seen.add((stage, key))
            try:
                upstream = self.stage(stage, key).manifest().get("inputs", {})
            except (StoreError, OSError, ValueError):
                continue
            todo.extend(upstream.items())
        return seen

    def garbage(self) -> list[Path]:
        """Stage outputs no current configuration reaches, and leftover temporary folders."""
        keep = self.reachable()
        out = [o.path for o in self.outputs() if (o.stage, o.key) not in keep]
        out += [o.path / "tmp" for o in self.outputs() if (o.stage, o.key) in keep and (o.path / "tmp").exists()]
        return out

    def gc(self, dry_run: bool = False) -> list[Path]:
        """Remove `garbage()` under the exclusive store lock; returns what was (or would be) removed."""
        with self.lock(command="gc"):
            doomed = self.garbage()
            if not dry_run:
                for path in doomed:
                    shutil.rmtree(path)
            return doomed
