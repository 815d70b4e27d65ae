"""The pose stream on real skeleton benchmarks, CPU only, with a plain temporal CNN measured in the same run.

    python bench/bench_pose.py --out bench/results/pose.json --seeds 0,1,2              (make bench-pose)
    python bench/bench_pose.py --ablation --out bench/results/pose.json                 (make bench-pose-ablation)
    python bench/bench_pose.py --datasets jhmdb --seeds 0                               (one dataset, one seed)
    python bench/bench_pose.py --ablation --resume      (only the runs --out does not hold yet; the rest kept)

JHMDB (3 official splits, DD-Net's 15 2D joints) and SHREC'17 (14 and 28 classes, the official subject split; x, y
and depth z of the 22 hand joints: the model takes depth where every clip has it, as `dualnet train` does, unless
`--no-depth`). Per run: import into a fresh store, train the `pose` preset on keypoints
alone (no tubes), report the test Top-1 of the *last* epoch (no model selection on the test split), and train the
reference CNN (`pose_baseline.py`) on the same clips. `--ablation` also runs the paper's other rows (ST only, TS
only, the fixed average, dual with routing and no MAC) on JHMDB split 1 and SHREC'17's 14 classes, without the CNN;
the full model's row there is the main runs'. Runs go `--jobs` at a time, one thread each, the main runs first; each
result line is printed as it comes and the JSON is rewritten after each.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]  # this checkout's packages, in the worker processes too
SHARED = REPO.parent / "shared" / "data"
# Per dataset: the T the model sees, epochs, whether a flip keeps the label (then also a test-time flip); "train":
# TrainParams fields of its own (JHMDB: random rotations of +-15 degrees, measured over 3 splits x 3 seeds: README).
# Depth is used wherever every clip has it (SHREC'17), unless --no-depth. A resumed run is kept only when it ran with
# the same setup, the same --no-depth and the same training fields.
SETUPS = {
    "jhmdb": {"flip": 0.5, "frames": 32, "epochs": 40, "train": {"rotate": 15.0}},
    "shrec14": {"flip": 0.0, "frames": 16, "epochs": 40},
    "shrec28": {"flip": 0.0, "frames": 16, "epochs": 40},
}
# The paper's ablation rows: model overrides of the preset.
ABLATION_ROWS = {
    "ST only": {"path": "st"},
    "TS only": {"path": "ts"},
    "average, MAC": {"path": "average"},
    "dual (routing), no MAC": {"path": "dual", "mac": False},
}
FULL_ROW = "dual (routing), MAC"  # the preset as it is
ABLATION_RUNS = {"jhmdb": "split 1", "shrec14": "14 classes"}


def _clips(index, part: str):
    from pipelines.data.clips import LabelledClips

    chosen = index.split(part)
    return LabelledClips(tuple(c.clip_id for c in chosen), tuple(c.label for c in chosen))


def _runs(name: str, root: Path):
    """(label, import params, sources, index) per split of a dataset."""
    from pipelines.data import datasets
    from pipelines.formats.params import ImportParams

    if name == "jhmdb":
        for split in (1, 2, 3):
            yield f"split {split}", ImportParams("jhmdb"), [root / "jhmdb" / f"GT_{p}_{split}.pkl"
                                                            for p in ("train", "test")], \
                datasets.jhmdb(root / "jhmdb", split)
    else:
        classes = 14 if name == "shrec14" else 28
        yield f"{classes} classes", ImportParams("shrec17"), [root / "shrec17"], \
            datasets.shrec17(root / "shrec17", classes)


def run_one(name: str, label: str, seed: int, row: str, overrides: dict, preset: str, root: Path,
            baseline: bool, depth: bool = True, train_overrides: dict | None = None) -> dict:
    """Import one split into a fresh store, train the preset (with `overrides`; with depth where `depth` and every
    clip has it) and, with `baseline`, the CNN (x, y only)."""
    import torch
    from pose_baseline import normalise, train_and_test

    import dualnet
    from dualnet.entities import entity_set_for
    from dualnet.layouts import get_layout
    from pipelines.formats.keypoints import KeypointSet
    from pipelines.formats.params import TrainParams
    from pipelines.stages.import_poses import run_import
    from pipelines.stages.train import train

    torch.set_num_threads(1)
    setup = SETUPS[name]
    _, params, sources, index = next(r for r in _runs(name, root) if r[0] == label)
    work = Path(tempfile.mkdtemp(prefix=f"bench_pose_{name}_"))
    try:
        for source in sources:
            run_import(source, params, work)
        kps = KeypointSet(work, params)
        train_clips, test_clips = _clips(index, "train"), _clips(index, "test")
        layout = kps.attributes(train_clips.names[0])["layout"]
        asked, depth = depth, depth and kps.has_depth(list(train_clips.names + test_clips.names))
        config = dualnet.preset(preset, num_classes=len(index.classes), layout=layout,
                                entity_set=entity_set_for(get_layout(layout)), num_frames=setup["frames"],
                                **({"pose_depth": True} if depth else {}), **overrides)
        train_params = TrainParams(**{"epochs": setup["epochs"], "batch_size": 32, "lr": 1e-3, "flip": setup["flip"],
                                      "test_flip": setup["flip"] > 0, "keypoint_noise": 0.02, "balance": "none",
                                      "seed": seed, **_train_fields(name, train_overrides)})
        started = time.perf_counter()
        result = train(config, kps, train_clips, test_clips, train_params, work)
        out = {"dataset": name, "run": label, "row": row, "seed": seed, "setup": _setup_fields(name),
               "depth_asked": asked, "depth": depth,
               "train": _train_fields(name, train_overrides),
               "ours_top1": result.history[-1]["val_top1"], "ours_seconds": round(time.perf_counter() - started, 1),
               "train_clips": len(train_clips.names), "test_clips": len(test_clips.names)}
        if baseline:
            arrays = {n: kps.load(n).keypoints for n in train_clips.names + test_clips.names}
            started = time.perf_counter()
            train_x = np.stack([normalise(arrays[n], 32) for n in train_clips.names])
            test_x = np.stack([normalise(arrays[n], 32) for n in test_clips.names])
            out["baseline_top1"] = train_and_test(train_x, np.array(train_clips.labels), test_x,
                                                  np.array(test_clips.labels), len(index.classes), seed=seed)
            out["baseline_seconds"] = round(time.perf_counter() - started, 1)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "seeds": len(values)}


def summarise(results: list[dict], key: str) -> dict:
    """Per dataset and row: the mean over a seed's splits, then mean, std, min and max over the seeds."""
    summary: dict[str, dict] = {}
    for name in dict.fromkeys(r["dataset"] for r in results):
        for row in dict.fromkeys(r["row"] for r in results if r["dataset"] == name):
            rows = [r for r in results if r["dataset"] == name and r["row"] == row and key in r]
            seeds = sorted({r["seed"] for r in rows})
            per_seed = [statistics.mean(r[key] for r in rows if r["seed"] == s) for s in seeds]
            if per_seed:
                summary.setdefault(name, {})[row] = _spread(per_seed)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=SHARED)
    parser.add_argument("--datasets", default="jhmdb,shrec14,shrec28")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--preset", default="pose")
    parser.add_argument("--ablation", action="store_true", help="the paper's path and MAC rows instead")
    parser.add_argument("--no-depth", action="store_true", help="x, y only, where the data has depth too")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at a time, one thread each")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "pose.json")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs --out already holds (same preset) and run only the missing ones")
    parser.add_argument("--train", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a TrainParams field of every run, e.g. --train rotate=15 (repeatable)")
    args = parser.parse_args()
    train_overrides = dict(_train_override(text) for text in args.train)

    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = []
    for name in args.datasets.split(","):
        for label, *_ in _runs(name, args.root):
            jobs += [(name, label, seed, FULL_ROW, {}, True) for seed in seeds]
    for name in args.datasets.split(",") if args.ablation else ():
        jobs += [(name, ABLATION_RUNS[name], seed, row, overrides, False)
                 for seed in seeds for row, overrides in ABLATION_ROWS.items() if name in ABLATION_RUNS]
    order = {job[:4]: i for i, job in enumerate(jobs)}
    results = _held_runs(args.out, args.preset, order, not args.no_depth, train_overrides) if args.resume else []
    held = {(r["dataset"], r["run"], r["seed"], r["row"]) for r in results}
    jobs = [job for job in jobs if job[:4] not in held]
    print(f"{len(held)} run(s) kept from {args.out}, {len(jobs)} to run", flush=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_one, name, label, seed, row, overrides, args.preset, args.root, baseline,
                               not args.no_depth, train_overrides)
                   for name, label, seed, row, overrides, baseline in jobs]
        for future in as_completed(futures):
            results.append(future.result())
            print(json.dumps(results[-1]), flush=True)
            results.sort(key=lambda r: order[(r["dataset"], r["run"], r["seed"], r["row"])])
            write(args, results, seeds, len(order), time.perf_counter() - started)
    write(args, results, seeds, len(order), time.perf_counter() - started)  # also when every run was held
    print(json.dumps(json.loads(args.out.read_text())["summary"], indent=2))


