"""`dualnet`: the Typer app. Each command is a thin wrapper over a function in `pipelines/`."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichBar
from rich.table import Table

from pipelines.errors import DualnetError
from pipelines.progress import Progress
from pipelines.store import STORE_ENV, Shard, StageReport, StageSummary, Store

# zarr reads chunks in concurrent asyncio tasks: when one chunk fails its checksum, the stage reports it as one line,
# and the sibling reads that failed the same way would otherwise print "Task exception was never retrieved" with a
# traceback at exit. Those duplicates are dropped; the error itself is always reported (one line).
_asyncio_log = logging.getLogger("asyncio")
_asyncio_log.addHandler(logging.NullHandler())
_asyncio_log.propagate = False

# rich_markup_mode=None: click's plain help, which never cuts an option name (Rich's table does at 80 columns)
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="micro-dualnet: micro-action recognition from video, in resumable, content-hashed stages.")
# Outside a terminal (logs, CI) Rich would wrap at 80 columns: summary lines that end in a path stay whole at 200,
# unless COLUMNS asks for a width.
console = Console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else Console(width=200)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=200)

StoreOption = Annotated[
    Path, typer.Option("--store", envvar=STORE_ENV, help="Feature-store root.", show_default=True)
]


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def one_line(error: Exception) -> str:
    """The message of a bad-value error (a KeyError's text comes quoted)."""
    return str(error).strip("'\"")


def command(name: str | None = None, *, group: typer.Typer = app, error_code: int = 2) -> Callable:
    """Register a command whose errors print as one line and exit `error_code`: the project's own errors
    (`DualnetError`: a file and its problem) and bad values (`ValueError`, `KeyError` from parameter checks). The
    one mapping from error types to messages and exit codes; `main` adds interrupts and disk faults."""
    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except DualnetError as e:
                fail(str(e), error_code)
            except (ValueError, KeyError) as e:
                fail(one_line(e), error_code)

        return group.command(name)(guarded)

    return register


class RichProgress(Progress):
    """Draws every stage's progress (`pipelines.progress.Progress`): one bar per task with done/total, the
    task's live info, its rate in its own unit and times; notes and failures as lines above the bar."""

    def __init__(self, bar: RichBar):
        self.bar, self.task = bar, None

    def begin(self, task: str, total: int | None, unit: str = "items") -> None:
        self.task = self.bar.add_task(task, total=total, info="", unit=unit)

    def advance(self, count: int = 1, info: str = "") -> None:
        if self.task is not None:
            self.bar.update(self.task, advance=count, **({"info": info} if info else {}))

    def item(self, name: str, error: str | None) -> None:
        if error is not None:
            self.bar.console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)

    def note(self, text: str) -> None:
        self.bar.console.print(text, highlight=False, soft_wrap=True)


