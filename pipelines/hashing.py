"""Stable hashes: of parameters (for stage keys) and of file contents (for input fingerprints)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

KEY_CHARS = 16  # hex characters of a stage key: 64 bits, ample for the few configurations a store holds
_CHUNK = 1 << 20


def stable_hash(obj: Any, chars: int = KEY_CHARS) -> str:
    """Hash a JSON-serialisable object independently of dict order and process."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()[:chars]


def hash_file(path: str | Path) -> str:
    """blake2b-128 of a file's bytes, as hex."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, as hex (the checksum published for downloads)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class FingerprintCache:
    """Content fingerprints of input files, memoised by (path, size, mtime, inode).

    Hashing every input on every run would make a no-op re-run of a 20,000-video dataset cost minutes; a file whose
    stat has not changed keeps its cached hash. The cache lives in the store (SQLite, so concurrent shard writers
    are safe) and is only an accelerator: deleting it costs one re-hash, never a wrong result.
    """

    def __init__(self, db_path: str | Path | None):
        self._db: sqlite3.Connection | None = None
        self._pending = 0
        self._rows: dict[str, tuple] | None = None
        if db_path is not None:
            try:
                self._db = sqlite3.connect(str(db_path), timeout=30)
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS fingerprints (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER,"
                    " inode INTEGER, digest TEXT)"
                )
                self._db.commit()
            except sqlite3.OperationalError:  # read-only store: hash without memoising
                self._db = None

    def fingerprint(self, path: str | Path) -> str:
        """Content hash of `path`; raises FileNotFoundError / IsADirectoryError / PermissionError as open() does."""
        real = os.path.realpath(path)
        st = os.stat(real)
        stat_key = (st.st_size, st.st_mtime_ns, st.st_ino)
        row = self._known().get(real)
        if row is not None and row[:3] == stat_key:
            return row[3]
        digest = hash_file(real)
        if self._db is not None:
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO fingerprints VALUES (?, ?, ?, ?, ?)", (real, *stat_key, digest)
                )
                self._known()[real] = (*stat_key, digest)
                self._pending += 1
                if self._pending >= 256:  # one commit per file made a first pass over 20,000 files take ~20 s
                    self._db.commit()
                    self._pending = 0
            except sqlite3.OperationalError:
                pass  # read-only or full disk: the digest is still right, only not memoised
        return digest

    def _known(self) -> dict[str, tuple]:
        """Every memoised row, read in one query on first use (20,000 single-row queries cost seconds)."""
        if self._rows is None:
            self._rows = {}
            if self._db is not None:
                for path, size, mtime_ns, inode, digest in self._db.execute("SELECT * FROM fingerprints"):
                    self._rows[path] = (size, mtime_ns, inode, digest)
        return self._rows

    def close(self) -> None:
        """Commit what is memoised and close (a cache killed before closing only re-hashes those files)."""
        if self._db is not None:
            try:
                self._db.commit()
            except sqlite3.OperationalError:
                pass
            self._db.close()
            self._db = None
