"""The pose-only Micro-DualNet on JHMDB's real 2D joints (DD-Net's release), 3 official splits, CPU only.

    python bench/bench_jhmdb.py --out bench/results/jhmdb.json

Per split: import the train and test pickles into a fresh store, train the `pose` preset on the train clips, and
report the test Top-1 of the *last* epoch (no model selection on the test set). Reference points: a one-layer MLP
on the same joints reaches about 64% mean here; DD-Net reports about 77% on full JHMDB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _clips(index, part: str):
    from pipelines.data.clips import LabelledClips

    chosen = index.split(part)
    return LabelledClips(tuple(c.clip_id for c in chosen), tuple(c.label for c in chosen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "jhmdb")
    parser.add_argument("--splits", default="1,2,3")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "jhmdb.json")
    args = parser.parse_args()

    import torch

    import dualnet
    from pipelines.data import datasets
    from pipelines.formats.keypoints import KeypointSet
    from pipelines.formats.params import ImportParams, TrainParams
    from pipelines.stages.import_poses import run_import
    from pipelines.stages.train import train

    torch.set_num_threads(os.cpu_count() or 1)
    results = []
    for split in (int(s) for s in args.splits.split(",")):
        work = Path(tempfile.mkdtemp(prefix=f"bench_jhmdb{split}_"))
        try:
            for part in ("train", "test"):
                run_import(args.root / f"GT_{part}_{split}.pkl", ImportParams("jhmdb"), work)
            index = datasets.jhmdb(args.root, split)
            kps = KeypointSet(work, ImportParams("jhmdb"))

            config = dualnet.preset("pose", num_classes=len(index.classes), layout="jhmdb_15",
                                    num_frames=args.frames, dim=args.dim, heads=max(1, args.dim // 64))
            params = TrainParams(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, flip=0.5,
                                 keypoint_noise=0.02, balance="none")
            start = time.perf_counter()
            result = train(config, kps, _clips(index, "train"), _clips(index, "test"), params, work)
            seconds = time.perf_counter() - start
            last = result.history[-1]
            results.append({"split": split, "test_top1": last["val_top1"], "test_top5": last["val_top5"],
                            "train_seconds": round(seconds, 1), "epochs": args.epochs,
                            "train_clips": len(index.split("train")), "test_clips": len(index.split("test"))})
            print(json.dumps(results[-1]), flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    mean = sum(r["test_top1"] for r in results) / len(results)
    out = {"benchmark": "jhmdb_pose_only", "command": "make bench-jhmdb  (python bench/bench_jhmdb.py)",
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
           "model": {"preset": "pose", "dim": args.dim, "frames": args.frames, "layout": "jhmdb_15",
                     "entity_set": "k6"},
           "training": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "optimizer": "adamw",
                        "flip": 0.5, "keypoint_noise": 0.02},
           "splits": results, "mean_test_top1": mean,
           "reference": {"one_layer_mlp_mean": 0.64, "dd_net_reported": 0.77}, "target_mean_top1": "> 0.77"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
