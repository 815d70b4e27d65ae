"""The `train` stage: a Micro-DualNet trained on cached tubes (never video), resumable and content-hashed.

The run directory ``<store>/train/<key>/`` holds ``last.pt`` (written atomically after every epoch: model,
optimizer, scheduler, config, epoch, best metric, RNG states), ``best.pt`` (the best validation Top-1),
``metrics.jsonl`` (one line per epoch) and ``done.json`` once the last epoch is in. The key hashes the model config,
the training parameters, the tubes key and the labelled clip lists, so the same data + config + code is the same
run, and a finished run is not redone. A killed run resumes from its last epoch with the RNG states it had, so it
ends where an uninterrupted run ends.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dualnet.config import ModelConfig
from dualnet.entities import flip_order, get_entity_set
from dualnet.layouts import get_layout
from dualnet.model import MicroDualNet
from dualnet.transforms import colour_jitter, draw_crop_windows, hflip_clip, jitter_crops
from pipelines.errors import DualnetError, InputError, StoreError
from pipelines.hashing import stable_hash
from pipelines.kill_points import kill_point
from pipelines.report.metrics import evaluate
from pipelines.stages.tubes import TubeSet
from pipelines.store import Shard, Store, write_file_atomic, write_json_atomic

STAGE = "train"
VERSION = 2  # 2: crop and colour jitter run batched on the training device (crop jitter by grid_sample)


@dataclass(frozen=True)
class TrainParams:
    """Optimisation and augmentation; all of it goes into the run's key."""

    epochs: int = 30  # ours: the paper does not give its schedule
    batch_size: int = 8
    lr: float = 1e-3  # peak learning rate (AdamW); SGD users typically want 0.01
    weight_decay: float = 0.05
    optimizer: str = "adamw"  # adamw | sgd (momentum 0.9, nesterov)
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to zero
    balance: str = "reweight"  # none | reweight (inverse-frequency CE weights) | sample (class-balanced sampling)
    accumulate: int = 1  # gradient accumulation steps
    flip: float = 0.5  # probability of a horizontal flip with left/right entity swap
    crop_jitter: float = 0.1  # entity crops: random zoom-in up to this fraction and a matching shift (per clip)
    colour_jitter: float = 0.2  # brightness and contrast factors drawn from [1 - x, 1 + x] (per clip)
    keypoint_noise: float = 0.0  # std of Gaussian keypoint noise, in entity-box sides
    temporal_crop: float = 0.0  # draw the T segments from a random sub-span keeping >= 1 - x of the clip: trains
    # for the partial, off-centre windows `predict` sees in long videos (0 = always the whole clip)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer {self.optimizer!r} is not adamw or sgd")
        if self.balance not in ("none", "reweight", "sample"):
            raise ValueError(f"balance {self.balance!r} is not none, reweight or sample")
        if not 0.0 <= self.temporal_crop < 1.0:
            raise ValueError("temporal_crop must lie in [0, 1)")
        if self.epochs < 1 or self.batch_size < 1 or self.accumulate < 1:
            raise ValueError("epochs, batch_size and accumulate must be >= 1")


@dataclass(frozen=True)
class LabelledClips:
    """Clip names (items of a TubeSet) with their labels, for one split."""

    names: tuple[str, ...]
    labels: tuple[int, ...]
    coarse: tuple[int, ...] | None = None


def segment_indices(available: int, count: int, train: bool, rng: np.random.Generator | None = None,
                    temporal_crop: float = 0.0) -> np.ndarray:
    """TSM segment sampling: `count` segments over `available` cached frames, a random frame in each (training) or
    the centre of each (evaluation). With `temporal_crop` (training only) the segments cover a random sub-span of
    at least 1 - temporal_crop of the frames. Indices are in range and non-decreasing."""
    lo, hi = 0.0, float(available)
    if train and rng is not None and temporal_crop > 0:
        span = available * (1 - temporal_crop * rng.random())
        lo = rng.random() * (available - span)
        hi = lo + span
    edges = np.linspace(lo, hi, count + 1)
    if train and rng is not None:
        picks = edges[:-1] + rng.random(count) * (edges[1:] - edges[:-1])
    else:
        picks = (edges[:-1] + edges[1:]) / 2
    return np.minimum(picks.astype(int), available - 1)


