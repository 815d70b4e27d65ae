"""Tube throughput, and reading a training batch from the store vs decoding the same frames from video.

    python bench/bench_tubes.py --out bench/results/tubes.json

The store read loads every array a training step needs (entity tubes, global frames, boxes, keypoints) for a
batch of clips; the video path only decodes the same sampled frames (no cropping), so the ratio understates the
store's advantage. Both are measured in the same process, best of several rounds.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, default=REPO.parent / "shared" / "data" / "ma52" / "videos")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "tubes.json")
    args = parser.parse_args()

    from pipelines.formats.keypoints import KeypointSet
    from pipelines.formats.tube_packs import TubeSet, count_files
    from pipelines.io.video import iter_frames
    from pipelines.stages.extract import run_extract
    from pipelines.stages.tubes import run_tubes

    work = Path(tempfile.mkdtemp(prefix="bench_tubes_"))
    try:
        store = work / "store"
        extract = run_extract([str(args.clips)], store)
        assert not extract.failed, extract.failed
        tube_seconds = []
        for _ in range(args.rounds):
            shutil.rmtree(store / "tubes", ignore_errors=True)
            start = time.perf_counter()
            report = run_tubes(store)
            tube_seconds.append(time.perf_counter() - start)
            assert not report.failed and len(report.processed) == len(extract.processed)
        tubes = TubeSet(store)
        names = tubes.names()
        sources = {n: KeypointSet(store).attributes(n)["source_path"] for n in names}

        def read_store() -> float:
            start = time.perf_counter()
            fresh = TubeSet(store)  # no cached handles: a cold reader, as a new DataLoader worker
            for name in names:
                fresh.load(name)
            return time.perf_counter() - start

        def decode_video() -> float:
            start = time.perf_counter()
            for name in names:
                wanted = set(tubes.load(name)["frame_index"].tolist())
                _ = [rgb for i, (_, rgb) in enumerate(iter_frames(sources[name])) if i in wanted]
            return time.perf_counter() - start

        store_s = min(read_store() for _ in range(args.rounds))
        video_s = min(decode_video() for _ in range(args.rounds))
        out = {
            "benchmark": "tubes",
            "command": "make bench  (python bench/bench_tubes.py)",
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "clips": len(names),
            "tube_stage": {"seconds": round(min(tube_seconds), 3),
                           "clips_per_s": round(len(names) / min(tube_seconds), 3),
                           "all_rounds_seconds": [round(t, 3) for t in tube_seconds]},
            "batch_read": {"clips": len(names), "store_seconds": round(store_s, 4),
                           "video_decode_seconds": round(video_s, 4),
                           "store_speedup": round(video_s / store_s, 1)},
            "files_in_tubes_output": count_files(tubes.output.path),
            "targets": {"store_speedup": ">= 10"},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