def _setup_fields(name: str) -> dict:
    """What a run of dataset `name` is trained with beyond TrainParams fields (T, epochs, flips)."""
    return {k: v for k, v in SETUPS[name].items() if k != "train"}


def _train_fields(name: str, train_overrides: dict | None) -> dict:
    """The TrainParams fields a run of dataset `name` sets beyond the common ones: its setup's, then --train's."""
    return {**SETUPS[name].get("train", {}), **(train_overrides or {})}


def _train_override(text: str) -> tuple[str, object]:
    """'field=value' -> (field, value typed as TrainParams' default for it)."""
    from dataclasses import fields

    from pipelines.formats.params import TrainParams

    name, _, value = text.partition("=")
    kinds = {f.name: type(f.default) for f in fields(TrainParams)}
    if name not in kinds or not value:
        raise SystemExit(f"error: --train {text!r}: expected FIELD=VALUE with FIELD one of {', '.join(kinds)}")
    kind = kinds[name]
    return name, (value.lower() in ("1", "true", "yes") if kind is bool else kind(value))


def _held_runs(out: Path, preset: str, order: dict, depth: bool, train_overrides: dict) -> list[dict]:
    """The runs of an earlier result file that this invocation plans too (same preset, setup, --no-depth and --train
    overrides), in plan order."""
    if not out.is_file():
        return []
    earlier = json.loads(out.read_text())
    if earlier.get("preset") != preset:
        raise SystemExit(f"error: {out}: holds preset {earlier.get('preset')!r}, not {preset!r}; cannot resume")
    runs = [r for r in earlier["runs"] if (r["dataset"], r["run"], r["seed"], r["row"]) in order
            and r.get("setup") == _setup_fields(r["dataset"]) and r.get("depth_asked") == depth
            and r.get("train", {}) == _train_fields(r["dataset"], train_overrides)]
    return sorted(runs, key=lambda r: order[(r["dataset"], r["run"], r["seed"], r["row"])])