class _Rate(TextColumn):
    """Units per second of a Rich task, in the task's own unit (frames/s, clips/s, windows/s)."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # noqa: D102
        from rich.text import Text

        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "items")
        return Text(f"{speed:6.1f} {unit}/s" if speed else f"     - {unit}/s")


def report_run(stage: str, report: StageReport, store: Path, detail: str = "", title: str = "") -> None:
    """The closing line of a stage run (items processed, skipped, failed; where its output is); exit 1 when any
    item failed (each failure was printed as it came)."""
    console.print(f"{title or stage} [bold]{report.key}[/]: {len(report.processed)} processed, "
                  f"{len(report.skipped)} skipped, {len(report.failed)} failed{detail} in {report.seconds:.1f} s -> "
                  f"{Path(store) / stage / report.key}", highlight=False)
    if report.failed:
        raise typer.Exit(1)


@contextmanager
def progress_bar() -> Iterator[RichProgress]:
    """The progress display every stage draws on stderr."""
    with RichBar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                 console=err_console) as bar:
        yield RichProgress(bar)


@command()
def extract(
    inputs: Annotated[list[str], typer.Argument(help="Videos, folders, glob patterns or dataset list files.")],
    store: StoreOption = Path("cache"),
    video_root: Annotated[Path | None, typer.Option(help="Folder that list-file entries are relative to.")] = None,
    workers: Annotated[int, typer.Option(min=0, help="Worker processes (one pose model each); 0 = one per 1.36 "
                                                     "available cores, what one MediaPipe process uses.")] = 0,
    shard: Annotated[str, typer.Option(help="Take the deterministic i-th of n parts of the items (0-based).")] = "0/1",
    model_complexity: Annotated[int, typer.Option(help="MediaPipe pose model: 0 lite, 1 full, 2 heavy.")] = 1,
    min_detection_confidence: Annotated[float, typer.Option(help="Person detection threshold.")] = 0.5,
    min_tracking_confidence: Annotated[float, typer.Option(help="Tracking threshold (below it: re-detect).")] = 0.5,
    dtype: Annotated[str, typer.Option(help="Stored keypoint dtype: float32 or float16.")] = "float32",
    max_jump: Annotated[float, typer.Option(help="Main-subject tracking: max centre jump per frame (body sizes).")
                        ] = 0.5,
    backend: Annotated[str, typer.Option(help="mediapipe (Holistic, 543 points) or rtmlib (COCO-WholeBody 133).")
                       ] = "mediapipe",
    det_model: Annotated[str, typer.Option(help="rtmlib: detector ONNX path or URL (default: rtmlib's YOLOX-m).")
                         ] = "",
    pose_model: Annotated[str, typer.Option(help="rtmlib: pose ONNX path or URL (default: rtmlib's RTMW-x).")] = "",
    device: Annotated[str, typer.Option(help="rtmlib: cpu or cuda (onnxruntime-gpu's CUDA provider). MediaPipe runs "
                                             "on the CPU.")] = "cpu",
) -> None:
    """Pose extraction: keypoints of the main subject in every frame, one zarr group per video."""
    from pipelines.formats.params import ExtractParams
    from pipelines.stages.extract import run_extract

    params = ExtractParams(model_complexity=model_complexity, min_detection_confidence=min_detection_confidence,
                           min_tracking_confidence=min_tracking_confidence, dtype=dtype, max_jump=max_jump,
                           backend=backend, det_model=det_model, pose_model=pose_model, device=device)
    part = Shard.parse(shard)
    with progress_bar() as bar:
        report = run_extract(inputs, Store(store), params, workers, part, video_root, bar)
    report_run("extract", report, store, f"; {report.frames} frames")


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _status_table(title: str | None = None) -> Table:
    """A table of `status`: no frame, two spaces between columns."""
    from rich import box

    return Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)


def _shown_params(summary: StageSummary) -> dict:
    """The parameters of a stage output that matter for it (an extract run: those of its backend only)."""
    if summary.stage == "extract":
        from pipelines.formats.params import backend_params

        return backend_params(summary.params)
    return summary.params


@command(error_code=1)
def status(store: StoreOption = Path("cache")) -> None:
    """The stage outputs in the store: parameters, items done / failed / total, size, last update."""
    import pipelines.formats  # noqa: F401 - registers how each output format counts its finished work

    rows = Store(store).require().status()
    if not rows:
        console.print(f"{store}: no stage outputs yet")
        return
    # Two tables, so that each fits 80 columns: the counts (about 77 wide), then the parameters, folded.
    table = _status_table(f"store {store}")
    for col in ("stage", "key", "done", "failed", "total", "bytes", "updated (UTC)"):
        table.add_column(col, justify="right" if col in ("done", "failed", "total", "bytes") else "left",
                         no_wrap=True)
    for r in rows:
        key = f"{r.key} *" if r.current else r.key
        table.add_row(r.stage, key, str(r.done), str(r.failed), str(r.total), _human_bytes(r.bytes),
                      r.updated[:16].replace("T", " "))
    console.print(table)
    console.print("* = the key the latest run of the stage used (kept by gc)")
    params = _status_table()
    params.add_column("stage", no_wrap=True)
    params.add_column("key", no_wrap=True)
    params.add_column("parameters", overflow="fold")
    for r in rows:
        params.add_row(r.stage, r.key, " ".join(f"{k}={v}" for k, v in sorted(_shown_params(r).items())))
    console.print(params)
    for out in Store(store).outputs():
        for name, rec in out.failures().items():
            console.print(f"failed {out.stage}/{out.key[:8]} {name}: {rec.get('error')}", highlight=False,
                          soft_wrap=True)


@command()
def gc(
    store: StoreOption = Path("cache"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed, remove nothing.")] = False,
) -> None:
    """Remove stage outputs that no current configuration reaches (keys not used by each stage's latest run)."""
    doomed = Store(store).require().gc(dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for path in doomed:
        console.print(f"{verb} {path}", highlight=False)
    console.print(f"{verb} {len(doomed)} path(s)")


@command()
def verify(
    store: StoreOption = Path("cache"),
    repair: Annotated[bool, typer.Option("--repair", help="Remove damaged entries so that the next run of their "
                                                          "stage redoes exactly their items.")] = False,
) -> None:
    """Read every keypoint and tube entry whole (chunk checksums included); list what is damaged (exit 1)."""
    from pipelines.formats.verify import repair as repair_store
    from pipelines.formats.verify import verify_store

    if not Path(store).is_dir():
        fail(f"{store}: no store there ({'a file' if Path(store).exists() else 'no such folder'})", 1)
    report = verify_store(Store(store))
    for damage in report.damaged:
        err_console.print(f"[bold red]damaged:[/] {damage.line()}", highlight=False, soft_wrap=True)
    if report.damaged and repair:
        repair_store(Store(store), report)
    items = sum(len(d.items) for d in report.damaged)
    console.print(f"verify: {report.entries} entries in {report.outputs} output(s), {len(report.damaged)} damaged "
                  f"({items} items)" + (f"; removed {report.removed}: re-run their stages to redo them"
                                        if report.removed else ""), highlight=False)
    if report.damaged and not repair:
        raise typer.Exit(1)


@command("import")
def import_(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help="openpose | pyskl | jhmdb | miga | shrec17")],
    source: Annotated[Path, typer.Argument(help="OpenPose JSON folder (of clip folders), the pickle, the MiGA .npy "
                                                "array, or the SHREC'17 folder.")],
    store: StoreOption = Path("cache"),
    layout: Annotated[str, typer.Option(help="pyskl, miga: joint layout (a name, e.g. ma52_28, or a .json file).")
                      ] = "",
    labels: Annotated[str, typer.Option(help="miga: the label pickle of the arrays.")] = "",
    fps: Annotated[float, typer.Option(help="Frame rate for timestamps (the formats do not store it).")] = 30.0,
    dtype: Annotated[str, typer.Option(help="Stored keypoint dtype: float32 or float16.")] = "float32",
) -> None:
    """Import keypoints from OpenPose JSON, pyskl/mmaction or JHMDB pickles, or MiGA arrays into the store."""
    from pipelines.formats.params import ImportParams
    from pipelines.stages.import_poses import run_import

    params = ImportParams(format=fmt, layout=layout, labels=labels, fps=fps, dtype=dtype)
    report = run_import(source, params, Store(store))
    for error in report.failed.values():
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
    report_run("import", report, store, title=f"import {fmt}")