def augment(batch: dict) -> dict:
    """Apply the crop and colour jitter a training batch carries (drawn per clip by the dataset: ``crop`` (B, K, 3)
    windows, ``colour`` (B, 2) brightness and contrast) on the batch's device, so data loader workers only read
    and select frames."""
    if "crop" in batch:
        batch["tubes"] = jitter_crops(batch["tubes"], batch.pop("crop"))
    if "colour" in batch:
        brightness, contrast = batch.pop("colour").unbind(-1)
        batch["tubes"] = colour_jitter(batch["tubes"], brightness, contrast)
        batch["frames"] = colour_jitter(batch["frames"], brightness, contrast)
    return batch


class ClipDataset(Dataset):
    """Samples of T frames from cached tubes, flipped in training, with the crop and colour jitter to apply drawn
    (`augment` applies them to the batch on the training device).

    Randomness comes from a generator seeded by (seed, epoch, index), so a sample is the same whichever worker
    draws it and whether or not the run was resumed.
    """

    def __init__(self, tubes: TubeSet, clips: LabelledClips, config: ModelConfig, params: TrainParams,
                 train: bool):
        self.tubes, self.clips, self.config, self.params, self.train = tubes, clips, config, params, train
        self.entities = get_entity_set(config.entity_set)
        self.layout = get_layout(config.layout)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.clips.names)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.params.seed, self.epoch, i])
        a = self.tubes.load(self.clips.names[i])
        idx = segment_indices(len(a["frame_index"]), self.config.num_frames, self.train, rng,
                              self.params.temporal_crop)
        tubes, frames, keypoints, boxes = a["tubes"][idx], a["frames"][idx], a["keypoints"][idx], a["boxes"][idx]
        if self.train and rng.random() < self.params.flip:
            tubes, boxes, keypoints, frames = hflip_clip(tubes, boxes, keypoints, a["meta"]["width"], self.entities,
                                                         self.layout, frames)
        if self.train and self.params.keypoint_noise > 0:
            side = float(np.median(boxes[..., 2] - boxes[..., 0]))
            keypoints = keypoints.copy()
            keypoints[..., :2] += rng.normal(0, self.params.keypoint_noise * side, keypoints[..., :2].shape)
        item = {"tubes": torch.from_numpy(np.ascontiguousarray(tubes)),
                "frames": torch.from_numpy(np.ascontiguousarray(frames)),
                "keypoints": torch.from_numpy(np.ascontiguousarray(keypoints)).float(),
                "boxes": torch.from_numpy(np.ascontiguousarray(boxes)).float(),
                "label": torch.tensor(self.clips.labels[i])}
        if self.train and self.params.crop_jitter > 0:  # applied to the batch by `augment`
            item["crop"] = torch.from_numpy(draw_crop_windows(len(self.entities), tubes.shape[-1],
                                                              self.params.crop_jitter, rng))
        if self.train and self.params.colour_jitter > 0:
            item["colour"] = torch.from_numpy((1 + self.params.colour_jitter * (2 * rng.random(2) - 1)
                                               ).astype(np.float32))
        if self.clips.coarse is not None:
            item["coarse"] = torch.tensor(self.clips.coarse[i])
        return item


