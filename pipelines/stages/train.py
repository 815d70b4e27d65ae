"""The `train` stage: a Micro-DualNet trained on cached tubes (never video), resumable and content-hashed.

The run directory ``<store>/train/<key>/`` holds ``last.pt`` (written atomically after every epoch: model,
optimizer, scheduler, config, epoch, best metric, RNG states), ``best.pt`` (the best validation Top-1),
``metrics.jsonl`` (one line per epoch) and ``done.json`` once the last epoch is in. The key hashes the model config,
the training parameters, the tubes key and the labelled clip lists, so the same data + config + code is the same
run, and a finished run is not redone. A killed run resumes from its last epoch with the RNG states it had, so it
ends where an uninterrupted run ends.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from dualnet.config import ModelConfig
from dualnet.entities import get_entity_set
from dualnet.losses import class_weights as weighting
from dualnet.model import MicroDualNet
from pipelines.data.batching import plan_steps
from pipelines.data.clips import LabelledClips, augment, batch_to, make_dataset, model_inputs, pose_clips, predict
from pipelines.errors import DualnetError, StoreError
from pipelines.forking import forked_iter
from pipelines.formats.params import TRAIN_STAGE as STAGE
from pipelines.formats.params import TRAIN_VERSION as VERSION
from pipelines.formats.params import TrainParams
from pipelines.formats.training_runs import HISTORY, TRAINING_FORMAT
from pipelines.formats.tube_packs import TubeSet
from pipelines.io.downloads import resolve_pretrained
from pipelines.kill_points import kill_point
from pipelines.progress import Progress
from pipelines.report.metrics import evaluate
from pipelines.store import StageSpec, Store, write_file_atomic, write_json_atomic


def run_spec(config: ModelConfig, params: TrainParams, tubes: TubeSet, train: LabelledClips,
             val: LabelledClips | None) -> StageSpec:
    """A training run: keyed by the model configuration, the parameters, the tubes (or keypoints) it reads and
    the exact clips and labels of both splits."""
    k = len(get_entity_set(config.entity_set))
    summary = (f"{config.backbone} {config.modality} path={config.path} D={config.dim} T={config.num_frames} K={k} "
               f"classes={config.num_classes}")
    return StageSpec(STAGE, VERSION, asdict(params), inputs={tubes.output.stage: tubes.output.key},
                     extra={"model": asdict(config), "data": [asdict(train), asdict(val) if val is not None else None]},
                     recorded={"model_summary": summary}, output_format=TRAINING_FORMAT)


def run_key(config: ModelConfig, params: TrainParams, tubes: TubeSet, train: LabelledClips,
            val: LabelledClips | None) -> str:
    return run_spec(config, params, tubes, train, val).key


def _schedule(optimizer: torch.optim.Optimizer, params: TrainParams, steps_per_epoch: int):
    total = max(1, params.epochs * steps_per_epoch)
    warmup = max(1, int(params.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun (initialising the process group once), else (0, 1)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), dist.get_world_size()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _sum_over_processes(x: torch.Tensor, world: int, dev: torch.device) -> torch.Tensor:
    if world == 1:
        return x
    import torch.distributed as dist

    x = x.to(dev)  # nccl reduces CUDA tensors only
    dist.all_reduce(x)
    return x.cpu()


def _atomic_save(obj: dict, path: Path) -> None:
    """Write a checkpoint whole or not at all; a full or read-only disk is a StoreError naming the file (the
    previous checkpoint stays as it was)."""
    buffer = io.BytesIO()  # serialised first: torch's own writer turns ENOSPC into an unreadable message

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())

    torch.save(obj, buffer)
    try:
        write_file_atomic(path, write)
    except OSError as e:
        raise StoreError(f"{path}: cannot write checkpoint ({e.strerror or e})") from None


def _replace_text(path: Path, text: str) -> None:
    """Rewrite a small file atomically (a kill mid-write must not cut the training history short)."""
    try:
        write_file_atomic(path, lambda tmp: tmp.write_text(text))
    except OSError as e:
        raise StoreError(f"{path}: cannot write ({e.strerror or e})") from None


def _append_line(path: Path, record: dict) -> None:
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise StoreError(f"{path}: cannot write ({e.strerror or e})") from None


@dataclass
class TrainResult:
    run_dir: Path
    key: str
    epochs_run: int
    history: list[dict] = field(default_factory=list)
    reused: bool = False  # the run had already finished: nothing was trained


def data_record(source) -> dict:
    """How the training inputs were made (tube and keypoint parameters), saved in checkpoints so that `predict`
    can make the same inputs from a new video."""
    record: dict = {}
    output = source.output
    if isinstance(source, TubeSet):
        record["tubes"] = source.manifest["params"]
        (stage, key), = source.manifest["inputs"].items()
        output = source.store.stage(stage, key)
    try:
        manifest = output.manifest()
        layout = manifest.get("recorded", {}).get("layout", manifest.get("layout"))  # older manifests: top level
        record["keypoints"] = {"stage": output.stage, "key": output.key, "params": manifest.get("params", {}),
                               "layout": layout}
    except DualnetError:
        pass  # the keypoint output was collected away: predict then falls back to default parameters
    return record


def train(config: ModelConfig, tubes, train_clips: LabelledClips, val_clips: LabelledClips | None = None,
          params: TrainParams = TrainParams(), store: Store | str | Path | None = None,
          progress: Progress | None = None, device: str | None = None, num_workers: int = 0,
          classes: list[str] | None = None) -> TrainResult:
    """Train (or resume, or reuse) the run that `config`, `params` and the data define.

    Args:
        tubes: Where clips come from: a TubeSet (any modality), or a KeypointSet (pose modality only).
        classes: Class names, saved in the checkpoints for `predict` (not part of the run's key).
    """
    store = store if isinstance(store, Store) else Store(store if store is not None else tubes.store.root)
    rank, world = _distributed()
    progress = progress if progress is not None and rank == 0 else Progress()
    if device is None:
        device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    spec = run_spec(config, params, tubes, train_clips, val_clips)
    key = spec.key
    run_dir = store.stage(STAGE, key).path
    weights = None  # the backbone's start, fetched only for a run that starts now (rank 0: DDP broadcasts it)
    if rank == 0 and config.uses_rgb and not (run_dir / "done.json").exists() and not (run_dir / "last.pt").exists():
        weights = resolve_pretrained(config.pretrained, config.backbone, store.root / "models")
    if rank == 0 and not isinstance(tubes, TubeSet) and not (run_dir / "done.json").exists():
        # pose alone: the clips' cached inputs are computed before the run's lock is taken (the other ranks read
        # them after the barrier)
        pose_clips(tubes, train_clips.names + (val_clips.names if val_clips is not None else ()), config)
    if rank > 0:  # only rank 0 takes the store lock and writes; the others follow it
        _barrier(world)
        return _train_loop(config, tubes, train_clips, val_clips, params, run_dir, progress, dev, num_workers,
                           rank, world, key, classes)
    with store.run(spec):
        _barrier(world)
        return _train_loop(config, tubes, train_clips, val_clips, params, run_dir, progress, dev, num_workers,
                           rank, world, key, classes, weights)


def _train_loop(config: ModelConfig, tubes: TubeSet, train_clips: LabelledClips, val_clips: LabelledClips | None,
                params: TrainParams, run_dir: Path, progress: Progress, dev: torch.device, num_workers: int,
                rank: int, world: int, key: str, classes: list[str] | None = None,
                weights: Path | None = None) -> TrainResult:
    """The epochs themselves; every rank runs it, rank 0 alone writes."""
    history_path = run_dir / HISTORY
    if (run_dir / "done.json").exists():
        history = [json.loads(line) for line in history_path.read_text().splitlines() if line.strip()]
        return TrainResult(run_dir, key, 0, history, reused=True)
    torch.manual_seed(params.seed)
    model = MicroDualNet(config)
    if weights is not None:
        model.load_backbone_weights(weights)
    model = model.to(dev)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda"
                                                        else None)
    groups = model.parameter_groups(params.lr, params.weight_decay, params.backbone_lr)
    if params.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=params.lr, weight_decay=params.weight_decay)
    else:
        optimizer = torch.optim.SGD(groups, lr=params.lr, momentum=0.9, nesterov=True, weight_decay=params.weight_decay)
    train_set = make_dataset(tubes, train_clips, config, params, train=True)
    steps_per_epoch = math.ceil(len(train_set) / (params.batch_size * params.accumulate * world))  # plan_steps'
    scheduler = _schedule(optimizer, params, steps_per_epoch)
    labels = np.asarray(train_clips.labels)
    counts = np.bincount(labels, minlength=config.num_classes).astype(np.float64)
    class_weights = None
    clip_weight = np.ones(len(labels))  # each clip's weight in the loss (its class's, when reweighting)
    if params.balance == "reweight":
        class_weights = torch.tensor(weighting(counts, params.class_weights), dtype=torch.float32, device=dev)
        clip_weight = class_weights.double().cpu().numpy()[labels]
    data = data_record(tubes)
    start_epoch, best, history = 0, -1.0, []
    last = run_dir / "last.pt"
    if last.exists():
        state = torch.load(last, map_location=dev, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        torch.set_rng_state(state["rng"]["torch"])
    if history_path.exists():
        # Lines past the last whole checkpoint belong to an epoch a kill cut short (its line was written, its
        # checkpoint was not, even for the first epoch): that epoch is redone, so its line goes.
        history = [json.loads(line) for line in history_path.read_text().splitlines() if line.strip()][:start_epoch]
        if rank == 0:
            _replace_text(history_path, "".join(json.dumps(h) + "\n" for h in history))
    if start_epoch:
        progress.note(f"resuming at epoch {start_epoch}")
    progress.begin("train", (params.epochs - start_epoch) * steps_per_epoch, "steps")
    pin = dev.type == "cuda"  # page-locked batches: the host-to-device copy overlaps compute
    val_loader = None
    if val_clips is not None and len(val_clips.names):
        val_loader = DataLoader(make_dataset(tubes, val_clips, config, params, train=False),
                                batch_size=params.batch_size, num_workers=num_workers, pin_memory=pin)
    for epoch in range(start_epoch, params.epochs):
        train_set.epoch = epoch
        # One order for every world size (each process draws the same one), cut into steps by `plan_steps`: a step
        # is the same clips in one process or shared by several, each clip once per epoch.
        order = torch.Generator().manual_seed(params.seed * 100_003 + epoch)
        if params.balance == "sample":
            drawn = list(torch.utils.data.WeightedRandomSampler(1.0 / counts[labels], len(train_set), generator=order))
        else:
            drawn = torch.randperm(len(train_set), generator=order).tolist()
        steps = plan_steps(drawn, params.batch_size, params.accumulate, world, rank)
        loader = forked_iter(DataLoader(train_set, batch_sampler=[list(m) for step in steps for m in step.micro],
                                        num_workers=num_workers, pin_memory=pin))
        model.train()
        started = time.perf_counter()
        totals = torch.zeros(3, dtype=torch.float64)  # over this process's clips: sum of weight * loss, weight, clips
        for step in steps:
            step_weight = clip_weight[list(step.clips)].sum()
            for j, micro in enumerate(step.micro):
                batch = augment(batch_to(next(loader), dev))
                weight = 0.0 if step.is_filler(j) else clip_weight[list(micro)].sum()
                if step.is_filler(j) and "visible" in batch:  # nor an anchor or negative of MAC (mask_invisible)
                    batch["visible"] = torch.zeros_like(batch["visible"])
                # the step's loss is the weighted mean over all its clips: DDP averages the processes' gradients,
                # so each micro-batch's mean counts by its share of the step's weight, times the world size
                sync = contextlib.nullcontext() if world == 1 or j == len(step.micro) - 1 else net.no_sync()
                with sync:
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                        out = net(**model_inputs(batch), labels=batch["label"])
                        loss, _ = model.loss(out, batch["label"], batch.get("coarse"), class_weights)
                    (loss * (world * weight / step_weight)).backward()
                if not step.is_filler(j):
                    totals += torch.tensor([weight * float(loss.detach()), weight, len(micro)], dtype=torch.float64)
                kill_point("train.batch")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            progress.advance(1, f"loss {float(loss.detach()):.3f} lr {scheduler.get_last_lr()[0]:.2e} "
                                f"{world * float(totals[2]) / max(time.perf_counter() - started, 1e-9):.1f} clips/s")
        totals = _sum_over_processes(totals, world, dev)  # the same record as one process taking every clip
        record = {"epoch": epoch, "train_loss": float(totals[0] / totals[1]), "lr": scheduler.get_last_lr()[0],
                  "clips_per_s": float(totals[2]) / max(time.perf_counter() - started, 1e-9)}
        if rank > 0:
            _barrier(world)  # rank 0 validates and writes the checkpoint
            continue
        if val_loader is not None:
            pred = predict(model, val_loader, dev)
            record.update({f"val_{k}": v for k, v in evaluate(pred["scores"], pred["labels"]).items()})
        history.append(record)
        _append_line(history_path, record)
        kill_point("train.history_appended")
        metric = record.get("val_top1", -record["train_loss"])
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "config": asdict(config), "params": asdict(params),
                 "epoch": epoch, "best": max(best, metric), "rng": {"torch": torch.get_rng_state()},
                 "data": data, "classes": list(classes) if classes is not None else None}
        if metric > best:
            best = metric
            _atomic_save(state, run_dir / "best.pt")
        _atomic_save(state, last)
        kill_point("train.epoch_saved")
        val = f", val top1 {100 * record['val_top1']:.1f}%" if "val_top1" in record else ""
        progress.note(f"epoch {epoch}: train loss {record['train_loss']:.3f}{val}")
        _barrier(world)
    if rank == 0:
        write_json_atomic(run_dir / "done.json", {"epochs": params.epochs, "best": best})
    return TrainResult(run_dir, key, params.epochs - start_epoch, history)


