"""Entity encoders: visual (the backbone on each entity tube) and pose (each entity's keypoints), both to D."""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange
from torch import nn

from dualnet.backbone import TSMResNet
from dualnet.entities import Entity
from dualnet.layouts import Layout
from dualnet.roi_align import roi_align

ENCODINGS = ("entity", "body", "body_distances")  # the pose encoder's inputs, see PoseEntityEncoder
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float, ImageNet-normalised; float input is taken as already normalised."""
    if x.dtype != torch.uint8:
        return x
    mean = x.new_tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = x.new_tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return (x.float() / 255.0 - mean) / std


class VisualEntityEncoder(nn.Module):
    """Backbone features of every entity, reduced to D by a depthwise-separable convolution (paper): pooled by
    ROIAlign out of the global frame's feature map (`from_frame_maps`, the paper's SEM), or the backbone run on
    each entity crop (`forward`, ours).

    The backbone is shared with the global branch and passed in, not owned.
    """

    def __init__(self, feature_dim: int, dim: int):
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim, 3, padding=1, groups=feature_dim, bias=False),  # depthwise
            nn.BatchNorm2d(feature_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(feature_dim, dim, 1, bias=False),  # pointwise
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )

    def forward(self, tubes: torch.Tensor, backbone: TSMResNet) -> torch.Tensor:
        """tubes (B, T, K, 3, S, S) -> (B, T, K, D)."""
        b, t, k = tubes.shape[:3]
        x = rearrange(normalize_images(tubes), "b t k c h w -> (b k t) c h w")  # each tube's frames consecutive
        features = self.reduce(backbone.forward_features(x, t)).flatten(1)  # (B*K*T, D)
        return rearrange(features, "(b k t) d -> b t k d", b=b, k=k, t=t)

    def from_frame_maps(self, maps: torch.Tensor, frame_boxes: torch.Tensor, frame_size: int,
                        roi_size: int) -> torch.Tensor:
        """maps (B*T, C, h, w) of the global frames (side `frame_size`) and entity boxes (B, T, K, 4) in those
        frames' pixels -> (B, T, K, D)."""
        b, t, k = frame_boxes.shape[:3]
        pooled = roi_align(maps, frame_boxes.reshape(b * t, k, 4), roi_size, maps.shape[-1] / frame_size)
        features = self.reduce(pooled.flatten(0, 1)).flatten(1)  # (B*T*K, D)
        return rearrange(features, "(b t k) d -> b t k d", b=b, t=t, k=k)


