"""Forking a worker process safely from a process that has run threaded native code.

A forked child holds a copy of the parent's memory but only the thread that forked. An object left as cyclic
garbage in the parent whose deallocation joins native threads (a PyAV decoder with frame threads: its
`avcodec_free_context` waits on a condition variable of threads the child does not have) hangs the child forever
when the child's garbage collector frees it. `frozen_for_fork` collects such garbage in the parent, where its threads
exist, and freezes what is left (`gc.freeze`: the permanent generation, which no collection in the child touches).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_for_fork() -> Iterator[None]:
    """Fork worker processes inside this block (a fork-context process pool's first submit, a DataLoader's `iter`):
    the parent's garbage is collected first, and the children never collect anything they inherited."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def forked_iter(loader):
    """`iter(loader)` of a DataLoader, its worker processes (when it has any) forked inside `frozen_for_fork`."""
    if not loader.num_workers:
        return iter(loader)
    with frozen_for_fork():
        return iter(loader)