datasets_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                           help="Dataset clip indexes (MA-52, iMiGUE, JHMDB, pyskl, CSV, ELAN, BORIS).")
app.add_typer(datasets_app, name="datasets")


@command("show", group=datasets_app)
def datasets_show(
    name: Annotated[str, typer.Argument(help="ma52 | imigue | jhmdb | pyskl | csv | shrec17 | shrec17_28 | elan | "
                                             "boris")],
    root: Annotated[Path, typer.Argument(help="ma52: annotations folder; imigue: segment CSV; jhmdb: folder of "
                                              "GT_*.pkl; pyskl: the pickle; csv: the CSV file; elan: an .eaf or a "
                                              "folder of them; boris: an aggregated-events .tsv or a folder.")],
    protocol: Annotated[str, typer.Option(help="ma52: official, or subject (subject-disjoint train/val).")
                        ] = "official",
    split: Annotated[int, typer.Option(help="jhmdb: which of the 3 official splits.")] = 1,
    tier: Annotated[str, typer.Option(help="elan: the tier whose annotation values are the labels.")] = "",
    video_root: Annotated[Path | None, typer.Option(help="elan, boris: find videos here by file name.")] = None,
) -> None:
    """Clips per class and split, as a table."""
    from pipelines.data import datasets

    try:
        if name == "ma52":
            index = datasets.ma52(root, protocol=protocol)
        elif name == "jhmdb":
            index = datasets.jhmdb(root, split)
        elif name == "elan":
            index = datasets.elan(root, tier, video_root)
        elif name == "boris":
            index = datasets.boris(root, video_root)
        elif name in datasets.ADAPTERS:
            index = datasets.ADAPTERS[name](root)
        else:
            fail(f"unknown dataset {name!r}; known: {', '.join(datasets.ADAPTERS)}")
    except (ValueError, OSError) as e:
        fail(f"{root}: {e}")
    counts = index.counts()
    table = Table(title=f"{index.name}: {len(index.clips)} clips, {len(index.classes)} classes")
    table.add_column("class")
    for col in counts.columns:
        table.add_column(str(col), justify="right")
    for cls, row in counts.iterrows():
        table.add_row(str(cls), *(str(int(v)) for v in row))
    table.add_row("[bold]total[/]", *(f"[bold]{int(v)}[/]" for v in counts.sum()))
    console.print(table)


def _keypoint_set(store: Path, keypoints_key: str | None):
    from pipelines.formats.keypoints import KeypointSet

    return KeypointSet(Store(store), key=keypoints_key) if keypoints_key else KeypointSet(Store(store))