def write(args, results: list[dict], seeds: list[int], planned: int, seconds: float) -> None:
    """The JSON so far (rewritten after each run: a stopped benchmark keeps what it measured)."""
    main_rows = [r for r in results if r["row"] == FULL_ROW]
    summary = {"ours": summarise(main_rows, "ours_top1"), "plain_cnn": summarise(main_rows, "baseline_top1")}
    if args.ablation:  # the rows on the ablation's splits only
        summary["ablation"] = summarise([r for r in results if ABLATION_RUNS.get(r["dataset"]) == r["run"]],
                                        "ours_top1")
    out = {"benchmark": "pose_stream",
           "command": f"python bench/bench_pose.py {'--ablation ' if args.ablation else ''}"
                      f"{'--no-depth ' if args.no_depth else ''}--datasets {args.datasets} --seeds {args.seeds} "
                      f"--jobs {args.jobs}{' --resume' if args.resume else ''}"
                      + "".join(f" --train {t}" for t in args.train),
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
           "preset": args.preset, "setups": SETUPS, "runs_done": len(results), "runs_planned": planned,
           "wall_seconds": round(seconds, 1),  # of this invocation (a resumed one: of the runs it added)
           "runs": results, "summary": summary,
           "targets": {"jhmdb": "> 0.80 mean (DD-Net 0.772)", "shrec14": "> 0.955", "shrec28": "> 0.930"}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
