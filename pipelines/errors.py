"""Errors a user can act on: each names the file (or store) and the problem in one line."""

from __future__ import annotations

from pathlib import Path


class DualnetError(Exception):
    """Base of the errors the CLI prints as one line (never a traceback)."""


class InputError(DualnetError):
    """A user-supplied file is missing, unreadable or malformed."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class StoreLockedError(DualnetError):
    """Another writer holds the store."""


class StoreError(DualnetError):
    """The store itself cannot be used (read-only, missing stage output, unknown key)."""