@command()
def tubes(
    store: StoreOption = Path("cache"),
    frames: Annotated[int, typer.Option(help="Frames sampled uniformly over each clip.")] = 16,
    size: Annotated[int, typer.Option(help="Entity crop side in pixels.")] = 112,
    global_size: Annotated[int, typer.Option(help="Side of the global frame.")] = 224,
    global_view: Annotated[str, typer.Option(help="Global frame: 'person' (a short-side square centred on the "
                                                  "person) or 'letterbox' (the whole frame on black bars).")
                           ] = "person",
    entity_set: Annotated[str, typer.Option(help="k6 (face, head, torso, hands, lower body) or k5 (no lower body).")
                          ] = "k6",
    keypoints_key: Annotated[str | None, typer.Option(help="Keypoint output to cut from (default: extract with "
                                                              "default parameters).")] = None,
    video_root: Annotated[Path | None, typer.Option(help="Find videos here by file name (a moved dataset).")
                          ] = None,
    pack_size: Annotated[int, typer.Option(help="Clips per pack (a killed run redoes at most one pack; a pack in "
                                                "progress holds ~6 MB per clip of memory at default sizes).")
                         ] = 128,
) -> None:
    """Entity crop tubes: keypoint-guided body-part crops over sampled frames, cached in sharded zarr packs."""
    from pipelines.formats.params import TubeParams
    from pipelines.stages.tubes import run_tubes

    params = TubeParams(frames=frames, size=size, global_size=global_size, global_view=global_view,
                        entity_set=entity_set, pack_size=pack_size)
    st = Store(store).require()
    with progress_bar() as bar:
        report = run_tubes(st, params, _keypoint_set(store, keypoints_key), None, video_root,
                           bar)
    report_run("tubes", report, store, f"; {report.packs} pack(s)")


@command()
def show(
    clip: Annotated[str, typer.Argument(help="Clip name (video stem).")],
    store: StoreOption = Path("cache"),
    out: Annotated[Path | None, typer.Option(help="PNG to write (default: <store>/show/<clip>.png).")] = None,
    frames: Annotated[int, typer.Option(help="Tubes of which --frames setting.")] = 16,
    size: Annotated[int, typer.Option(help="Tubes of which --size setting.")] = 112,
    entity_set: Annotated[str, typer.Option(help="Tubes of which --entity-set.")] = "k6",
    keypoints_key: Annotated[str | None, typer.Option(help="Keypoint output the tubes were cut from.")] = None,
) -> None:
    """A PNG of one clip: sampled frames with skeleton and entity boxes, and the K tubes across time."""
    from pipelines.formats.params import TubeParams
    from pipelines.formats.tube_packs import TubeSet
    from pipelines.report.show import render_clip

    params = TubeParams(frames=frames, size=size, entity_set=entity_set)
    tube_set = TubeSet(Store(store).require(), params, _keypoint_set(store, keypoints_key))
    path = render_clip(tube_set, clip, out or Path(store) / "show" / f"{clip}.png")
    print(path)


def _load_index(dataset: str, root: Path, protocol: str, split: int):
    from pipelines.data.datasets import load_index

    return load_index(dataset, root, protocol, split)


def _labelled(index, split: str, available: set[str], fine_to_coarse: bool, unlabelled: bool = False):
    from pipelines.data.datasets import labelled_clips

    return labelled_clips(index, split, available, fine_to_coarse, unlabelled)


