"""The model's cost per preset and Spatial Entity Module: parameters, GFLOPs per clip, CPU step time and memory, and
what one GPU would need to train an MA-52 epoch in 10 minutes.

    python bench/bench_model.py --out bench/results/model.json

Per row (the preset at its real sizes: T frames, 224-px global frames, 112-px entity crops, MediaPipe's 543 points):
- params: trainable and total parameters.
- forward / training GFLOPs per clip: torch's FLOP counter (`torch.utils.flop_counter`, 2 FLOPs a multiply-add,
  convolutions and matrix products; attention's softmax and the elementwise rest are not counted) on a batch of
  2, divided by 2; training = forward + backward.
- step_s: one training step (forward, backward, AdamW) at batch 2 on this CPU, median of `--steps` after one warm-up.
- peak_mb: the training steps' peak resident memory above what the process held with the model and the batch built
  (so activations, gradients and AdamW's state), in a fresh process per row (`ru_maxrss`).
- h100: an MA-52 epoch (11,250 training clips) in 10 minutes needs 18.75 clips/s; the TFLOP/s that takes and the
  share of an H100 SXM's dense BF16 peak (989 TFLOP/s) it is. Not measured on a GPU: no GPU was lent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MA52_TRAIN_CLIPS = 11_250
EPOCH_SECONDS = 600
H100_BF16_TFLOPS = 989.0  # dense, SXM (NVIDIA's datasheet)
ROWS = [("paper", "roialign"), ("paper", "crops"), ("r50", "roialign"), ("r50", "crops"), ("small", "roialign"),
        ("small", "crops"), ("tiny", "crops"), ("pose", "-")]


def _inputs(config, batch: int, seed: int = 0) -> dict:
    """A batch at the preset's real sizes (uint8 images, keypoints and boxes in 1920 x 1080 pixels)."""
    import torch

    from dualnet.entities import get_entity_set
    from dualnet.layouts import get_layout

    g = torch.Generator().manual_seed(seed)
    t, k, v = config.num_frames, len(get_entity_set(config.entity_set)), get_layout(config.layout).num_keypoints
    s, gs = config.entity_size, config.global_size
    out = {"keypoints": torch.cat([torch.rand(batch, t, v, 2, generator=g) * torch.tensor([1920.0, 1080.0]),
                                   torch.rand(batch, t, v, 1, generator=g)], dim=-1),
           "visible": torch.ones(batch, t, k, dtype=torch.bool)}
    centre = torch.rand(batch, t, k, 2, generator=g) * 800 + 500
    out["boxes"] = torch.cat([centre - 80, centre + 80], dim=-1)
    if config.uses_rgb:
        out["frames"] = torch.randint(0, 256, (batch, t, 3, gs, gs), dtype=torch.uint8, generator=g)
        if config.sem == "roialign":
            frame_centre = torch.rand(batch, t, k, 2, generator=g) * gs * 0.6 + gs * 0.2
            out["frame_boxes"] = torch.cat([frame_centre - gs * 0.08, frame_centre + gs * 0.08], dim=-1)
        else:
            out["tubes"] = torch.randint(0, 256, (batch, t, k, 3, s, s), dtype=torch.uint8, generator=g)
    if not config.uses_pose:
        out = {key: val for key, val in out.items() if key not in ("keypoints", "boxes")}
    return out


def measure_row(preset: str, sem: str, batch: int, steps: int) -> dict:
    """One row, in this process (call it in a fresh one for a clean memory figure)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import dualnet

    torch.manual_seed(0)
    config = dualnet.preset(preset, num_classes=52) if sem == "-" else dualnet.preset(preset, num_classes=52,
                                                                                         sem=sem)
    model = dualnet.MicroDualNet(config)
    labels = torch.arange(batch) % config.num_classes
    inputs = _inputs(config, batch)
    optimiser = torch.optim.AdamW(model.parameter_groups(1e-3, 0.05))
    model.train()

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        out = model(**inputs, labels=labels)
        loss, _ = model.loss(out, labels)
        loss.backward()
        optimiser.step()

    baseline = _rss_mb()  # the model and the batch, before any step
    step()  # warm-up: optimiser state, gradients and the allocator's pools come into being
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = max(0.0, _peak_mb() - baseline)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as forward:
        model(**inputs)
    model.train()
    with FlopCounterMode(display=False) as training:
        out = model(**inputs, labels=labels)
        model.loss(out, labels)[0].backward()
    train_gflops = training.get_total_flops() / batch / 1e9
    needed = train_gflops * MA52_TRAIN_CLIPS / EPOCH_SECONDS / 1e3  # TFLOP/s
    return {
        "preset": preset, "sem": sem, "backbone": config.backbone, "modality": config.modality,
        "frames": config.num_frames, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "trainable_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        "forward_gflops": forward.get_total_flops() / batch / 1e9, "train_gflops": train_gflops,
        "step_s": sorted(times)[len(times) // 2], "batch": batch,
        "peak_mb": peak,
        "h100": {"clips_per_s": MA52_TRAIN_CLIPS / EPOCH_SECONDS, "tflops_needed": needed,
                 "share_of_bf16_peak": needed / H100_BF16_TFLOPS},
    }


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "model.json")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", default=",".join(f"{p}:{s}" for p, s in ROWS), help="preset:sem,...")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: measure one row, print its JSON
    args = parser.parse_args()
    if args.row:
        preset, sem = args.row.split(":")
        print(json.dumps(measure_row(preset, sem, args.batch, args.steps)))
        return
    rows = []
    for row in args.rows.split(","):
        result = subprocess.run([sys.executable, __file__, "--row", row, "--batch", str(args.batch), "--steps",
                                 str(args.steps)], capture_output=True, text=True, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        if result.returncode != 0:
            raise SystemExit(f"{row}: {result.stderr.strip().splitlines()[-1]}")
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{r['preset']:>6} {r['sem']:>8}: {r['params_m']:.1f} M params, {r['forward_gflops']:.1f} / "
              f"{r['train_gflops']:.1f} GFLOPs fwd / train per clip, step {r['step_s']:.2f} s at batch "
              f"{r['batch']}, peak +{r['peak_mb']:.0f} MB, H100 {r['h100']['share_of_bf16_peak']:.1%} of peak",
              flush=True)
    import torch

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                                "torch": torch.__version__, "threads": torch.get_num_threads()},
                                    "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
