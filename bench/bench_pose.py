"""The pose stream on real skeleton benchmarks, CPU only, with a plain temporal CNN measured in the same run.

    python bench/bench_pose.py --out bench/results/pose.json             (make bench-pose)
    python bench/bench_pose.py --datasets jhmdb --seeds 0,1,2             (one dataset, three seeds)

JHMDB (3 official splits, DD-Net's 15 2D joints) and SHREC'17 (14 and 28 classes, the official subject split; x, y
of the 22 hand joints, depth left out). Per run: import into a fresh store, train the `pose` preset on keypoints
alone (no tubes), report the test Top-1 of the *last* epoch (no model selection on the test split), and train the
reference CNN (`pose_baseline.py`) on the same clips. Each result line is printed as it comes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
# Per dataset: how to import it, its index, the T the model sees, epochs, and whether a flip keeps the label.
SETUPS = {
    "jhmdb": {"flip": 0.5, "frames": 32, "epochs": 40},
    "shrec14": {"flip": 0.0, "frames": 16, "epochs": 20},
    "shrec28": {"flip": 0.0, "frames": 16, "epochs": 20},
}


def _clips(index, part: str):
    from pipelines.data.clips import LabelledClips

    chosen = index.split(part)
    return LabelledClips(tuple(c.clip_id for c in chosen), tuple(c.label for c in chosen))


def _runs(name: str, root: Path):
    """(label, import params, source, index) per split of a dataset."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=SHARED)
    parser.add_argument("--datasets", default="jhmdb,shrec14,shrec28")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--preset", default="pose")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "pose.json")
    args = parser.parse_args()

    import sys

    import torch

    import dualnet
    from dualnet.entities import entity_set_for
    from dualnet.layouts import get_layout
    from pipelines.formats.keypoints import KeypointSet
    from pipelines.formats.params import TrainParams
    from pipelines.stages.import_poses import run_import
    from pipelines.stages.train import train

    sys.path.insert(0, str(REPO / "bench"))
    from pose_baseline import normalise, train_and_test

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    seeds = [int(s) for s in args.seeds.split(",")]
    results = []
    for name in args.datasets.split(","):
        setup = SETUPS[name]
        for label, params, sources, index in _runs(name, args.root):
            work = Path(tempfile.mkdtemp(prefix=f"bench_pose_{name}_"))
            try:
                for source in sources:
                    run_import(source, params, work)
                kps = KeypointSet(work, params)
                train_clips, test_clips = _clips(index, "train"), _clips(index, "test")
                layout = kps.attributes(train_clips.names[0])["layout"]
                arrays = {n: kps.load(n).keypoints for n in train_clips.names + test_clips.names}
                for seed in seeds:
                    config = dualnet.preset(args.preset, num_classes=len(index.classes), layout=layout,
                                            entity_set=entity_set_for(get_layout(layout)),
                                            num_frames=setup["frames"], dim=128, heads=2)
                    train_params = TrainParams(epochs=setup["epochs"], batch_size=32, lr=1e-3, flip=setup["flip"],
                                               keypoint_noise=0.02, balance="none", seed=seed)
                    started = time.perf_counter()
                    result = train(config, kps, train_clips, test_clips, train_params, work)
                    ours_s = time.perf_counter() - started
                    started = time.perf_counter()
                    train_x = np.stack([normalise(arrays[n], 32) for n in train_clips.names])
                    test_x = np.stack([normalise(arrays[n], 32) for n in test_clips.names])
                    baseline = train_and_test(train_x, np.array(train_clips.labels), test_x,
                                              np.array(test_clips.labels), len(index.classes), seed=seed)
                    row = {"dataset": name, "run": label, "seed": seed, "ours_top1": result.history[-1]["val_top1"],
                           "baseline_top1": baseline, "ours_seconds": round(ours_s, 1),
                           "baseline_seconds": round(time.perf_counter() - started, 1),
                           "train_clips": len(train_clips.names), "test_clips": len(test_clips.names)}
                    results.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for name in args.datasets.split(","):
        rows = [r for r in results if r["dataset"] == name]
        by_seed = {s: [r for r in rows if r["seed"] == s] for s in seeds}
        ours = [statistics.mean(r["ours_top1"] for r in rs) for rs in by_seed.values()]
        base = [statistics.mean(r["baseline_top1"] for r in rs) for rs in by_seed.values()]
        summary[name] = {"ours_mean": statistics.mean(ours), "ours_spread": (max(ours) - min(ours)) / 2,
                         "baseline_mean": statistics.mean(base), "baseline_spread": (max(base) - min(base)) / 2,
                         "seeds": len(seeds)}
    out = {"benchmark": "pose_stream", "command": f"python bench/bench_pose.py --datasets {args.datasets} "
                                                  f"--seeds {args.seeds}",
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
           "preset": args.preset, "setups": SETUPS, "runs": results, "summary": summary,
           "targets": {"jhmdb": "> 0.80 mean (DD-Net 0.772)", "shrec14": "> 0.955", "shrec28": "> 0.930"}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