@command()
def train(
    dataset: Annotated[str, typer.Option(help="ma52 | imigue | jhmdb | pyskl | csv | shrec17 | shrec17_28 (clip "
                                              "labels and splits).")],
    root: Annotated[Path, typer.Option(help="The dataset's list/CSV/annotations (as for `datasets show`).")],
    store: StoreOption = Path("cache"),
    preset: Annotated[str, typer.Option(help="Model preset: paper | r50 | small | tiny (on tubes) | pose | "
                                             "pose_tiny (keypoints alone).")] = "paper",
    split: Annotated[int, typer.Option(help="jhmdb: which of the 3 official splits.")] = 1,
    frames: Annotated[int, typer.Option(help="T, frames per clip the model sees (0: the preset's).")] = 0,
    flip: Annotated[float, typer.Option(help="Probability of a horizontal flip in training (0 where left and right "
                                             "are the classes, as in swipes).")] = 0.5,
    test_flip: Annotated[bool | None, typer.Option(help="Pose presets: evaluate each clip and its mirror image, "
                                                        "logits averaged (default: when --flip > 0).")] = None,
    rotate: Annotated[float, typer.Option(help="Pose presets: turn each training clip in the image plane by a "
                                               "random angle in [-ROTATE, ROTATE] degrees.")] = 0.0,
    keypoints_key: Annotated[str | None, typer.Option(help="pose presets: the keypoint output to train on (default: "
                                                              "the one holding the most of the clips).")] = None,
    depth: Annotated[bool | None, typer.Option("--depth/--no-depth", help="Pose presets: use each joint's depth z "
                                                                          "(default: when every clip has it, as a "
                                                                          "SHREC'17 import does).")] = None,
    train_split: Annotated[str, typer.Option(help="Split to train on.")] = "train",
    val_split: Annotated[str, typer.Option(help="Split to validate on ('' for none).")] = "val",
    protocol: Annotated[str, typer.Option(help="ma52: official or subject.")] = "official",
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Clips per batch.")] = 8,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    optimizer: Annotated[str, typer.Option(help="adamw | sgd.")] = "adamw",
    balance: Annotated[str, typer.Option(help="none | reweight | sample (long-tailed classes).")] = "reweight",
    class_weights: Annotated[str, typer.Option(help="With reweight: inverse | sqrt | effective (class frequency).")
                             ] = "inverse",
    backbone_lr: Annotated[float, typer.Option(help="Backbone learning rate, in multiples of --lr.")] = 0.1,
    pretrained: Annotated[str, typer.Option(help="Backbone start: imagenet (the paper, r50, small presets' "
                                                 "default), a torchvision-keyed .pth path or URL, or none.")] = "",
    accumulate: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    tubes_frames: Annotated[int, typer.Option(help="Tubes of which --frames setting.")] = 16,
    tubes_size: Annotated[int, typer.Option(help="Tubes of which --size setting.")] = 112,
    tubes_view: Annotated[str, typer.Option(help="Tubes of which --global-view setting.")] = "person",
    entity_set: Annotated[str, typer.Option(help="k6 | k5 | hand | auto (k6 for tubes; for pose, the set that fits "
                                                 "the layout).")] = "auto",
    allow_missing: Annotated[bool, typer.Option("--allow-missing", help="Train even when over 1% of a split's "
                                                                       "clips have no tubes.")] = False,
) -> None:
    """Train Micro-DualNet on cached tubes, or a pose preset on keypoints alone (resumes a killed run; a finished
    run is reused, not redone)."""
    import dualnet
    from pipelines.data.datasets import check_coverage, require_classes
    from pipelines.experiment import choose_depth, choose_entity_set, clip_source, source_layout
    from pipelines.formats.params import TrainParams, TubeParams
    from pipelines.stages.train import train as run_train

    index = _load_index(dataset, root, protocol, split)
    require_classes(index, train_split, root)
    uses_rgb = dualnet.preset(preset).uses_rgb
    if test_flip and uses_rgb:
        fail(f"--test-flip: preset {preset!r} trains on tubes; the test-time flip is for pose presets")
    if rotate and uses_rgb:
        fail(f"--rotate: preset {preset!r} trains on tubes; rotating clips is for pose presets")
    if depth and uses_rgb:
        fail(f"--depth: preset {preset!r} trains on tubes (x, y); depth is for pose presets on a 3D keypoint source")
    st = Store(store).require()
    chosen, why = entity_set, ""
    if uses_rgb:  # tubes are cut for one entity set: auto means the tubes' default
        chosen, why = choose_entity_set(entity_set, "", True)
    tube_params = (TubeParams(frames=tubes_frames, size=tubes_size, global_view=tubes_view, entity_set=chosen)
                   if uses_rgb else None)
    source = clip_source(st, index, uses_rgb, tube_params, keypoints_key)
    layout = source_layout(source)
    if not uses_rgb:
        chosen, why = choose_entity_set(entity_set, layout, False)
        console.print(f"keypoints: {source.output.stage} {source.output.key} (layout {layout})", highlight=False)
    console.print(why, highlight=False)
    available = set(source.names())
    for part in (train_split, val_split) if val_split else (train_split,):
        console.print(check_coverage(index, part, available, root, allow_missing), highlight=False)
    train_clips = _labelled(index, train_split, available, True)
    if train_clips is None:
        fail(f"{root}: no labelled clip of split {train_split!r} is in {source.output.path}")
    val_clips = _labelled(index, val_split, available, True) if val_split else None
    num_coarse = len(index.coarse_classes) if train_clips.coarse is not None else 0
    overrides = {"pretrained": pretrained} if pretrained else {}
    use_depth, why_depth = choose_depth(depth, source, list(train_clips.names) + list(val_clips.names if val_clips
                                                                                      else ()), uses_rgb)
    if use_depth:
        overrides["pose_depth"] = True
    if why_depth:
        console.print(why_depth, highlight=False)
    if frames:
        overrides["num_frames"] = frames
    config = dualnet.preset(preset, num_classes=len(index.classes), num_coarse=num_coarse, entity_set=chosen,
                            layout=layout, **overrides)
    params = TrainParams(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, balance=balance,
                         class_weights=class_weights, backbone_lr=backbone_lr, accumulate=accumulate, seed=seed,
                         flip=flip, test_flip=(flip > 0 and not uses_rgb) if test_flip is None else test_flip,
                         rotate=rotate)
    with progress_bar() as bar:
        result = run_train(config, source, train_clips, val_clips, params, st,
                           bar, num_workers=workers, classes=list(index.classes))
    verb = "already trained" if result.reused else f"trained {result.epochs_run} epoch(s)"
    console.print(f"train [bold]{result.key}[/]: {verb} -> {result.run_dir}", highlight=False)


