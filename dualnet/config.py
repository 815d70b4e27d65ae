"""Model configuration: one frozen dataclass, and named presets that set a few numbers.

Every ablation of the paper is a field: modality, path (st | ts | dual | average), routing tau, MAC on/off and its
lambda, K and the entity set. Values the authors state are marked (paper); the others are ours, chosen where the
paper is silent (see ../shared/docs/paper.md).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

MODALITIES = ("rgb", "pose", "rgb+pose")
PATHS = ("st", "ts", "dual", "average", "none")
SEMS = ("crops", "roialign")
BACKBONES = ("resnet18", "resnet50", "resnet101", "tiny")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a Micro-DualNet model."""

    num_classes: int = 52  # MA-52 fine classes (iMiGUE: 32)
    num_coarse: int = 0  # > 0 adds a coarse-label head (MA-52's 7 body levels); 0 = none
    modality: str = "rgb+pose"  # rgb | pose | rgb+pose (paper: RGB+pose for the headline numbers)
    path: str = "dual"  # st | ts | dual (routed) | average (fixed 0.5/0.5 fusion) | none (entity features straight
    # to the head, time-pooled: the paper's "+SEM" row)
    entities: bool = True  # False: no entities at all, the head on the backbone's clip feature (the paper's "TSM"
    # row; rgb only)
    backbone: str = "resnet101"  # resnet18 | resnet50 | resnet101 (paper) | tiny (CPU tests)
    pretrained: str = ""  # backbone start: "imagenet" (torchvision's weights, downloaded once and hash-checked by
    # `dualnet train`), a torchvision-keyed file path or URL, or "" = random init. Non-empty also turns on partial BN.
    num_frames: int = 8  # T, TSM segments per clip (paper)
    sem: str = "crops"  # the Spatial Entity Module of rgb modalities: "roialign" (paper: each entity box pooled
    # out of the backbone's feature map of the global frame) or "crops" (ours: the backbone runs again on each
    # cached entity crop tube; K + 1 backbone passes per frame instead of 1)
    roi_size: int = 3  # R, ROIAlign output side (ours: the paper does not give it; a 224 frame's map is 7 x 7)
    entity_set: str = "k6"  # k6: face, head, torso, hands, lower body (paper, MA-52); k5 without lower body (iMiGUE)
    layout: str = "mediapipe_holistic"  # keypoint layout of the pose input (decides each entity's points)
    dim: int = 256  # D, entity feature size (paper)
    pose_encoding: str = "entity"  # pose input per entity: "entity" (its points in its box, velocities, where the
    # box is in the person) or "body" (ours: also each point in the whole person, motion at 1 and 2 frames, the
    # person's own motion, and the whole body's joints as context for every entity); see encoders.py
    pose_stride: int = 1  # pose only: the pose encoder ends in strided temporal convolutions per entity, each token
    # then summarises `pose_stride` frames (ours: local motion before attention, and T / stride tokens instead of T);
    # 1 = one token per frame, no convolutions (as before it existed)
    pose_depth: bool = False  # pose only: keypoints carry z, (B, T, V, 4) = x, y, score, z from a 3D source
    # (SHREC'17), and the pose encoder adds z features as it has x, y ones (see encoders.py); False = x, y only, the
    # model as it was before depth existed (the same parameters and outputs)
    heads: int = 4  # attention heads in Spatial-T and Temporal-T (ours: D / 64)
    depth: int = 1  # transformer layers per Spatial-T / Temporal-T block (ours: one, the paper does not say)
    mlp_ratio: float = 2.0  # feed-forward width of those layers and of MLP_s / MLP_t, in multiples of D (ours)
    dropout: float = 0.1  # in attention, feed-forward and before the classifier (ours)
    position_embeddings: bool = True  # learnable entity and time embeddings (paper)
    mask_invisible: bool = False  # an entity whose own keypoints were not seen in a frame enters as a learned
    # "missing" token, and MAC leaves clips where it is never seen out (the presets turn it on; False = as trained
    # before it existed, so older checkpoints load)
    tau: float = 1.0  # routing softmax temperature (ours: 1.0, the paper does not give it)
    mac: bool = True  # mutual action consistency loss between the paths (paper)
    mac_lambda: float = 0.1  # L = L_CE + lambda * L_MAC (paper: 0.1)
    mac_temperature: float = 0.1  # InfoNCE temperature of MAC (ours)
    mac_dim: int = 128  # projection size for MAC (ours)
    coarse_weight: float = 1.0  # weight of the coarse-label cross-entropy when num_coarse > 0 (ours)
    shift_div: int = 8  # TSM: shift 1/shift_div of the channels each way in time (TSM's default)
    entity_size: int = 112  # S, entity crop side fed to the backbone (ours; the tubes stage default)
    global_size: int = 224  # G, global frame side (the TSM convention the paper assumes)

    def __post_init__(self) -> None:
        if self.pretrained == "none":  # said explicitly: random init
            object.__setattr__(self, "pretrained", "")
        for name, allowed in (("modality", MODALITIES), ("path", PATHS), ("backbone", BACKBONES), ("sem", SEMS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if not self.entities and self.modality != "rgb":
            raise ValueError("entities=False (TSM alone) classifies the global frames: it needs modality 'rgb'")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.pose_stride < 1 or self.pose_stride & (self.pose_stride - 1) or self.num_frames % self.pose_stride:
            raise ValueError(f"pose_stride {self.pose_stride} must be a power of 2 dividing num_frames "
                             f"{self.num_frames}")
        if self.pose_stride > 1 and self.modality != "pose":
            raise ValueError("pose_stride > 1 pools frames in time: it needs modality 'pose' (images keep one token "
                             "per frame)")
        if self.pose_depth and self.modality != "pose":
            raise ValueError("pose_depth reads z from a 3D keypoint source: it needs modality 'pose' (tubes and "
                             "videos give x, y)")
        if self.tau <= 0:
            raise ValueError("tau must be positive")
        if self.num_frames < 1 or self.num_classes < 2 or self.roi_size < 1:
            raise ValueError("num_frames >= 1, num_classes >= 2 and roi_size >= 1 are required")

    @property
    def uses_rgb(self) -> bool:
        return self.modality in ("rgb", "rgb+pose")

    @property
    def uses_pose(self) -> bool:
        return self.modality in ("pose", "rgb+pose")

    def override(self, **changes) -> ModelConfig:
        """A copy with some fields changed (unknown names are an error)."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)


def paper() -> ModelConfig:
    """The paper's model: ImageNet-initialised ResNet-101 + TSM, T = 8, K = 6, D = 256, RGB + pose, entities by
    ROIAlign on the global frame's feature map, dual path, MAC lambda 0.1."""
    return ModelConfig(pretrained="imagenet", sem="roialign", mask_invisible=True)


def r50() -> ModelConfig:
    """ResNet-50 backbone (ImageNet weights), otherwise the paper's settings."""
    return ModelConfig(backbone="resnet50", pretrained="imagenet", sem="roialign", mask_invisible=True)


def small() -> ModelConfig:
    """ResNet-18 (ImageNet weights) at D = 128: a single mid-range GPU."""
    return ModelConfig(backbone="resnet18", dim=128, heads=2, pretrained="imagenet", sem="roialign",
                       mask_invisible=True)


def tiny() -> ModelConfig:
    """A few thousand parameters' worth of everything: trains on a CPU in seconds (tests, the demo)."""
    return ModelConfig(backbone="tiny", num_frames=4, dim=32, heads=2, entity_size=32, global_size=64, mac_dim=16,
                       mask_invisible=True)


def pose() -> ModelConfig:
    """Pose only (no images, no backbone): the paper's pose-only variant, with our whole-body pose encoding, T = 32
    (frames are cheap without images) pooled to 8 tokens per entity by strided temporal convolutions, D = 128.
    See bench/bench_pose.py and the README for what it reaches on JHMDB and SHREC'17."""
    return ModelConfig(modality="pose", backbone="tiny", pose_encoding="body", num_frames=32, pose_stride=4, dim=128,
                       heads=2, mask_invisible=True)


def pose_tiny() -> ModelConfig:
    """Pose only and small: seconds per epoch on a CPU."""
    return ModelConfig(modality="pose", backbone="tiny", num_frames=4, dim=32, heads=2, mac_dim=16,
                       pose_encoding="body", mask_invisible=True)


PRESETS = {"paper": paper, "r50": r50, "small": small, "tiny": tiny, "pose": pose, "pose_tiny": pose_tiny}


def preset(name: str, **overrides) -> ModelConfig:
    """A named preset with optional field overrides, e.g. ``preset("paper", path="st", mac=False)``."""
    try:
        base = PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
    return base.override(**overrides) if overrides else base
