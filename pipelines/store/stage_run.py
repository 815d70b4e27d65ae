"""One stage run: what defines its output (`StageSpec`), and the context every stage writes in (`Store.run`).

Every stage declares its output the same way: a name, a code version, its parameters, the upstream outputs it reads
and any other content its result depends on. The key of the output is the hash of exactly the keyed part of the
manifest it writes (``stage.json`` less its ``recorded`` section), so the manifest tells what the key stands for::

    key == stable_hash({k: v for k, v in manifest.items() if k != "recorded"})

``recorded`` holds what is worth writing down but does not change the result (a pack size, the output format that
counts finished work, a path for people to read).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.hashing import stable_hash

if TYPE_CHECKING:
    from pipelines.store import Shard, StageOutput, Store

RECORDED = "recorded"  # the manifest section that is not part of the key


@dataclass(frozen=True)
class StageSpec:
    """What defines a stage's output. `key` hashes `stage`, `version`, `params`, `inputs` and `extra`.

    Attributes:
        params: The stage's parameters (also what ``refs/<stage>.json`` records for people).
        inputs: Upstream outputs, ``{stage: key}``; ``gc`` keeps what the current outputs' inputs reach.
        extra: Other keyed content: a model configuration, the clips a run trains on, a namespace.
        recorded: Written to the manifest but not keyed (it changes files, not results).
        output_format: Which registered format counts this output's finished work (`register_output_format`).
    """

    stage: str
    version: int
    params: dict
    inputs: dict[str, str] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    recorded: dict = field(default_factory=dict)
    output_format: str = "items"

    def keyed(self) -> dict:
        """The part of the manifest the key hashes."""
        return {"stage": self.stage, "version": self.version, "params": self.params, "inputs": self.inputs,
                **self.extra}

    @property
    def key(self) -> str:
        return stable_hash(self.keyed())

    def manifest(self) -> dict:
        """The ``stage.json`` written for this output: the keyed part plus the `recorded` section."""
        return {**self.keyed(), RECORDED: {"format": self.output_format, **self.recorded}}


def manifest_key(manifest: dict) -> str:
    """The key a manifest stands for (the hash of all but its ``recorded`` section)."""
    return stable_hash({k: v for k, v in manifest.items() if k != RECORDED})


@dataclass
class StageReport:
    """What a stage run did, by item name: the CLI prints it, `dualnet run` collects it."""

    key: str
    processed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class StageRun:
    """The open output of a running stage: where finished items go (`output`) and where they are written (`tmp`)."""

    output: StageOutput
    tmp: Path
    shard: Shard

    def record_request(self, names: list[str]) -> None:
        """The items this run (this shard) was asked for: `status` counts its total from them."""
        self.output.record_run(self.shard, names)


@contextmanager
def open_run(store: Store, spec: StageSpec, shard: Shard, *, set_ref: bool = True) -> Iterator[StageRun]:
    """Hold the store lock (this shard's), write the manifest once, clear this shard's stale temporary items and
    point the stage's ref at this key; on a normal exit remove the empty temporary folder. A run that raises leaves
    everything it committed, and its ``tmp`` is cleared by the next writer."""
    with store.lock(shard):
        output = store.stage(spec.stage, spec.key)
        tmp = output.prepare(spec.manifest(), shard)
        if set_ref:
            store.set_ref(spec.stage, spec.key, spec.params)
        yield StageRun(output, tmp, shard)
        output.finish(shard)