@command("eval")
def eval_(
    dataset: Annotated[str, typer.Option(help="ma52 | imigue | jhmdb | pyskl | csv.")],
    root: Annotated[Path, typer.Option(help="The dataset's list/CSV/annotations.")],
    store: StoreOption = Path("cache"),
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "val",
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: best.pt of the latest train run).")
                          ] = None,
    protocol: Annotated[str, typer.Option(help="ma52: official or subject.")] = "official",
    submission: Annotated[bool, typer.Option("--submission", help="Also write the MA-52 test-server CSV; "
                                                                  "unlabelled splits (MA-52 test) give only it.")
                          ] = False,
    tubes_frames: Annotated[int, typer.Option(help="Tubes of which --frames setting.")] = 16,
    tubes_size: Annotated[int, typer.Option(help="Tubes of which --size setting.")] = 112,
    tubes_view: Annotated[str, typer.Option(help="Tubes of which --global-view setting.")] = "person",
    entity_set: Annotated[str, typer.Option(help="Tubes of which entity set (auto: the checkpoint's).")] = "auto",
    keypoints_key: Annotated[str | None, typer.Option(help="pose checkpoints: the keypoint output to evaluate on "
                                                              "(default: the one it was trained on, if here).")
                             ] = None,
    dataset_split: Annotated[int, typer.Option("--jhmdb-split", help="jhmdb: which of the 3 official splits.")] = 1,
    allow_missing: Annotated[bool, typer.Option("--allow-missing", help="Evaluate even when over 1% of the split's "
                                                                       "clips have no tubes (never for a "
                                                                       "submission).")] = False,
) -> None:
    """Evaluate a trained model: metrics (Top-1/5, F1, MA-52's F1_mean), per-class table, report, submission CSV."""
    import numpy as np

    from pipelines.formats.checkpoints import latest_checkpoint
    from pipelines.formats.params import TubeParams
    from pipelines.formats.tube_packs import TubeSet
    from pipelines.stages.evaluate import new_report_folder, run_eval

    st = Store(store).require()
    index = _load_index(dataset, root, protocol, dataset_split)
    if checkpoint is None:
        if st.refs().get("train") is None:
            fail(f"{store}: no training run yet; pass --checkpoint")
        checkpoint = latest_checkpoint(st, index.classes)  # one trained on this dataset's classes
        console.print(f"checkpoint: {checkpoint}", highlight=False)
    if not checkpoint.is_file():
        fail(f"{checkpoint}: checkpoint not found")
    from pipelines.experiment import clip_source
    from pipelines.formats.checkpoints import load_checkpoint

    _, state = load_checkpoint(checkpoint)
    trained = state["config"]
    if trained.get("modality") == "pose":  # keypoints alone: the output it trained on when this store has it
        recorded = ((state.get("data") or {}).get("keypoints") or {}).get("key")
        here = recorded if recorded and any(o.key == recorded for o in st.outputs()) else None
        tubes = clip_source(st, index, False, None, keypoints_key or here)
    else:
        chosen = trained.get("entity_set", "k6") if entity_set == "auto" else entity_set
        tubes = TubeSet(st, TubeParams(frames=tubes_frames, size=tubes_size, global_view=tubes_view,
                                       entity_set=chosen))
    available = set(tubes.names())
    from pipelines.data.datasets import MAX_MISSING, check_coverage

    # a test-server submission must hold every clip of the split: none may be missing
    console.print(check_coverage(index, split, available, root, allow_missing and not submission,
                                 0.0 if submission else MAX_MISSING), highlight=False)
    clips = _labelled(index, split, available, True, unlabelled=submission)
    if clips is None:
        fail(f"{root}: no clip of split {split!r} is in {tubes.output.path}")
    fine_to_coarse = None
    if index.coarse_classes:
        mapping = {c.label: c.coarse for c in index.clips if c.label is not None and c.coarse is not None}
        fine_to_coarse = np.array([mapping.get(i, 0) for i in range(len(index.classes))])
    from pipelines.data.datasets import item_name

    by_stem = {item_name(c): Path(c.source).name for c in index.split(split)}
    ids = [by_stem[n] for n in clips.names] if submission else None
    out_dir = new_report_folder(checkpoint.parent, split)
    if submission and all(label < 0 for label in clips.labels):
        from pipelines.stages.evaluate import predict_submission

        path = predict_submission(checkpoint, tubes, clips, fine_to_coarse, ids, out_dir, classes=index.classes)
        console.print(f"submission -> {path}", highlight=False)
        return
    result = run_eval(checkpoint, tubes, clips, index.classes, out_dir, index.coarse_classes or None,
                      fine_to_coarse, ids)
    for note in result.notes:
        err_console.print(f"[yellow]note:[/] {checkpoint}: {note}", highlight=False, soft_wrap=True)
    for key, value in result.metrics.items():
        console.print(f"{key:>16}: {100 * value:6.2f}%", highlight=False)
    if result.submission is not None:
        console.print(f"submission -> {result.submission}", highlight=False)
    console.print(f"report -> {result.report_html}", highlight=False)
    print(result.report_html)


