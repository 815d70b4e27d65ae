"""`dualnet run CONFIG.toml`: every stage of one experiment from a TOML file (``configs/ma52.toml``,
``configs/imigue.toml``), each stage resumable and content-hashed as when run alone.

Tables: ``[dataset]`` (name, protocol, lists/CSV relative to the dataset root, where the videos are), ``[extract]``,
``[keypoints]`` (``import = "openpose"`` with a pose preset: import the dataset's own skeletons instead of running
``extract``; ``folder`` under the root, ``fps``), ``[tubes]``, ``[model]`` (a preset plus any ModelConfig field),
``[train]`` (TrainParams fields, plus ``train_split``/``val_split``) and ``[eval]`` (split, submission). ``--set
table.field=value`` overrides any value (the value is read as TOML, so ``--set train.epochs=2`` is an integer and
``--set model.preset=tiny`` a string).

Stages in order: ``cut`` (segments of long videos into clip files; datasets whose clips are frame ranges),
``extract``, ``tubes``, ``train``, ``eval``. ``train`` alone may run under torchrun (several GPUs); the other stages
are single-process and must not.

This module is the one place that chains stages (a stage never imports another): ``run_predict`` gives the
``predict`` stage the ``extract`` stage it runs first.
"""

from __future__ import annotations

import copy
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.errors import InputError

if TYPE_CHECKING:
    from pipelines.progress import Progress
    from pipelines.stages.predict import PredictParams, PredictReport
    from pipelines.store import Store

STAGES = ("cut", "extract", "tubes", "train", "eval")


def load_config(path: str | Path, overrides: list[str] = ()) -> dict:
    """The TOML file as a dict, with ``table.field=value`` overrides applied."""
    path = Path(path)
    try:
        config = tomllib.loads(path.read_text())
    except OSError as e:
        raise InputError(path, e.strerror or "cannot be read") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(path, f"not valid TOML ({e})") from None
    config = copy.deepcopy(config)
    for item in overrides:
        name, sep, text = item.partition("=")
        table, dot, key = name.strip().partition(".")
        if not sep or not dot or not key:
            raise InputError(path, f"override {item!r} is not table.field=value")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()  # a bare word: a string
        config.setdefault(table, {})[key] = value
    for table in config:
        if table not in ("dataset", "extract", "keypoints", "tubes", "model", "train", "eval"):
            raise InputError(path, f"unknown table [{table}]")
    return config


@dataclass
class RunReport:
    """What each stage did (one line each) and where its results are."""

    lines: list[str] = field(default_factory=list)
    report: Path | None = None
    submission: Path | None = None
    checkpoint: Path | None = None


def _index(config: dict, root: Path):
    from pipelines.data.datasets import imigue, load_index

    ds = config.get("dataset", {})
    name = ds.get("name")
    if name is None:
        raise InputError("config", "[dataset] needs a name (ma52, imigue, jhmdb, pyskl, csv, elan, boris)")
    if name == "imigue":
        classes = root / ds["classes"] if ds.get("classes") else None
        return imigue(root / ds.get("segments", "segments.csv"), root / ds.get("videos", "videos"), classes,
                      ds.get("test_subjects"))
    if name == "ma52":
        return load_index("ma52", root / ds.get("annotations", "annotations"), ds.get("protocol", "official"),
                          video_root=root / ds.get("videos", "videos"))
    if name in ("elan", "boris"):  # a lab's annotations of long videos: clips cut by time range, as iMiGUE's
        from pipelines.data.datasets import boris, elan

        videos = root / ds["videos"] if ds.get("videos") else None
        fraction = float(ds.get("val_fraction", 0.25))
        if name == "elan":
            return elan(root / ds.get("annotations", ""), ds.get("tier"), videos, fraction)
        return boris(root / ds.get("annotations", ""), videos, fraction)
    return load_index(name, root / ds.get("annotations", ""), ds.get("protocol", "official"), ds.get("split", 1))


def _clip_videos(config: dict, root: Path, store: Path, index) -> tuple[list[str], list[str]]:
    """Video files of every clip (segments: their cut files) and the cut step's report lines."""
    segmented = [c for c in index.clips if c.start is not None or c.end is not None]
    if not segmented:
        return sorted({c.source for c in index.clips}), []
    from pipelines.stages.cut import cut_segments

    files, failed = cut_segments(segmented, store / "clips" / index.name)
    lines = [f"cut: {len(files)} segment clip(s) in {store / 'clips' / index.name}, {len(failed)} failed"]
    lines += [f"  {msg}" for msg in list(failed.values())[:5]]
    return [str(f) for f in files], lines