class KeypointClipDataset(Dataset):
    """Pose-only samples straight from a keypoint output (no tubes, no video): entity boxes are computed from the
    keypoints, T frames drawn by TSM segment sampling, flips mirror the keypoints and swap left and right."""

    def __init__(self, keypoints, clips: LabelledClips, config: ModelConfig, params: TrainParams, train: bool):
        from dualnet.entities import entity_boxes

        self.clips, self.config, self.params, self.train = clips, config, params, train
        self.entities = get_entity_set(config.entity_set)
        self.layout = get_layout(config.layout)
        self.epoch = 0
        self.items = []  # keypoints are small: load once, boxes once
        for name in clips.names:
            clip = keypoints.load(name)
            kp = clip.keypoints.astype(np.float64)
            boxes, _ = entity_boxes(kp, self.layout, self.entities, (clip.width or 1, clip.height or 1))
            self.items.append((kp.astype(np.float32), boxes.astype(np.float32)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.params.seed, self.epoch, i])
        kp, boxes = self.items[i]
        idx = segment_indices(len(kp), self.config.num_frames, self.train, rng, self.params.temporal_crop)
        kp, boxes = kp[idx].copy(), boxes[idx].copy()
        if self.train and rng.random() < self.params.flip:
            order = flip_order(self.entities)
            boxes = np.stack([-boxes[..., 2], boxes[..., 1], -boxes[..., 0], boxes[..., 3]], axis=-1)[:, order]
            kp[..., 0] = -kp[..., 0]  # mirror about x = 0: the encoder is translation-invariant
            perm = np.arange(self.layout.num_keypoints)
            for a, b in self.layout.flip_pairs:
                perm[a], perm[b] = b, a
            kp = kp[:, perm]
        if self.train and self.params.keypoint_noise > 0:
            side = float(np.median(boxes[..., 2] - boxes[..., 0]))
            kp[..., :2] += rng.normal(0, self.params.keypoint_noise * side, kp[..., :2].shape)
        return {"keypoints": torch.from_numpy(kp), "boxes": torch.from_numpy(boxes),
                "label": torch.tensor(self.clips.labels[i])}


def make_dataset(source, clips: LabelledClips, config: ModelConfig, params: TrainParams, train: bool) -> Dataset:
    """Samples from cached tubes (a TubeSet), or pose-only samples from keypoints (a KeypointSet)."""
    if isinstance(source, TubeSet):
        return ClipDataset(source, clips, config, params, train)
    if config.uses_rgb:
        raise ValueError(f"modality {config.modality!r} needs tubes; keypoints alone feed only the pose modality")
    return KeypointClipDataset(source, clips, config, params, train)


def run_key(config: ModelConfig, params: TrainParams, tubes: TubeSet, train: LabelledClips,
            val: LabelledClips | None) -> str:
    return stable_hash({"stage": STAGE, "version": VERSION, "model": asdict(config), "params": asdict(params),
                        "inputs": {tubes.output.stage: tubes.output.key},
                        "data": [asdict(train), asdict(val) if val is not None else None]})


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


def _inputs(batch: dict) -> dict:
    """The model inputs a batch has (pose-only data has no tubes or frames)."""
    return {k: batch[k] for k in ("tubes", "frames", "keypoints", "boxes") if k in batch}


def _batch_to(batch: dict, device: torch.device) -> dict:  # non_blocking: batches come pinned when on CUDA
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict(model: MicroDualNet, loader: DataLoader, device: torch.device) -> dict[str, np.ndarray]:
    """Scores, labels and routing weights of every clip the loader yields (evaluation mode)."""
    model.eval()
    out: dict[str, list] = {"scores": [], "labels": [], "routing": [], "coarse_scores": [], "coarse": []}
    for batch in loader:
        batch = _batch_to(batch, device)
        result = model(**_inputs(batch))
        out["scores"].append(result.logits.float().cpu())
        out["labels"].append(batch["label"].cpu())
        out["routing"].append(result.routing.float().cpu())
        if result.coarse_logits is not None and "coarse" in batch:
            out["coarse_scores"].append(result.coarse_logits.float().cpu())
            out["coarse"].append(batch["coarse"].cpu())
    return {k: torch.cat(v).numpy() for k, v in out.items() if v}