@command()
def predict(
    inputs: Annotated[list[str], typer.Argument(help="Videos (any length), folders, globs or list files.")],
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint `dualnet train` wrote (best.pt / last.pt).")],
    store: StoreOption = Path("cache"),
    window: Annotated[float, typer.Option(help="Window length in seconds.")] = 2.0,
    stride: Annotated[float, typer.Option(help="Seconds between window starts.")] = 0.5,
    min_score: Annotated[float, typer.Option(help="Windows whose top-1 score is below this join no segment.")
                         ] = 0.0,
    top_k: Annotated[int, typer.Option(help="Labels listed per segment.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Windows per model call.")] = 8,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: <store>/predict/<key>/results).")] = None,
    people: Annotated[Path | None, typer.Option(help="CSV video,person[,group]: also summarise per person.")
                      ] = None,
    plot: Annotated[bool, typer.Option(help="Write a timeline PNG per video.")] = True,
    elan: Annotated[bool, typer.Option("--elan", help="Also write an ELAN .eaf per video (a tier per label).")
                    ] = False,
    boris: Annotated[bool, typer.Option("--boris", help="Also write BORIS aggregated events per video (.tsv).")
                     ] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 ...")] = "cpu",
) -> None:
    """Micro-action timelines of long videos: pose -> sliding windows -> model -> segments and per-video summary."""
    from pipelines.experiment import run_predict
    from pipelines.stages.predict import PredictParams

    params = PredictParams(window=window, stride=stride, min_score=min_score, top_k=top_k,
                           batch_size=batch_size, elan=elan, boris=boris)
    with progress_bar() as bar:
        report = run_predict(inputs, checkpoint, Store(store), params, out, people, plot, device,
                             bar, bar)
    for video in report.videos:
        counts = ", ".join(f"{r.label} x{r.count}" for r in video.summary.itertuples()) or "no segment"
        console.print(f"{video.name}: {len(video.timeline)} segment(s) in {video.duration_s:.1f} s ({counts}) -> "
                      f"{video.files['timeline_csv'].parent}", highlight=False)
    if report.people is not None:
        console.print(f"per person -> {report.people}", highlight=False)
    console.print(f"predict [bold]{report.key}[/]: {len(report.videos)} video(s), {len(report.failed)} failed in "
                  f"{report.seconds:.1f} s", highlight=False)
    if report.failed:
        raise typer.Exit(1)