def clip_source(store: Store, index, uses_rgb: bool, tube_params=None, keypoints_key: str | None = None):
    """Where a run's clips come from: cached tubes (a TubeSet of `tube_params`) for image modalities; for pose
    alone, the keypoint output (extract or import; `keypoints_key` picks one) holding the most of the dataset's
    clips: no tubes needed."""
    from pipelines.data.datasets import item_name
    from pipelines.formats.keypoints import keypoint_source
    from pipelines.formats.params import TubeParams
    from pipelines.formats.tube_packs import TubeSet

    if uses_rgb:
        return TubeSet(store, tube_params or TubeParams())
    return keypoint_source(store, [item_name(c) for c in index.clips], keypoints_key)


def source_layout(source) -> str:
    """The keypoint layout of a run's clips (tubes carry it per clip; keypoint outputs per item)."""
    from pipelines.formats.keypoints import KeypointSet, keypoint_layout

    if isinstance(source, KeypointSet):
        return keypoint_layout(source)
    return source.load(source.names()[0])["meta"]["layout"]


def choose_entity_set(requested: str, layout: str, uses_rgb: bool) -> tuple[str, str]:
    """The entity set to train with, and a line saying why: the one asked for, else (``auto``) k6 for tubes (cut
    with it by default) and, for pose alone, the set that fits the layout (`entities.entity_set_for`)."""
    from dualnet.entities import entity_set_for, get_entity_set
    from dualnet.layouts import get_layout

    if requested != "auto":
        get_entity_set(requested)
        return requested, f"entity set: {requested}"
    if uses_rgb:
        return "k6", "entity set: k6 (the tubes' default)"
    chosen = entity_set_for(get_layout(layout))
    return chosen, f"entity set: {chosen} (chosen for layout {layout})"


def choose_depth(requested: bool | None, source, names: list[str], uses_rgb: bool, option: str = "--depth"
                 ) -> tuple[bool, str]:
    """Whether the model takes depth (z), and a line saying why: asked for (`requested`), else (None) whenever the
    preset trains on keypoints alone and every clip `names` of the keypoint output `source` has depth (a 3D import
    such as SHREC'17). Depth asked for a tube preset, or for clips without depth, is an InputError naming `option`
    (the switch that asked for it)."""
    if uses_rgb:
        if requested:
            raise InputError(option, "depth (z) is for pose presets on a 3D keypoint source; this preset trains on "
                                     "tubes (x, y)")
        return False, ""
    has = source.has_depth(list(names))
    flat = [] if has else [n for n in names if not source.attributes(n).get("depth")]
    if requested and not has:
        left_out = "depth left out" in str(source.attributes(flat[0]).get("coordinates", ""))
        raise InputError(option, f"the keypoints ({source.output.stage} {source.output.key}) carry no depth (z) "
                                 f"for {len(flat)} of the {len(names)} clips, e.g. {flat[0]!r}: "
                                 + ("they were imported before depth was kept: import them again" if left_out else
                                    "depth needs a 3D source (import shrec17, or a pyskl pickle of (M, T, V, 3) "
                                    "x, y, z)"))
    if requested is None:
        if has:
            return True, "depth: z from the keypoints (every clip has it)"
        if len(flat) < len(names):  # some clips have depth: say why the model does without it
            return False, (f"depth: left out ({len(flat)} of the {len(names)} clips have none, e.g. {flat[0]!r}; "
                           f"{option} makes this an error)")
        return False, ""
    return requested, ("depth: z from the keypoints" if requested else
                       "depth: left out (the keypoints have it)" if has else "")


def _import_params(config: dict):
    """The ImportParams of ``[keypoints] import = ...`` (pose alone from a dataset's own skeletons), or None."""
    from pipelines.formats.params import ImportParams

    table = dict(config.get("keypoints", {}))
    fmt = table.pop("import", None)
    if fmt is None:
        return None
    table.pop("folder", None)
    unknown = set(table) - {"fps", "layout", "dtype"}
    if unknown:
        raise InputError("config", f"keypoints table: unknown field(s) {', '.join(sorted(unknown))} (known: "
                                   "import, folder, fps, layout, dtype)")
    return ImportParams(fmt, **table)


def _segments(index) -> dict[str, tuple[str, int, int]]:
    """Clips cut by frame range from a longer item: clip item name -> (source item, start, end)."""
    from pipelines.data.datasets import item_name

    return {item_name(c): (Path(c.source).stem, c.start or 0, c.end) for c in index.clips
            if c.end is not None}