class TrainProgress:
    """Callbacks of `train` (the CLI draws them with Rich)."""

    def start(self, epochs: int, start_epoch: int, steps_per_epoch: int) -> None:
        """Training from `start_epoch` (> 0 when resumed)."""

    def step(self, loss: float, lr: float, clips: int) -> None:
        """One optimiser step over `clips` clips."""

    def epoch(self, record: dict) -> None:
        """An epoch's metrics are in."""


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
        record["keypoints"] = {"stage": output.stage, "key": output.key, "params": manifest.get("params", {}),
                               "layout": manifest.get("layout")}
    except DualnetError:
        pass  # the keypoint output was collected away: predict then falls back to default parameters
    return record


def train(config: ModelConfig, tubes, train_clips: LabelledClips, val_clips: LabelledClips | None = None,
          params: TrainParams = TrainParams(), store: Store | str | Path | None = None,
          progress: TrainProgress | None = None, device: str | None = None, num_workers: int = 0,
          classes: list[str] | None = None) -> TrainResult:
    """Train (or resume, or reuse) the run that `config`, `params` and the data define.

    Args:
        tubes: Where clips come from: a TubeSet (any modality), or a KeypointSet (pose modality only).
        classes: Class names, saved in the checkpoints for `predict` (not part of the run's key).
    """
    store = store if isinstance(store, Store) else Store(store if store is not None else tubes.store.root)
    rank, world = _distributed()
    progress = progress if progress is not None and rank == 0 else TrainProgress()
    if device is None:
        device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    key = run_key(config, params, tubes, train_clips, val_clips)
    output = store.stage(STAGE, key)
    run_dir = output.path
    if rank > 0:  # only rank 0 takes the store lock and writes; the others follow it
        _barrier(world)
        return _train_loop(config, tubes, train_clips, val_clips, params, run_dir, progress, dev, num_workers,
                           rank, world, key, classes)
    with store.lock(Shard()):
        k = len(get_entity_set(config.entity_set))
        model_summary = (f"{config.backbone} {config.modality} path={config.path} D={config.dim} "
                         f"T={config.num_frames} K={k} classes={config.num_classes}")
        output.prepare({"stage": STAGE, "version": VERSION, "params": {**asdict(params), "model": model_summary},
                        "model": asdict(config), "epochs": params.epochs,
                        "inputs": {tubes.output.stage: tubes.output.key}},
                       Shard())
        output.finish(Shard())
        store.set_ref(STAGE, key, asdict(params))
        _barrier(world)
        return _train_loop(config, tubes, train_clips, val_clips, params, run_dir, progress, dev, num_workers,
                           rank, world, key, classes)