class PoseEntityEncoder(nn.Module):
    """Each entity's keypoints, centred and scaled by the entity box, with velocities, through an MLP to D.

    Per point: x, y relative to the box centre in box sides, their change since the previous frame, and the score;
    missing points are zeros (and masked out of the velocities). Per entity, ours: where its box is and how it
    moves, relative to the person (box centre minus the mean centre of all entity boxes, in mean box sides; log of
    its side over the mean side; their changes since the previous frame): centring each entity on its own box
    would otherwise hide where a hand is relative to the head, which is what several micro-actions are. One MLP
    per entity (its points differ).
    """

    FEATURES = 5  # x, y, vx, vy, score
    BOX_FEATURES = 5  # cx, cy, log side (relative to the person), vx, vy
    # encoding "body" adds, per point, its place in the whole person (centre and scale of all body joints) and its
    # motion there at one and two frames; per entity, the person's own motion (the trajectory centring removes);
    # and to every entity the whole body's joints in person coordinates (the context: JHMDB's elbows, for one, are
    # in no entity). "body_distances" adds, for every pair of body joints, their distance in person scales (DD-Net's
    # joint collection distances: unchanged by rotation in the image plane, which side views and hand poses need).
    BODY_POINT_FEATURES = 6  # x, y in the person, their change over 1 and 2 frames
    PERSON_FEATURES = 4  # the person centre's motion since the previous frame, and its offset from its mean
    # depth (keypoints (B, T, V, 4) = x, y, score, z; z in the units of x, y), the z counterparts of the above: per
    # point, z relative to the entity's mean z in box sides and its change since the previous frame; with "body"
    # encodings also z relative to the person's mean z in person scales and its change over 1 and 2 frames, each
    # body joint's z in the person and its change, and the person's own z motion. Missing z: 0, out of motion.
    DEPTH_POINT_FEATURES = 2  # z in the entity, its change over 1 frame
    BODY_DEPTH_POINT_FEATURES = 3  # z in the person, its change over 1 and 2 frames
    PERSON_DEPTH_FEATURES = 2  # the person's mean z: its motion since the previous frame, its offset from its mean

    def __init__(self, layout: Layout, entities: tuple[Entity, ...], dim: int, hidden: int | None = None,
                 encoding: str = "entity", stride: int = 1, depth: bool = False):
        super().__init__()
        if encoding not in ENCODINGS:
            raise ValueError(f"pose encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
        self.encoding, self.depth = encoding, depth
        body = list(layout.body) or list(range(layout.num_keypoints))
        self.register_buffer("body", torch.tensor(body, dtype=torch.long), persistent=False)  # (V_b,)
        indices = [e.indices(layout) for e in entities]
        points = max(1, max(len(i) for i in indices))
        index = np.zeros((len(entities), points), dtype=np.int64)
        mask = np.zeros((len(entities), points), dtype=bool)
        for k, idx in enumerate(indices):
            index[k, :len(idx)] = idx
            mask[k, :len(idx)] = True
        self.register_buffer("index", torch.from_numpy(index), persistent=False)  # (K, P)
        self.register_buffer("mask", torch.from_numpy(mask), persistent=False)  # (K, P)
        hidden = hidden or 2 * dim
        width = points * self.FEATURES + self.BOX_FEATURES
        pairs = torch.triu_indices(len(body), len(body), offset=1)  # (2, V_b (V_b - 1) / 2)
        self.register_buffer("pairs", pairs if encoding == "body_distances" else pairs[:, :0], persistent=False)
        if encoding != "entity":
            width += points * self.BODY_POINT_FEATURES + self.PERSON_FEATURES + len(body) * 4 + self.pairs.shape[1]
        if depth:
            width += points * self.DEPTH_POINT_FEATURES
            if encoding != "entity":
                width += points * self.BODY_DEPTH_POINT_FEATURES + self.PERSON_DEPTH_FEATURES + len(body) * 2
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, dim))
            for _ in entities)
        self.stride = stride
        levels = stride.bit_length() - 1  # stride is a power of 2: one halving per level
        self.temporal = nn.ModuleList(TemporalHalving(len(entities), dim) for _ in range(levels))

    def forward(self, keypoints: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """keypoints (B, T, V, 3) = x, y, score, or (B, T, V, 4) = x, y, score, z with depth; boxes (B, T, K, 4) ->
        (B, T / stride, K, D)."""
        channels = 4 if self.depth else 3
        if keypoints.shape[-1] != channels:
            what = "x, y, score, z: it was built with depth" if self.depth else "x, y, score"
            raise ValueError(f"keypoints of shape {tuple(keypoints.shape)}: the pose encoder takes (B, T, V, "
                             f"{channels}) ({what})")
        person = self.person_frame(keypoints, self.body) if self.encoding != "entity" else None  # once per batch
        feats = self.entity_features(keypoints, boxes, person)  # (B, T, K, F)
        if person is not None:
            feats = torch.cat([feats, self.body_features(keypoints, feats.shape[2], person)], dim=-1)
        if self.depth:
            feats = torch.cat([feats, self.depth_features(keypoints, boxes, person)], dim=-1)
        x = torch.stack([mlp(feats[:, :, k]) for k, mlp in enumerate(self.mlps)], dim=2)  # (B, T, K, D)
        for halving in self.temporal:
            x = halving(x)
        return x  # (B, T / stride, K, D)

    @staticmethod
    def _motion(x: torch.Tensor, valid: torch.Tensor, step: int) -> torch.Tensor:
        """x (B, T, ..., 2) -> its change over `step` frames per frame (zero where either end is invalid)."""
        out = torch.zeros_like(x)
        if x.shape[1] > step:
            both = (valid[:, step:] & valid[:, :-step]).unsqueeze(-1)
            out[:, step:] = torch.where(both, (x[:, step:] - x[:, :-step]) / step, 0.0)
        return out

    @staticmethod
    def person_frame(keypoints: torch.Tensor, body: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The person's centre per frame (B, T, 2) and one scale per clip (B, 1, 1): the mean of the visible body
        joints (the clip's mean where a frame has none) and the mean extent of the body over the frames."""
        pts = keypoints[:, :, body]  # (B, T, V_b, 3)
        valid = torch.isfinite(pts[..., :2]).all(-1) & (torch.nan_to_num(pts[..., 2], nan=0.0) > 0)
        xy = torch.nan_to_num(pts[..., :2])
        n = valid.sum(-1, keepdim=True)  # (B, T, 1)
        centre = (xy * valid.unsqueeze(-1)).sum(-2) / n.clamp_min(1)  # (B, T, 2)
        seen = n > 0
        clip_centre = (centre * seen).sum(1, keepdim=True) / seen.sum(1, keepdim=True).clamp_min(1)
        centre = torch.where(seen, centre, clip_centre)
        big = torch.finfo(xy.dtype).max
        lo = torch.where(valid.unsqueeze(-1), xy, big).amin(-2)
        hi = torch.where(valid.unsqueeze(-1), xy, -big).amax(-2)
        extent = torch.where(seen, (hi - lo).amax(-1, keepdim=True), 0.0)  # (B, T, 1)
        scale = extent.sum(1, keepdim=True) / seen.sum(1, keepdim=True).clamp_min(1)  # (B, 1, 1)
        return centre, scale.clamp_min(1e-6)

    def body_features(self, keypoints: torch.Tensor, k: int,
                      person: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The person's motion and the whole body's joints in person coordinates, (B, T, K, 4 + 4 V_b), the same
        for every entity. `person`: `person_frame`'s centre and scale."""
        centre, scale = person
        pts = keypoints[:, :, self.body]
        valid = torch.isfinite(pts[..., :2]).all(-1) & (torch.nan_to_num(pts[..., 2], nan=0.0) > 0)
        rel = torch.where(valid.unsqueeze(-1), (torch.nan_to_num(pts[..., :2]) - centre.unsqueeze(2))
                          / scale.unsqueeze(-1), 0.0)  # (B, T, V_b, 2)
        joints = torch.cat([rel, self._motion(rel, valid, 1)], dim=-1).flatten(-2)  # (B, T, 4 V_b)
        everywhere = torch.ones_like(centre[..., 0], dtype=torch.bool)
        person = torch.cat([self._motion(centre / scale, everywhere, 1),
                            (centre - centre.mean(1, keepdim=True)) / scale], dim=-1)  # (B, T, 4)
        i, j = self.pairs  # joint-pair distances (DD-Net's JCD): rotation-invariant, in person scales
        both = valid[..., i] & valid[..., j]  # (B, T, P)
        distances = torch.where(both, (rel[..., i, :] - rel[..., j, :]).norm(dim=-1), 0.0)  # (B, T, P)
        return torch.cat([person, joints, distances], dim=-1).unsqueeze(2).expand(-1, -1, k, -1)

    def entity_features(self, keypoints: torch.Tensor, boxes: torch.Tensor,
                        person: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Each entity's points in its box (and, given `person_frame`'s centre and scale, in the person) and its
        box, (B, T, K, F)."""
        pts = keypoints[:, :, self.index]  # (B, T, K, P, 3)
        centre = ((boxes[..., :2] + boxes[..., 2:]) / 2).unsqueeze(-2)  # (B, T, K, 1, 2)
        side = (boxes[..., 2:3] - boxes[..., 0:1]).clamp_min(1e-6).unsqueeze(-2)  # (B, T, K, 1, 1)
        score = torch.nan_to_num(pts[..., 2], nan=0.0)
        valid = torch.isfinite(pts[..., :2]).all(-1) & (score > 0) & self.mask  # (B, T, K, P)
        xy = torch.where(valid.unsqueeze(-1), (torch.nan_to_num(pts[..., :2]) - centre) / side, 0.0)
        moved = valid[:, 1:] & valid[:, :-1]
        velocity = torch.zeros_like(xy)
        velocity[:, 1:] = torch.where(moved.unsqueeze(-1), xy[:, 1:] - xy[:, :-1], 0.0)
        parts = [xy, velocity, (score * valid).unsqueeze(-1)]
        if person is not None:
            centre_p, scale = person
            in_person = torch.where(valid.unsqueeze(-1), (torch.nan_to_num(pts[..., :2])
                                                          - centre_p[:, :, None, None]) / scale[..., None, None],
                                    0.0)  # (B, T, K, P, 2)
            parts += [in_person, self._motion(in_person, valid, 1), self._motion(in_person, valid, 2)]
        feats = torch.cat(parts, dim=-1).flatten(-2)  # (B, T, K, P*F_point)
        return torch.cat([feats, self.box_features(boxes)], dim=-1)

    def depth_features(self, keypoints: torch.Tensor, boxes: torch.Tensor,
                       person: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The z features of each entity (see DEPTH_POINT_FEATURES), (B, T, K, F_z), from keypoints (B, T, V, 4);
        given `person_frame`'s centre and scale, also in the person (its x, y scale: z is in the units of x, y)."""
        pts = keypoints[:, :, self.index]  # (B, T, K, P, 4)
        valid = (torch.isfinite(pts[..., :2]).all(-1) & (torch.nan_to_num(pts[..., 2], nan=0.0) > 0) & self.mask
                 & torch.isfinite(pts[..., 3]))  # (B, T, K, P)
        z = torch.nan_to_num(pts[..., 3:4])  # (B, T, K, P, 1)
        n = valid.sum(-1, keepdim=True).unsqueeze(-1)  # (B, T, K, 1, 1)
        centre = (z * valid.unsqueeze(-1)).sum(-2, keepdim=True) / n.clamp_min(1)  # (B, T, K, 1, 1)
        side = (boxes[..., 2:3] - boxes[..., 0:1]).clamp_min(1e-6).unsqueeze(-2)  # (B, T, K, 1, 1)
        in_entity = torch.where(valid.unsqueeze(-1), (z - centre) / side, 0.0)  # (B, T, K, P, 1)
        parts = [in_entity, self._motion(in_entity, valid, 1)]
        if person is None:
            return torch.cat(parts, dim=-1).flatten(-2)  # (B, T, K, P * 2)
        _, scale = person  # (B, 1, 1)
        body = keypoints[:, :, self.body]  # (B, T, V_b, 4)
        body_valid = (torch.isfinite(body[..., :2]).all(-1) & (torch.nan_to_num(body[..., 2], nan=0.0) > 0)
                      & torch.isfinite(body[..., 3]))  # (B, T, V_b)
        body_z = torch.nan_to_num(body[..., 3:4])  # (B, T, V_b, 1)
        seen = body_valid.sum(-1, keepdim=True)  # (B, T, 1)
        mean_z = (body_z * body_valid.unsqueeze(-1)).sum(-2) / seen.clamp_min(1)  # (B, T, 1) the person's mean z
        clip_z = (mean_z * (seen > 0)).sum(1, keepdim=True) / (seen > 0).sum(1, keepdim=True).clamp_min(1)
        mean_z = torch.where(seen > 0, mean_z, clip_z)  # the clip's mean where a frame has no body joint's z
        in_person = torch.where(valid.unsqueeze(-1), (z - mean_z[:, :, None, None]) / scale[..., None, None], 0.0)
        parts += [in_person, self._motion(in_person, valid, 1), self._motion(in_person, valid, 2)]
        feats = torch.cat(parts, dim=-1).flatten(-2)  # (B, T, K, P * 5)
        rel = torch.where(body_valid.unsqueeze(-1), (body_z - mean_z.unsqueeze(2)) / scale.unsqueeze(-1), 0.0)
        joints = torch.cat([rel, self._motion(rel, body_valid, 1)], dim=-1).flatten(-2)  # (B, T, 2 V_b)
        everywhere = torch.ones_like(mean_z[..., 0], dtype=torch.bool)
        own = torch.cat([self._motion(mean_z / scale, everywhere, 1),
                         (mean_z - mean_z.mean(1, keepdim=True)) / scale], dim=-1)  # (B, T, 2)
        context = torch.cat([own, joints], dim=-1).unsqueeze(2).expand(-1, -1, feats.shape[2], -1)
        return torch.cat([feats, context], dim=-1)  # (B, T, K, P * 5 + 2 + 2 V_b)

    @staticmethod
    def box_features(boxes: torch.Tensor) -> torch.Tensor:
        """boxes (B, T, K, 4) -> (B, T, K, 5): centre and log side relative to the person, and the centre's motion."""
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2  # (B, T, K, 2)
        side = (boxes[..., 2:3] - boxes[..., 0:1]).clamp_min(1e-6)  # (B, T, K, 1)
        ref_side = side.mean(dim=2, keepdim=True)
        rel = (centre - centre.mean(dim=2, keepdim=True)) / ref_side
        motion = torch.zeros_like(rel)
        motion[:, 1:] = rel[:, 1:] - rel[:, :-1]
        return torch.cat([rel, torch.log(side / ref_side), motion], dim=-1)


class TemporalHalving(nn.Module):
    """Each entity's features over time, halved in length: a residual of a strided temporal convolution (kernel 3,
    its own weights per entity: one grouped convolution) on the pairwise mean of the frames. (B, T, K, D) ->
    (B, T / 2, K, D), T even."""

    def __init__(self, entities: int, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(entities * dim, entities * dim, 3, stride=2, padding=1, groups=entities)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, k, d = x.shape
        mean = x.view(b, t // 2, 2, k, d).mean(2)  # (B, T/2, K, D)
        y = self.conv(rearrange(self.norm(x), "b t k d -> b (k d) t"))  # (B, K*D, T/2)
        return mean + nn.functional.gelu(rearrange(y, "b (k d) t -> b t k d", k=k))