def run_config(config: dict, root: str | Path, store: str | Path, stages: list[str] | None = None,
               workers: int = 0) -> RunReport:
    """Run `stages` (default: all) of the experiment `config` describes on the dataset at `root`."""
    import dualnet
    from pipelines.data.datasets import check_coverage, labelled_clips
    from pipelines.formats.keypoints import KeypointSet, keypoint_layout
    from pipelines.formats.params import ExtractParams, TrainParams, TubeParams
    from pipelines.formats.tube_packs import TubeSet
    from pipelines.stages.extract import run_extract
    from pipelines.stages.train import train
    from pipelines.stages.tubes import run_tubes
    from pipelines.store import Store

    root, store_path = Path(root), Path(store)
    stages = list(stages or STAGES)
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(sorted(unknown))}; stages: {', '.join(STAGES)}")
    st = Store(store_path)
    report = RunReport()
    index = _index(config, root)
    ext = dict(config.get("extract", {}))
    extract_workers = int(ext.pop("workers", 1))
    extract_params = ExtractParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in ext.items()})
    tube_params = TubeParams(**config.get("tubes", {}))
    train_cfg = dict(config.get("train", {}))
    train_split, val_split = train_cfg.pop("train_split", "train"), train_cfg.pop("val_split", "val")
    allow_missing = bool(train_cfg.pop("allow_missing", False))  # see datasets.check_coverage
    params = TrainParams(**train_cfg)
    model_cfg = dict(config.get("model", {}))
    name = model_cfg.pop("preset", "paper")
    uses_rgb = dualnet.preset(name).uses_rgb  # a pose preset trains on the keypoints: no tubes to cut
    if params.test_flip and uses_rgb:
        raise InputError("config", f"train.test_flip: preset {name!r} trains on tubes; the test-time flip is for "
                                   "pose presets")
    if params.rotate and uses_rgb:
        raise InputError("config", f"train.rotate: preset {name!r} trains on tubes; rotating clips is for pose "
                                   "presets")
    imported = _import_params(config)
    if imported is not None and uses_rgb:
        raise InputError("config", f"keypoints.import trains on keypoints alone: it needs a pose preset "
                                   f"(model.preset = \"pose\"), not {name!r}")
    if imported is not None:  # the dataset's own skeletons stand in for cut + extract
        if "cut" in stages or "extract" in stages:
            from pipelines.stages.import_poses import run_import

            folder = root / config["keypoints"].get("folder", "skeletons")
            r = run_import(folder, imported, st)
            report.lines.append(f"import {r.key}: {len(r.processed)} processed, {len(r.skipped)} skipped, "
                                f"{len(r.failed)} failed ({r.seconds:.0f} s)")
    elif "cut" in stages or "extract" in stages:
        videos, lines = _clip_videos(config, root, store_path, index)
        report.lines += lines
        if "extract" in stages:
            r = run_extract(videos, st, extract_params, workers=extract_workers)
            report.lines.append(f"extract {r.key}: {len(r.processed)} processed, {len(r.skipped)} skipped, "
                                f"{len(r.failed)} failed ({r.seconds:.0f} s)")
    keypoints = None
    if "tubes" in stages and not uses_rgb:
        report.lines.append(f"tubes: not needed (preset {name} trains on keypoints alone)")
    elif "tubes" in stages:
        keypoints = KeypointSet(st, extract_params)
        r = run_tubes(st, tube_params, keypoints)
        report.lines.append(f"tubes {r.key}: {len(r.processed)} processed, {len(r.skipped)} skipped, "
                            f"{len(r.failed)} failed ({r.seconds:.0f} s)")
    if "train" in stages or "eval" in stages:
        keypoints = keypoints or KeypointSet(st, imported or extract_params)
        layout = extract_params.layout
        if imported is not None:
            layout = keypoint_layout(keypoints)
            segments = _segments(index)
            keypoints = keypoints.cut(segments) if segments else keypoints  # iMiGUE: segments of long sessions
        tubes = TubeSet(st, tube_params, keypoints) if uses_rgb else keypoints
        entity_set = model_cfg.pop("entity_set", tube_params.entity_set if uses_rgb else "auto")
        entity_set, why = choose_entity_set(entity_set, layout, uses_rgb)
        if not uses_rgb:
            report.lines.append(why)
        available = set(tubes.names())
        for split in (train_split, val_split) if val_split else (train_split,):
            report.lines.append(check_coverage(index, split, available, root, allow_missing))
        train_clips = labelled_clips(index, train_split, available)
        if train_clips is None:
            raise InputError(root, f"no labelled clip of split {train_split!r} is in {tubes.output.path}")
        val_clips = labelled_clips(index, val_split, available) if val_split else None
        depth, why = choose_depth(model_cfg.pop("pose_depth", None), tubes,
                                  list(train_clips.names) + list(val_clips.names if val_clips else ()), uses_rgb,
                                  "model.pose_depth")
        if why:
            report.lines.append(why)
        if depth:
            model_cfg["pose_depth"] = True
        coarse_head = model_cfg.pop("coarse_head", True) and train_clips.coarse is not None
        model = dualnet.preset(name, **{"num_classes": len(index.classes),
                                        "num_coarse": len(index.coarse_classes) if coarse_head else 0,
                                        "entity_set": entity_set,
                                        "layout": layout, **model_cfg})
        if not coarse_head:
            train_clips = type(train_clips)(train_clips.names, train_clips.labels, None)
        result = train(model, tubes, train_clips, val_clips, params, st, num_workers=workers,
                       classes=list(index.classes)) if "train" in stages else None
        if result is not None:
            verb = "already trained" if result.reused else f"trained {result.epochs_run} epoch(s)"
            report.lines.append(f"train {result.key}: {verb} -> {result.run_dir}")
        run_dir = result.run_dir if result is not None else None
        if run_dir is None:
            from pipelines.stages.train import run_key

            run_dir = st.stage("train", run_key(model, params, tubes, train_clips, val_clips)).path
        report.checkpoint = run_dir / _checkpoint_file(config, run_dir)
        if "eval" in stages:
            _evaluate(config, index, tubes, available, report)
    return report


