"""Labelled clips as model inputs: TSM segment sampling, the datasets over tubes or keypoints, batched augmentation,
and scores over a loader."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dualnet.config import ModelConfig
from dualnet.entities import flip_order, get_entity_set
from dualnet.layouts import get_layout
from dualnet.model import MicroDualNet
from dualnet.transforms import (
    colour_jitter,
    draw_crop_windows,
    hflip_boxes,
    hflip_clip,
    hflip_pose,
    jitter_crops,
    rotate_pose,
)
from pipelines.errors import InputError
from pipelines.forking import forked_iter
from pipelines.formats.params import TrainParams
from pipelines.formats.pose_clips import PoseClips, ensure_pose_clips
from pipelines.formats.tube_packs import TubeSet, global_view


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
        if "tubes" in batch:
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
        roialign = self.config.sem == "roialign"  # the entities come from the frames' feature maps: no crops read
        a = self.tubes.load(self.clips.names[i], without=("tubes",) if roialign else ())
        idx = segment_indices(len(a["frame_index"]), self.config.num_frames, self.train, rng,
                              self.params.temporal_crop)
        frames, keypoints, boxes = a["frames"][idx], a["keypoints"][idx], a["boxes"][idx]
        tubes = None if roialign else a["tubes"][idx]
        visible = a["visible"][idx]
        scale, dx, dy = global_view(a["meta"])
        frame_boxes = boxes * scale + np.array([dx, dy, dx, dy], np.float32)  # (T, K, 4) global-frame pixels
        if self.train and rng.random() < self.params.flip:
            if roialign:
                boxes, keypoints = hflip_pose(boxes, keypoints, a["meta"]["width"], self.entities, self.layout)
                frames = frames[..., ::-1]
            else:
                tubes, boxes, keypoints, frames = hflip_clip(tubes, boxes, keypoints, a["meta"]["width"],
                                                             self.entities, self.layout, frames)
            frame_boxes = hflip_boxes(frame_boxes, frames.shape[-1], self.entities)
            visible = visible[:, flip_order(self.entities)]
        if self.train and self.params.keypoint_noise > 0:
            side = float(np.median(boxes[..., 2] - boxes[..., 0]))
            keypoints = keypoints.copy()
            keypoints[..., :2] += rng.normal(0, self.params.keypoint_noise * side, keypoints[..., :2].shape)
        item = {"frames": torch.from_numpy(np.ascontiguousarray(frames)),
                "keypoints": torch.from_numpy(np.ascontiguousarray(keypoints)).float(),
                "boxes": torch.from_numpy(np.ascontiguousarray(boxes)).float(),
                "frame_boxes": torch.from_numpy(np.ascontiguousarray(frame_boxes)).float(),
                "visible": torch.from_numpy(np.ascontiguousarray(visible, dtype=bool)),
                "label": torch.tensor(self.clips.labels[i])}
        if tubes is not None:
            item["tubes"] = torch.from_numpy(np.ascontiguousarray(tubes))
        if tubes is not None and self.train and self.params.crop_jitter > 0:  # applied to the batch by `augment`
            item["crop"] = torch.from_numpy(draw_crop_windows(len(self.entities), tubes.shape[-1],
                                                              self.params.crop_jitter, rng))
        if self.train and self.params.colour_jitter > 0:
            item["colour"] = torch.from_numpy((1 + self.params.colour_jitter * (2 * rng.random(2) - 1)
                                               ).astype(np.float32))
        if self.clips.coarse is not None:
            item["coarse"] = torch.tensor(self.clips.coarse[i])
        return item


class KeypointClipDataset(Dataset):
    """Pose-only samples straight from a keypoint output (no tubes, no video): entity boxes computed from the
    keypoints, T frames drawn by TSM segment sampling, flips mirror the keypoints and swap left and right.

    Each clip's keypoints, boxes and visibility come from the pose-clip cache of the keypoint output
    (`formats.pose_clips`): computed once, then read per sample, so that starting over 20,000 clips reads an index
    and holds a few numbers per clip. The dataset pickles as those numbers (DataLoader workers read the cache files
    themselves).

    With ``config.pose_depth`` a sample's keypoints are (T, V, 4) = x, y, score, z (every clip must have depth),
    else (T, V, 3) as they are stored.
    """

    def __init__(self, keypoints, clips: LabelledClips, config: ModelConfig, params: TrainParams, train: bool):
        self.clips, self.config, self.params, self.train = clips, config, params, train
        self.entities = get_entity_set(config.entity_set)
        self.layout = get_layout(config.layout)
        self.epoch = 0
        self.cache = pose_clips(keypoints, clips.names, config)
        if config.pose_depth and not self.cache.depth.all():
            flat = self.clips.names[int(np.argmin(self.cache.depth))]
            raise InputError(keypoints.output.path, f"the model takes depth (pose_depth), but "
                                                    f"{int((~self.cache.depth).sum())} of the {len(self.cache)} "
                                                    f"clips have none (2D keypoints), e.g. {flat!r}")

    def __len__(self) -> int:
        return len(self.clips.names)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.params.seed, self.epoch, i])
        kp, boxes, visible, depth = self.cache.read_with_depth(i)
        idx = segment_indices(len(kp), self.config.num_frames, self.train, rng, self.params.temporal_crop)
        kp, boxes, visible = kp[idx].copy(), boxes[idx].copy(), visible[idx]
        if self.config.pose_depth:  # (T, V, 4) = x, y, score, z: z travels with its joint through flips
            kp = np.concatenate([kp, depth[idx, :, None]], axis=-1)
        if self.train and rng.random() < self.params.flip:
            # mirror about x = 0: the encoder is translation-invariant (and z is not mirrored)
            boxes, kp = hflip_pose(boxes, kp, 0.0, self.entities, self.layout)
            visible = visible[:, flip_order(self.entities)]
        if self.train and self.params.rotate > 0:  # drawn only when on: the other draws stay as they were
            boxes, kp = rotate_pose(boxes, kp, rng.uniform(-self.params.rotate, self.params.rotate))
        if self.train and self.params.keypoint_noise > 0:
            side = float(np.median(boxes[..., 2] - boxes[..., 0]))
            kp[..., :2] += rng.normal(0, self.params.keypoint_noise * side, kp[..., :2].shape)
            if self.config.pose_depth:  # z at the same scale, drawn after x, y (2D samples are as before)
                kp[..., 3] += rng.normal(0, self.params.keypoint_noise * side, kp[..., 3].shape)
        item = {"keypoints": torch.from_numpy(kp), "boxes": torch.from_numpy(boxes),
                "visible": torch.from_numpy(np.ascontiguousarray(visible, dtype=bool)),
                "label": torch.tensor(self.clips.labels[i])}
        if not self.train and self.params.test_flip:  # the mirror image too: `predict` averages both
            boxes, kp = hflip_pose(boxes, kp, 0.0, self.entities, self.layout)
            item.update({"flipped_keypoints": torch.from_numpy(kp), "flipped_boxes": torch.from_numpy(boxes),
                         "flipped_visible": torch.from_numpy(np.ascontiguousarray(
                             visible[:, flip_order(self.entities)], dtype=bool))})
        return item


def pose_clips(keypoints, names, config: ModelConfig) -> PoseClips:
    """The pose-clip cache over `names` of a keypoint output (`formats.pose_clips`) for the config's layout and
    entity set, computing the clips not cached yet (under the store lock: call it before taking the lock)."""
    cache, _ = ensure_pose_clips(keypoints, list(names), config.layout, config.entity_set)
    return cache


def make_dataset(source, clips: LabelledClips, config: ModelConfig, params: TrainParams, train: bool) -> Dataset:
    """Samples from cached tubes (a TubeSet), or pose-only samples from keypoints (a KeypointSet)."""
    if isinstance(source, TubeSet):
        if config.pose_depth:
            raise InputError(source.output.path, "the model takes depth (pose_depth), but tubes hold 2D keypoints: "
                                                 "depth is for pose presets on a 3D keypoint import")
        if params.rotate and train:  # the tubes' crops are cut already: turning their keypoints alone would lie
            raise ValueError(f"rotate {params.rotate} turns pose-only training clips; tubes cannot be rotated")
        return ClipDataset(source, clips, config, params, train)
    if config.uses_rgb:
        raise ValueError(f"modality {config.modality!r} needs tubes; keypoints alone feed only the pose modality")
    return KeypointClipDataset(source, clips, config, params, train)


def model_inputs(batch: dict) -> dict:
    """The model inputs a batch has (pose-only data has no tubes or frames)."""
    return {k: batch[k] for k in ("tubes", "frames", "frame_boxes", "keypoints", "boxes", "visible") if k in batch}


def batch_to(batch: dict, device: torch.device) -> dict:  # non_blocking: batches come pinned when on CUDA
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict(model: MicroDualNet, loader: DataLoader, device: torch.device) -> dict[str, np.ndarray]:
    """Scores, labels and routing weights of every clip the loader yields (evaluation mode)."""
    model.eval()
    out: dict[str, list] = {"scores": [], "labels": [], "routing": [], "coarse_scores": [], "coarse": []}
    for batch in forked_iter(loader):
        batch = batch_to(batch, device)
        result = model(**model_inputs(batch))
        logits = result.logits.float()
        if "flipped_keypoints" in batch:  # test-time flip: the mean of the clip's and its mirror image's logits
            mirrored = {k: batch[f"flipped_{k}"] for k in ("keypoints", "boxes", "visible")}
            logits = (logits + model(**mirrored).logits.float()) / 2
        out["scores"].append(logits.cpu())
        out["labels"].append(batch["label"].cpu())
        out["routing"].append(result.routing.float().cpu())
        if result.coarse_logits is not None and "coarse" in batch:
            out["coarse_scores"].append(result.coarse_logits.float().cpu())
            out["coarse"].append(batch["coarse"].cpu())
    return {k: torch.cat(v).numpy() for k, v in out.items() if v}


