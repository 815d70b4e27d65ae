"""`dualnet verify`: read every keypoint and tube entry of a store whole, checksums included, and report (or
remove) what is damaged, so that the next run of its stage redoes exactly those items.

A missing file is found without reading data (`integrity.missing`) and already makes an entry count as not done;
a flipped bit is found only by reading, which is what this does. Training runs and predictions are not checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipelines.formats.keypoint_packs import KEYPOINT_ARRAYS, arrays_of
from pipelines.formats.tube_packs import ARRAYS as TUBE_ARRAYS
from pipelines.store import StageOutput, Store, read_json
from pipelines.store.integrity import read_problem

ARRAYS_OF_STAGE = {"extract": KEYPOINT_ARRAYS, "import": KEYPOINT_ARRAYS, "tubes": TUBE_ARRAYS}


@dataclass
class Damage:
    """One damaged entry (a loose item or a pack) of a stage output."""

    output: StageOutput
    entry: str  # its folder name under the output's items/
    items: list[str]  # the items or clips it holds (empty when its own metadata is lost)
    problem: str

    @property
    def path(self) -> Path:
        return self.output.items_dir / self.entry

    def line(self) -> str:
        held = f"{len(self.items)} item(s): {', '.join(self.items[:3])}{', ...' if len(self.items) > 3 else ''}" \
            if self.items else "items unknown"
        return f"{self.path}: {self.problem} ({held})"


@dataclass
class VerifyReport:
    outputs: int = 0
    entries: int = 0
    damaged: list[Damage] = field(default_factory=list)
    removed: int = 0


def _attributes(entry: Path) -> dict:
    """An entry's attributes, or {} when its metadata is what is damaged."""
    try:
        return read_json(entry / "zarr.json").get("attributes", {})
    except Exception:  # noqa: BLE001 - the metadata itself may be what is damaged
        return {}


def _held_items(stage: str, entry: Path) -> list[str]:
    """The item names an entry holds: a pack's list, or the loose item's own name."""
    attrs = _attributes(entry)
    if stage == "tubes":
        return [c["name"] for c in attrs.get("clips", []) if "name" in c]
    if "items" in attrs:
        return [e["name"] for e in attrs["items"] if "name" in e]
    return [entry.name]


def verify_store(store: Store | str | Path, on_entry=None) -> VerifyReport:
    """Read every entry of every keypoint (`extract`, `import`) and `tubes` output whole; return what is damaged.

    Args:
        on_entry: Called with each entry's path as it is checked (progress).
    """
    store = store if isinstance(store, Store) else Store(store)
    report = VerifyReport()
    for output in store.outputs():
        arrays = ARRAYS_OF_STAGE.get(output.stage)
        if arrays is None or not output.items_dir.is_dir():
            continue
        report.outputs += 1
        for entry in output.item_names() + output.pack_names():
            path = output.items_dir / entry
            if on_entry is not None:
                on_entry(path)
            report.entries += 1
            if output.stage in ("extract", "import"):  # a 3D item or pack holds depth too
                arrays = arrays_of(_attributes(path))
            problem = read_problem(path, arrays)
            if problem is not None:
                report.damaged.append(Damage(output, entry, _held_items(output.stage, path), problem))
    return report


def repair(store: Store | str | Path, report: VerifyReport) -> int:
    """Remove the damaged entries of `report` (each with one rename, under the store lock), so that the next run
    of each stage redoes their items; returns how many were removed."""
    store = store if isinstance(store, Store) else Store(store)
    removed = 0
    with store.lock():
        for damage in report.damaged:
            tmp = damage.output.path / "tmp"
            tmp.mkdir(exist_ok=True)
            damage.output.remove_item(damage.entry, tmp)
            removed += 1
    report.removed = removed
    return removed
