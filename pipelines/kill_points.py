"""Deterministic kill points for crash testing.

Stages call `kill_point(name)` at each unit of work (an item, a pack, a batch, a checkpoint) and between the steps
of a write (temporary file written / renamed). Two environment variables, read once per process, turn them on:

- ``DUALNET_KILL_AT=N``: the process SIGKILLs itself at the N-th kill point it reaches (1-based), as a crash or an
  out-of-memory kill would, with no cleanup, no ``finally`` and no flush.
- ``DUALNET_KILL_TRACE=FILE``: each kill point reached appends its name as one line to FILE (flushed before a
  kill), so a test knows how many points a run passes and where a kill landed.

With neither set, a kill point costs one dictionary look-up. The crash fuzzer (`tests/test_crash_fuzz.py`) draws N
from a seeded generator: where a run dies depends on the work it has done, never on the machine's speed.
"""

from __future__ import annotations

import os
import signal

_state: dict = {}


def _config() -> dict:
    if not _state:
        at = os.environ.get("DUALNET_KILL_AT", "").strip()
        _state["at"] = int(at) if at else 0
        _state["trace"] = os.environ.get("DUALNET_KILL_TRACE") or None
        _state["count"] = 0
        _state["pid"] = os.getpid()
    elif _state["pid"] != os.getpid():  # a forked worker counts its own points
        _state.update(count=0, pid=os.getpid())
    return _state


def kill_point(name: str) -> None:
    """Mark one point where a crash may happen; see the module docstring. `name` says what was just done."""
    state = _config()
    if not state["at"] and not state["trace"]:
        return
    state["count"] += 1
    if state["trace"]:
        with open(state["trace"], "a") as f:
            f.write(name + "\n")
    if state["count"] == state["at"]:
        os.kill(os.getpid(), signal.SIGKILL)
