"""Micro-DualNet: body-part entities through parallel spatial-temporal and temporal-spatial paths, routed per
entity, with a mutual-consistency loss between the paths.

    >>> import dualnet
    >>> model = dualnet.MicroDualNet(dualnet.preset("tiny", num_classes=52))
    >>> out = model(tubes=tubes, frames=frames, keypoints=keypoints, boxes=boxes)
    >>> loss, parts = model.loss(out, labels)

Inputs (B clips, T frames, K entities, S entity size, G global size, V keypoints):
    frames (B, T, 3, G, G), uint8 or ImageNet-normalised float (rgb modalities), with tubes (B, T, K, 3, S, S)
    (``sem="crops"``) or frame_boxes (B, T, K, 4), the entity boxes in the global frames' pixels
    (``sem="roialign"``); keypoints (B, T, V, 3) x, y, score with NaN where absent ((B, T, V, 4) = x, y, score, z
    with ``pose_depth``), and boxes (B, T, K, 4) in source pixels (pose modalities).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from dualnet.backbone import TSMResNet
from dualnet.config import ModelConfig
from dualnet.encoders import PoseEntityEncoder, VisualEntityEncoder, normalize_images
from dualnet.entities import get_entity_set
from dualnet.layouts import get_layout
from dualnet.losses import mac_loss, total_loss
from dualnet.paths import STPath, TSPath
from dualnet.routing import EntityRouter, fuse


@dataclass
class DualNetOutput:
    """What a forward pass returns."""

    logits: torch.Tensor  # (B, num_classes)
    coarse_logits: torch.Tensor | None  # (B, num_coarse) when the config has a coarse head
    routing: torch.Tensor  # (B, K, 2): a_ST, a_TS per entity (fixed for path st / ts / average)
    entity_st: torch.Tensor | None  # (B, K, D) time-pooled ST-path entity features (None for path=ts)
    entity_ts: torch.Tensor | None  # (B, K, D) time-pooled TS-path entity features (None for path=st)
    mac: torch.Tensor | None  # the MAC loss of this batch (None when off or only one path runs)


class MicroDualNet(nn.Module):
    """The model, built from a `ModelConfig` (see `dualnet.config.preset`)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        entities = get_entity_set(config.entity_set)
        self.num_entities = k = len(entities)
        d = config.dim
        self.backbone: TSMResNet | None = None
        # TSM's partial BN: a backbone that starts from ImageNet weights keeps their BatchNorm statistics and affine
        # parameters (all but the first BN), so 112-px entity crops and 224-px frames never mix into new running
        # statistics. The weights themselves are loaded by whoever has them (`load_backbone_weights`): building a
        # model never touches the network or the disk.
        self.partial_bn = config.uses_rgb and bool(config.pretrained)
        if config.uses_rgb:
            self.backbone = TSMResNet(config.backbone, config.shift_div)
            if self.partial_bn:
                for norm in self._frozen_norms():
                    norm.requires_grad_(False)
            if config.entities:
                self.visual = VisualEntityEncoder(self.backbone.feature_dim, d)
        if config.uses_pose:
            self.pose = PoseEntityEncoder(get_layout(config.layout), entities, d, encoding=config.pose_encoding,
                                          stride=config.pose_stride, depth=config.pose_depth)
        if config.uses_rgb and config.uses_pose:
            self.fuse_modalities = nn.Linear(2 * d, d)
        if config.mask_invisible and config.entities:
            self.missing_token = nn.Parameter(torch.zeros(1, 1, 1, d))  # an entity not seen in that frame
        if config.position_embeddings and config.entities:
            self.entity_embedding = nn.Parameter(torch.randn(1, 1, k, d) * 0.02)
            tokens = config.num_frames // config.pose_stride  # time steps the paths see
            self.time_embedding = nn.Parameter(torch.randn(1, tokens, 1, d) * 0.02)
        # Only what the configured path uses is built (DistributedDataParallel rejects parameters without gradients).
        args = (d, config.heads, config.depth, config.mlp_ratio, config.dropout)
        path = config.path if config.entities else "none"
        self.st_path = STPath(*args) if path in ("st", "dual", "average") else None
        self.ts_path = TSPath(*args) if path in ("ts", "dual", "average") else None
        self.router = EntityRouter(k, d) if path == "dual" else None
        self.projector = None
        if config.mac and path in ("dual", "average"):  # MAC needs both paths
            self.projector = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, config.mac_dim))
        head_in = (k * d if config.entities else 0) + (self.backbone.feature_dim if self.backbone is not None else 0)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(head_in, config.num_classes)
        self.coarse_head = nn.Linear(head_in, config.num_coarse) if config.num_coarse > 0 else None

    # -- weights and training ------------------------------------------------------------------------------------
    def _frozen_norms(self) -> list[nn.BatchNorm2d]:
        """The backbone's BatchNorms that partial BN freezes: all but the first (``bn1``), as TSM does."""
        return [m for m in self.backbone.modules() if isinstance(m, nn.BatchNorm2d) and m is not self.backbone.bn1]

    def load_backbone_weights(self, path: str | Path) -> None:
        """Load torchvision-keyed ImageNet weights (a local file) into the backbone."""
        if self.backbone is None:
            raise ValueError(f"modality {self.config.modality!r} has no backbone to load {path} into")
        self.backbone.load_pretrained(path)

    def train(self, mode: bool = True) -> MicroDualNet:
        """Training mode; with partial BN the frozen BatchNorms stay in eval mode (their statistics do not move)."""
        super().train(mode)
        if mode and self.partial_bn:
            for norm in self._frozen_norms():
                norm.eval()
        return self

    def parameter_groups(self, lr: float, weight_decay: float, backbone_lr_scale: float = 0.1) -> list[dict]:
        """Optimiser groups: a backbone that starts from pretrained weights at `backbone_lr_scale` x `lr` (the rest
        starts from scratch; a backbone from scratch learns at `lr` too); no weight decay on norms, biases and
        embeddings (1-D parameters, the routers' per-entity biases ``b1``/``b2`` and the position embeddings).
        Frozen parameters are left out."""
        backbone_lr_scale = backbone_lr_scale if self.config.pretrained else 1.0
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            leaf = name.rsplit(".", 1)[-1]
            no_decay = param.ndim <= 1 or leaf in ("b1", "b2") or leaf.endswith("_embedding")
            groups.setdefault((name.startswith("backbone."), no_decay), []).append(param)
        return [{"params": params, "lr": lr * (backbone_lr_scale if backbone else 1.0),
                 "weight_decay": 0.0 if no_decay else weight_decay,
                 "name": f"{'backbone' if backbone else 'heads'}{' (no decay)' if no_decay else ''}"}
                for (backbone, no_decay), params in sorted(groups.items())]

    # -- features ------------------------------------------------------------------------------------------------
    def entity_features(self, tubes: torch.Tensor | None = None, keypoints: torch.Tensor | None = None,
                        boxes: torch.Tensor | None = None, visible: torch.Tensor | None = None,
                        frame_maps: torch.Tensor | None = None, frame_boxes: torch.Tensor | None = None,
                        frame_size: int = 0) -> torch.Tensor:
        """Entity features X (B, T, K, D): visual, pose, or both fused, with position embeddings; with
        `visible` (B, T, K) and `mask_invisible`, entities not seen in a frame are the learned missing token.
        ROIAlign (``sem="roialign"``) pools from `frame_maps` (B*T, C, h, w), the backbone's maps of global frames
        of side `frame_size`, at `frame_boxes` (B, T, K, 4)."""
        parts = []
        if self.config.uses_rgb and self.config.sem == "roialign":
            if frame_maps is None or frame_boxes is None:
                raise ValueError("sem 'roialign' needs the global frames (B, T, 3, G, G) and frame_boxes (B, T, K, 4)")
            parts.append(self.visual.from_frame_maps(frame_maps, frame_boxes, frame_size, self.config.roi_size))
        elif self.config.uses_rgb:
            if tubes is None:
                raise ValueError(f"modality {self.config.modality!r} needs tubes (B, T, K, 3, S, S)")
            parts.append(self.visual(tubes, self.backbone))
        if self.config.uses_pose:
            if keypoints is None or boxes is None:
                raise ValueError(f"modality {self.config.modality!r} needs keypoints (B, T, V, "
                                 f"{4 if self.config.pose_depth else 3}) and boxes")
            parts.append(self.pose(keypoints, boxes))
        x = self.fuse_modalities(torch.cat(parts, dim=-1)) if len(parts) == 2 else parts[0]
        if visible is not None and visible.shape[1] != x.shape[1]:  # pose_stride: seen in any frame of the token
            visible = visible.unflatten(1, (x.shape[1], -1)).any(dim=2)  # (B, T / stride, K)
        if visible is not None and self.config.mask_invisible:
            seen = visible.to(x.dtype).unsqueeze(-1)  # (B, T, K, 1); a product keeps the token in every graph (DDP)
            x = x * seen + self.missing_token * (1 - seen)
        if self.config.position_embeddings:
            t = x.shape[1]
            if t * self.config.pose_stride > self.config.num_frames:
                raise ValueError(f"{t} frames, but the model was built for num_frames={self.config.num_frames}")
            x = x + self.entity_embedding + self.time_embedding[:, :t]
        return x

    def frame_maps(self, frames: torch.Tensor) -> torch.Tensor:
        """The backbone's feature maps (B*T, C, h, w) of the global frames (B, T, 3, G, G)."""
        return self.backbone.forward_features(rearrange(normalize_images(frames), "b t c h w -> (b t) c h w"),
                                              frames.shape[1])

    def global_features(self, frames: torch.Tensor, maps: torch.Tensor | None = None) -> torch.Tensor:
        """f_CNN (B, C): the backbone on the global frames (or their `maps`), pooled over space and time."""
        maps = self.frame_maps(frames) if maps is None else maps
        return rearrange(maps.mean(dim=(2, 3)), "(b t) c -> b t c", b=frames.shape[0]).mean(dim=1)

    # -- forward -------------------------------------------------------------------------------------------------
    def forward(self, tubes: torch.Tensor | None = None, frames: torch.Tensor | None = None,
                keypoints: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
                path: str | None = None, labels: torch.Tensor | None = None,
                visible: torch.Tensor | None = None, frame_boxes: torch.Tensor | None = None) -> DualNetOutput:
        """Classify a batch of clips. `path` runs another path than the config's, among those the model built (a
        dual model runs st, ts and average too). With `labels` (B,) (training), MAC does not take clips of the same
        class as negatives of each other. `visible` (B, T, K) bool: which entities' own keypoints were seen in
        each frame (see `ModelConfig.mask_invisible`). `frame_boxes` (B, T, K, 4): the entity boxes in the global
        frames' pixels (``sem="roialign"``). Paths that do not run (``none``, or no entities) route with zeros."""
        path = (path or self.config.path) if self.config.entities else "none"
        needs_st, needs_ts = path in ("st", "dual", "average"), path in ("ts", "dual", "average")
        if (needs_st and self.st_path is None) or (needs_ts and self.ts_path is None) or \
                (path == "dual" and self.router is None):
            raise ValueError(f"path {path!r} needs modules a model built for path {self.config.path!r} does not have")
        maps = None
        if self.backbone is not None:
            if frames is None:
                raise ValueError("rgb modalities need the global frames (B, T, 3, G, G)")
            maps = self.frame_maps(frames)  # (B*T, C, h, w): f_CNN, and the entities' with ROIAlign
        if not self.config.entities:  # TSM alone: the clip feature is all the head sees
            h = self.dropout(self.global_features(frames, maps))
            coarse = self.coarse_head(h) if self.coarse_head is not None else None
            return DualNetOutput(logits=self.head(h), coarse_logits=coarse,
                                 routing=h.new_zeros(h.shape[0], self.num_entities, 2), entity_st=None,
                                 entity_ts=None, mac=None)
        x = self.entity_features(tubes, keypoints, boxes, visible, maps, frame_boxes,
                                 frames.shape[-1] if frames is not None else 0)  # (B, T, K, D)
        b, k = x.shape[0], x.shape[2]
        x_st = self.st_path(x) if needs_st else None
        x_ts = self.ts_path(x) if needs_ts else None
        if path == "dual":
            weights = self.router(x_st, x_ts, self.config.tau)
        else:
            fixed = {"st": (1.0, 0.0), "ts": (0.0, 1.0), "average": (0.5, 0.5), "none": (0.0, 0.0)}[path]
            weights = x.new_tensor(fixed).expand(b, k, 2)
        if x_st is None and x_ts is None:
            fused = x  # path none: the entities straight to the head
        elif x_st is None:
            fused = x_ts
        elif x_ts is None:
            fused = x_st
        else:
            fused = fuse(x_st, x_ts, weights)
        pooled_st = x_st.mean(dim=1) if x_st is not None else None  # (B, K, D)
        pooled_ts = x_ts.mean(dim=1) if x_ts is not None else None
        mac = None
        if self.projector is not None and pooled_st is not None and pooled_ts is not None:
            present = visible.any(dim=1) if visible is not None and self.config.mask_invisible else None  # (B, K)
            mac = mac_loss(self.projector(pooled_st), self.projector(pooled_ts), self.config.mac_temperature, labels,
                           present, gather=self.training)  # negatives from every rank under DDP
        f_entity = fused.mean(dim=1).flatten(1)  # (B, K*D): entities keep their identity in the head
        if maps is not None:
            f_entity = torch.cat([self.global_features(frames, maps), f_entity], dim=1)
        h = self.dropout(f_entity)
        return DualNetOutput(
            logits=self.head(h),
            coarse_logits=self.coarse_head(h) if self.coarse_head is not None else None,
            routing=weights,
            entity_st=pooled_st,
            entity_ts=pooled_ts,
            mac=mac,
        )

    def loss(self, out: DualNetOutput, labels: torch.Tensor, coarse_labels: torch.Tensor | None = None,
             class_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """``CE + lambda * MAC`` (+ the coarse head's CE); returns the total and its parts."""
        return total_loss(out.logits, labels, out.mac, self.config.mac_lambda, out.coarse_logits, coarse_labels,
                          self.config.coarse_weight, class_weights)