def _checkpoint_file(config: dict, run_dir: Path) -> str:
    """``[eval] checkpoint``: ``best`` (selected on the validation split) or ``last`` (the final epoch; for datasets
    whose only held-out split is the test split, such as iMiGUE, where choosing on it would select on the test)."""
    which = config.get("eval", {}).get("checkpoint", "best")
    if which not in ("best", "last"):
        raise ValueError(f"[eval] checkpoint {which!r} is not best or last")
    return "best.pt" if which == "best" and (run_dir / "best.pt").exists() else "last.pt"


def _evaluate(config: dict, index, tubes, available: set[str], report: RunReport) -> None:
    import numpy as np

    from pipelines.data.datasets import check_coverage, item_name, labelled_clips
    from pipelines.stages.evaluate import new_report_folder, predict_submission, run_eval

    ev = config.get("eval", {})
    checkpoint = report.checkpoint
    if not checkpoint.is_file():
        raise InputError(checkpoint, "no checkpoint: run the train stage first")
    fine_to_coarse = None
    if index.coarse_classes:
        mapping = {c.label: c.coarse for c in index.clips if c.label is not None and c.coarse is not None}
        fine_to_coarse = np.array([mapping.get(i, 0) for i in range(len(index.classes))])
    split = ev.get("split", "val")
    clips = labelled_clips(index, split, available)
    if clips is not None:
        out_dir = new_report_folder(checkpoint.parent, split)
        result = run_eval(checkpoint, tubes, clips, index.classes, out_dir, index.coarse_classes or None,
                          fine_to_coarse)
        report.report = result.report_html
        metrics = ", ".join(f"{k} {100 * v:.2f}" for k, v in result.metrics.items() if "top" in k or "f1_mean" in k)
        report.lines.append(f"eval {split}: {metrics} -> {result.report_html}")
        (out_dir / "run.json").write_text(json.dumps(result.metrics, indent=2) + "\n")
    submission_split = ev.get("submission_split")
    if submission_split:
        # a submission holds every clip of its split: none may be missing
        check_coverage(index, submission_split, available, f"{index.name} split {submission_split!r}", limit=0.0)
        test = labelled_clips(index, submission_split, available, unlabelled=True)
        if test is not None:
            ids = {item_name(c): Path(c.source).name for c in index.split(submission_split)}
            report.submission = predict_submission(checkpoint, tubes, test, fine_to_coarse,
                                                   [ids[n] for n in test.names],
                                                   new_report_folder(checkpoint.parent, submission_split),
                                                   classes=index.classes)
            report.lines.append(f"submission ({submission_split}, {len(test.names)} clips) -> {report.submission}")


def run_predict(inputs: list[str], checkpoint: str | Path, store: Store | str | Path | None = None,
                params: PredictParams | None = None, out_dir: str | Path | None = None,
                people: str | Path | None = None, plot: bool = True, device: str = "cpu",
                progress: Progress | None = None, extract_progress=None) -> PredictReport:
    """`dualnet predict`: the `predict` stage (`pipelines.stages.predict.run_predict`, same arguments), given the
    `extract` stage it runs first for the videos' pose (cached), since a stage never imports another."""
    from pipelines.stages import predict
    from pipelines.stages.extract import run_extract

    return predict.run_predict(inputs, checkpoint, store, params or predict.PredictParams(), out_dir, people, plot,
                               device, progress, extract_progress, extract=run_extract)
