"""`dualnet predict` on long videos: peak memory and throughput at two lengths (default 2 and 10 minutes).

    python bench/bench_predict.py --out bench/results/predict.json

The long videos loop a real MA-52 sample clip (B1 nodding), scaled by --scale and written at --fps (so that the
pose model's cost, ~all of the run time, stays within a benchmark's budget). The model is the tiny preset trained
for one epoch on the 6 sample clips (the weights do not change memory or speed). Each length runs in a fresh
process; its peak resident memory (ru_maxrss) is read from that process alone. The claim under test: peak memory
does not grow with the video's length (the ratio long/short stays near 1 while the length ratio is 5).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared" / "data" / "ma52" / "videos" / "B1_nodding__0019_02_0078.mp4"


def loop_video(src: Path, dst: Path, seconds: float, fps: int, scale: float) -> int:
    """Write `src` over and over into `dst` until it lasts `seconds` at `fps`; returns the frame count."""
    import av

    with av.open(str(src)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    h, w = frames[0].shape[:2]
    width, height = int(w * scale) // 2 * 2, int(h * scale) // 2 * 2
    total = int(seconds * fps)
    with av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        resized = [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(width=width, height=height,
                                                                          format="yuv420p") for f in frames]
        for i in range(total):
            frame = resized[i % len(resized)]
            frame.pts = None
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return total


def measured_run(cmd: list[str]) -> dict:
    """Run `cmd` in a fresh wrapper process; wall time and the child's own peak RSS."""
    probe = ("import resource, subprocess, sys, json, time; t = time.perf_counter(); "
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(json.dumps({'rc': r.returncode, 'seconds': time.perf_counter() - t, "
             "'peak_rss_mib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "
             "'stderr': r.stderr[-2000:]}))")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, cwd=REPO)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result['stderr']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs=2, default=[2.0, 10.0])
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "predict.json")
    args = parser.parse_args()

    import dualnet
    from pipelines.data.clips import LabelledClips
    from pipelines.formats.params import TrainParams
    from pipelines.formats.tube_packs import TubeSet
    from pipelines.stages.extract import run_extract
    from pipelines.stages.train import train
    from pipelines.stages.tubes import run_tubes

    work = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    store = work / "store"
    run_extract([str(CLIP.parent)], store)
    run_tubes(store)
    tubes = TubeSet(store)
    names = tuple(tubes.names())
    result = train(dualnet.preset("tiny", num_classes=len(names)), tubes, LabelledClips(names, tuple(range(6))),
                   None, TrainParams(epochs=1, batch_size=3), classes=list(names))
    checkpoint = result.run_dir / "last.pt"
    runs = []
    for minutes in args.minutes:
        video = work / f"loop_{minutes:g}min.mp4"
        frames = loop_video(CLIP, video, minutes * 60, args.fps, args.scale)
        cmd = [sys.executable, "-m", "cli", "predict", str(video), "--checkpoint", str(checkpoint), "--store",
               str(store), "--no-plot"]
        first = measured_run(cmd)
        again = measured_run(cmd)  # the same video and model: cached, no work
        runs.append({"minutes": minutes, "frames": frames, "seconds": round(first["seconds"], 1),
                     "frames_per_s": round(frames / first["seconds"], 1),
                     "peak_rss_mib": round(first["peak_rss_mib"], 1),
                     "rerun_seconds": round(again["seconds"], 2)})
        print(json.dumps(runs[-1]), flush=True)
    short, long_ = runs[0], runs[-1]
    report = {
        "benchmark": "predict on long videos (pose + sliding windows + tiny model, CPU)",
        "command": "make bench-predict",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "video": {"source": CLIP.name, "fps": args.fps, "scale": args.scale},
        "runs": runs,
        "length_ratio": round(long_["frames"] / short["frames"], 2),
        "peak_memory_ratio": round(long_["peak_rss_mib"] / short["peak_rss_mib"], 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