@command()
def agree(
    predicted: Annotated[Path, typer.Argument(help="A `dualnet predict` result folder of one video (or its "
                                                   "timeline.csv / .parquet).")],
    truth: Annotated[Path, typer.Argument(help="The video's annotations: an ELAN .eaf (with --tier) or BORIS "
                                               "aggregated events (.tsv / .csv).")],
    tier: Annotated[str, typer.Option(help="ELAN: the tier whose annotation values are the labels.")] = "",
    bin_s: Annotated[float, typer.Option("--bin", help="Seconds per time bin of Cohen's kappa.")] = 0.1,
    iou: Annotated[float, typer.Option(help="Temporal IoU at which a predicted and an annotated segment match.")
                   ] = 0.5,
    out: Annotated[Path | None, typer.Option(help="Folder for agreement.csv / .json and review.html (default: the "
                                                  "timeline's).")] = None,
    video_root: Annotated[Path | None, typer.Option(help="Find the video (for review.html) here by file name.")
                          ] = None,
) -> None:
    """Agreement of a predicted timeline with a lab's annotations: per-label segment precision / recall at an IoU,
    counts and seconds each side, and Cohen's kappa over time bins."""
    from pipelines.report.agreement import agree_files

    result, files, note = agree_files(predicted, truth, tier or None, bin_s, iou, out, video_root)
    table = Table(title=f"segments matched at IoU >= {iou:g}")
    for col in ("label", "annotated", "predicted", "matched", "precision", "recall", "annotated s", "predicted s"):
        table.add_column(col, justify="left" if col == "label" else "right")

    def share(x: float) -> str:
        return "-" if x != x else f"{x:.2f}"

    for r in result.table.itertuples():
        table.add_row(r.label, str(r.annotated), str(r.predicted), str(r.matched), share(r.precision),
                      share(r.recall), f"{r.annotated_s:.1f}", f"{r.predicted_s:.1f}")
    console.print(table)
    kappa = "undefined (one category throughout)" if result.kappa != result.kappa else f"{result.kappa:.3f}"
    console.print(f"Cohen's kappa over {result.bins} bins of {bin_s:g} s: {kappa} (observed agreement "
                  f"{result.observed:.3f}) -> {files['csv']}", highlight=False)
    if note:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    else:
        console.print(f"review page (both tracks) -> {files['review']}", highlight=False)


@command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint `dualnet train` wrote.")],
    onnx: Annotated[Path, typer.Option("--onnx", help="ONNX file to write (a .json with inputs and classes goes "
                                                      "beside it).")],
    check: Annotated[bool, typer.Option(help="Run ONNX Runtime and torch on a random batch and compare.")] = True,
) -> None:
    """Export a trained model to ONNX for inference without the training stack."""
    from pipelines.stages.export import compare_onnx, export_onnx

    path = export_onnx(checkpoint, onnx)
    if check:
        diff = compare_onnx(checkpoint, path)
        console.print(f"ONNX Runtime vs torch on a batch of 3: max |logit difference| = {diff:.2e}",
                      highlight=False)
        if diff > 1e-4:
            fail(f"{path}: ONNX Runtime and torch disagree by {diff:.2e} (> 1e-4)", 1)
    print(path)


@command()
def run(
    config: Annotated[Path, typer.Argument(help="Experiment TOML (configs/ma52.toml, configs/imigue.toml).")],
    root: Annotated[Path, typer.Option(help="The dataset's root folder (the paths in [dataset] are under it).")],
    store: StoreOption = Path("cache"),
    stages: Annotated[str, typer.Option(help="Comma-separated: cut, extract, tubes, train, eval.")
                      ] = "cut,extract,tubes,train,eval",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: table.field=value (repeatable).")
                    ] = None,
    workers: Annotated[int, typer.Option(help="DataLoader workers in train and eval.")] = 0,
) -> None:
    """Every stage of an experiment from a TOML config; each stage resumes and skips what is done."""
    from pipelines.experiment import load_config, run_config

    try:
        cfg = load_config(config, set_ or [])
        report = run_config(cfg, root, store, [s.strip() for s in stages.split(",") if s.strip()], workers)
    except (ValueError, KeyError, TypeError) as e:
        fail(f"{config}: {one_line(e)}")
    for line in report.lines:
        console.print(line, highlight=False)


@command("demo-data")
def demo_data(
    dest: Annotated[Path, typer.Option(help="Where downloaded clips go.")] = Path("cache/demo/ma52"),
    offline: Annotated[bool, typer.Option(help="Do not try the network; use a local copy.")] = False,
    csv: Annotated[Path | None, typer.Option(help="Also write a clips CSV (labels from the clip codes) here.")
                   ] = None,
) -> None:
    """Get the 6 MA-52 sample clips (download with sha256 check, else a local copy); prints their folder."""
    from pipelines.io.demo_data import fetch_demo_clips, write_demo_csv

    folder, origin = fetch_demo_clips(dest, allow_download=not offline)
    if csv is not None:
        write_demo_csv(folder, csv)
    err_console.print(f"demo clips from {origin}", highlight=False)
    print(folder)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted: finished items are kept; re-run to resume")
        sys.exit(130)
    except OSError as e:  # a disk fault no stage turned into a StoreError: still one line, never a traceback
        where = e.filename or "the store"
        err_console.print(f"[bold red]error:[/] {where}: {e.strerror or e}", highlight=False, soft_wrap=True)
        sys.exit(2)