def _train_loop(config: ModelConfig, tubes: TubeSet, train_clips: LabelledClips, val_clips: LabelledClips | None,
                params: TrainParams, run_dir: Path, progress: TrainProgress, dev: torch.device, num_workers: int,
                rank: int, world: int, key: str, classes: list[str] | None = None) -> TrainResult:
    """The epochs themselves; every rank runs it, rank 0 alone writes."""
    history_path = run_dir / "metrics.jsonl"
    if (run_dir / "done.json").exists():
        history = [json.loads(line) for line in history_path.read_text().splitlines() if line.strip()]
        return TrainResult(run_dir, key, 0, history, reused=True)
    torch.manual_seed(params.seed)
    model = MicroDualNet(config).to(dev)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda"
                                                        else None)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if params.optimizer == "adamw":
        optimizer = torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay)
    else:
        optimizer = torch.optim.SGD(trainable, lr=params.lr, momentum=0.9, nesterov=True,
                                    weight_decay=params.weight_decay)
    train_set = make_dataset(tubes, train_clips, config, params, train=True)
    steps_per_epoch = math.ceil(len(train_set) / world / params.batch_size / params.accumulate)
    scheduler = _schedule(optimizer, params, steps_per_epoch)
    counts = np.bincount(train_clips.labels, minlength=config.num_classes).astype(np.float64)
    class_weights = None
    if params.balance == "reweight":
        weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / (counts > 0).sum(), 0.0)
        class_weights = torch.tensor(weights, dtype=torch.float32, device=dev)
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
    progress.start(params.epochs, start_epoch, steps_per_epoch)
    pin = dev.type == "cuda"  # page-locked batches: the host-to-device copy overlaps compute
    val_loader = None
    if val_clips is not None and len(val_clips.names):
        val_loader = DataLoader(make_dataset(tubes, val_clips, config, params, train=False),
                                batch_size=params.batch_size, num_workers=num_workers, pin_memory=pin)
    for epoch in range(start_epoch, params.epochs):
        train_set.epoch = epoch
        order = torch.Generator().manual_seed(params.seed * 100_003 + epoch)
        if world > 1:  # each rank a disjoint 1/world of the (shuffled) clips
            sampler = torch.utils.data.DistributedSampler(train_set, world, rank, shuffle=True,
                                                          seed=params.seed)
            sampler.set_epoch(epoch)
            loader = DataLoader(train_set, batch_size=params.batch_size, sampler=sampler, num_workers=num_workers,
                                pin_memory=pin)
        elif params.balance == "sample":
            per_clip = 1.0 / counts[np.asarray(train_clips.labels)]
            sampler = torch.utils.data.WeightedRandomSampler(per_clip, len(train_set), generator=order)
            loader = DataLoader(train_set, batch_size=params.batch_size, sampler=sampler, num_workers=num_workers,
                                pin_memory=pin)
        else:
            loader = DataLoader(train_set, batch_size=params.batch_size, shuffle=True, generator=order,
                                num_workers=num_workers, pin_memory=pin)
        model.train()
        started, seen, losses = time.perf_counter(), 0, []
        optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(loader):
            batch = augment(_batch_to(batch, dev))
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                out = net(**_inputs(batch))
                loss, _ = model.loss(out, batch["label"], batch.get("coarse"), class_weights)
            (loss / params.accumulate).backward()
            if (i + 1) % params.accumulate == 0 or i + 1 == len(loader):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            seen += len(batch["label"])
            losses.append(float(loss.detach()))
            progress.step(losses[-1], scheduler.get_last_lr()[0], len(batch["label"]))
            kill_point("train.batch")
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "lr": scheduler.get_last_lr()[0],
                  "clips_per_s": world * seen / max(time.perf_counter() - started, 1e-9)}
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
        progress.epoch(record)
        _barrier(world)
    if rank == 0:
        write_json_atomic(run_dir / "done.json", {"epochs": params.epochs, "best": best})
    return TrainResult(run_dir, key, params.epochs - start_epoch, history)


def model_from_state(state: dict) -> MicroDualNet:
    """The model a loaded checkpoint holds (its config travels with it), in evaluation mode."""
    model = MicroDualNet(ModelConfig(**state["config"]))
    model.load_state_dict(state["model"])
    return model.eval()


def load_checkpoint(checkpoint: str | Path, device: str = "cpu") -> tuple[MicroDualNet, dict]:
    """The model a checkpoint this stage wrote holds, on `device`, and the checkpoint itself (config, classes, data).

    Every command that takes a checkpoint loads it here: a file that is missing, is not a torch file (text, a
    truncated copy) or is a torch file of something else fails as one InputError naming it.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)  # the optimiser state stays off the GPU
    except Exception as e:  # torch raises many kinds here (UnpicklingError, EOFError, RuntimeError from the zip)
        raise InputError(path, f"not a dualnet checkpoint ({type(e).__name__}: {_one_line(e)})") from None
    if not isinstance(state, dict) or not {"model", "config"} <= state.keys():
        raise InputError(path, "not a dualnet checkpoint (a torch file without 'model' and 'config')")
    try:
        return model_from_state(state).to(device), state
    except Exception as e:  # a config or weights this version of the model cannot take
        raise InputError(path, f"not a dualnet checkpoint this version can load ({type(e).__name__}: "
                               f"{_one_line(e)})") from None


def _one_line(error: Exception, limit: int = 200) -> str:
    """An exception's message on one line (load_state_dict's lists every key on its own line), at most `limit`
    characters."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_model(checkpoint: str | Path, device: str = "cpu") -> MicroDualNet:
    """A model from a checkpoint this stage wrote (see `load_checkpoint`)."""
    return load_checkpoint(checkpoint, device)[0]
