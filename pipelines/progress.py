"""The one progress protocol every stage reports through.

A stage calls these methods as it works; this base class ignores them (library and notebook use), and the CLI
draws them with Rich (`cli.main.RichProgress`). One protocol for every stage, so a new stage needs no new drawing.
"""

from __future__ import annotations


class Progress:
    """Callbacks of a running stage (all optional to act on)."""

    def begin(self, task: str, total: int | None, unit: str = "items") -> None:
        """A counted task begins: `total` units (None when unknown) of `unit` (items, frames, steps, windows)."""

    def advance(self, count: int = 1, info: str = "") -> None:
        """`count` more units of the current task are done; `info` is a short live status (a loss, a rate)."""

    def item(self, name: str, error: str | None) -> None:
        """Work item `name` finished, or failed with `error` (one line naming the file)."""

    def note(self, text: str) -> None:
        """A line for the user: what was skipped, where a run resumed, an epoch's summary."""
