"""What defines each stored output: the stage name, its code version, its parameters and its key.

Readers (`formats.keypoints`, `formats.tube_packs`, `formats.checkpoints`) and stages both import these, so that a
reader never imports the stage that writes what it reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dualnet.entities import GLOBAL_VIEWS, get_entity_set
from dualnet.layouts import get_layout
from pipelines.hashing import stable_hash
from pipelines.store import StageOutput, StageSpec

# --- extract --------------------------------------------------------------------------------------------------
EXTRACT_STAGE = "extract"
EXTRACT_VERSION = 3  # bump when a code change alters what this stage writes: it changes every extract key
# 2: the subject is tracked in blocks of TRACK_BLOCK frames and items are written as they go (long videos)
# 3: frames are turned upright by the container's rotation (phone videos), recorded as the `rotation` attribute
BACKENDS = ("mediapipe", "rtmlib")
DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class ExtractParams:
    """Everything that changes what `extract` writes; all of it goes into the stage key."""

    backend: str = "mediapipe"  # pose model: MediaPipe Holistic (33 body + 2x21 hands + 468 face points)
    model_complexity: int = 1  # MediaPipe pose landmark model 0 (lite), 1 (full, its default) or 2 (heavy)
    min_detection_confidence: float = 0.5  # MediaPipe's default person-detection threshold
    min_tracking_confidence: float = 0.5  # MediaPipe's default; below it the tracker re-detects
    dtype: str = "float32"  # stored keypoint dtype; float16 halves the store at ~0.5 px error on 1080p frames
    max_jump: float = 0.5  # main-subject tracking: largest per-frame centre jump, in body sizes
    det_model: str = ""  # rtmlib: detector ONNX path or URL ("" = rtmlib's Wholebody default, YOLOX-m)
    pose_model: str = ""  # rtmlib: whole-body pose ONNX path or URL ("" = rtmlib's default, RTMW-x 256x192)
    det_input_size: tuple[int, int] = (640, 640)  # rtmlib: detector input (h, w), its default
    pose_input_size: tuple[int, int] = (192, 256)  # rtmlib: pose input (w, h), its default for RTMW 256x192
    device: str = "cpu"  # rtmlib: onnxruntime's device, cpu or cuda (MediaPipe runs on the CPU); where it runs, not
    # what it computes: recorded, not keyed

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device {self.device!r} is not cpu or cuda")
        if self.device == "cuda" and self.backend != "rtmlib":
            raise ValueError("--device cuda runs the rtmlib backend on onnxruntime's CUDA provider; MediaPipe's "
                             "Python solutions run on the CPU only (use --backend rtmlib or --device cpu)")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.model_complexity not in (0, 1, 2):
            raise ValueError(f"model_complexity must be 0, 1 or 2, not {self.model_complexity}")
        for name in ("min_detection_confidence", "min_tracking_confidence"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")
        if self.max_jump <= 0:
            raise ValueError("max_jump must be positive")

    @property
    def layout(self) -> str:
        return "coco_wholebody" if self.backend == "rtmlib" else "mediapipe_holistic"


MEDIAPIPE_ONLY = ("model_complexity", "min_detection_confidence", "min_tracking_confidence")
RTMLIB_ONLY = ("det_model", "pose_model", "det_input_size", "pose_input_size")


def backend_params(params: dict) -> dict:
    """The recorded ExtractParams fields that matter to the run's backend (the other backend's fields are recorded
    too, at their defaults, but change nothing)."""
    unused = MEDIAPIPE_ONLY if params.get("backend") == "rtmlib" else RTMLIB_ONLY
    return {k: v for k, v in params.items() if k not in unused}


def extract_spec(params: ExtractParams, namespace: str = "") -> StageSpec:
    """The `extract` output made with `params` (in `namespace`, see `run_extract`)."""
    content = {k: v for k, v in asdict(params).items() if k != "device"}
    return StageSpec(EXTRACT_STAGE, EXTRACT_VERSION, content,
                     extra={"namespace": namespace} if namespace else {},
                     recorded={"layout": params.layout, "device": params.device}, output_format="keypoint-items")


def extract_key(params: ExtractParams, namespace: str = "") -> str:
    """The store key of `extract` outputs made with `params` (in `namespace`, see `run_extract`)."""
    return extract_spec(params, namespace).key


# --- import ---------------------------------------------------------------------------------------------------
IMPORT_STAGE = "import"
IMPORT_VERSION = 3  # 2: clip names with characters outside [A-Za-z0-9._-] carry a hash (store.safe_name)
# 3: 3D sources keep z as each item's depth array (SHREC'17; pyskl's (M, T, V, 3) keypoints are x, y, z, as pyskl
#    reads them, no longer x, y, score)
IMPORT_FORMATS = ("openpose", "pyskl", "jhmdb", "miga", "shrec17")


@dataclass(frozen=True)
class ImportParams:
    """What changes the imported keypoints; all of it goes into the stage key."""

    format: str  # openpose | pyskl | jhmdb | miga | shrec17
    layout: str = ""  # pyskl, miga: the layout of their V joints (a name such as ma52_28, or a layout .json file)
    labels: str = ""  # miga: the label pickle beside the (N, 3, T, V, 1) array
    fps: float = 30.0  # frame rate for timestamps (the formats do not record it; iMiGUE is ~25)
    dtype: str = "float32"  # stored keypoint dtype

    def __post_init__(self) -> None:
        if self.format not in IMPORT_FORMATS:
            raise ValueError(f"format {self.format!r} is not one of {', '.join(IMPORT_FORMATS)}")
        if self.format in ("pyskl", "miga"):
            if not self.layout:
                raise ValueError(f"{self.format} needs --layout (the joint layout of its V keypoints)")
            get_layout(self.layout)  # KeyError lists the known layouts
        if self.format == "miga" and not self.labels:
            raise ValueError("miga needs --labels (the label pickle of the arrays)")
        if self.fps <= 0:
            raise ValueError("fps must be positive")
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"dtype {self.dtype!r} is not one of float32, float16")


def import_spec(params: ImportParams) -> StageSpec:
    """The `import` output made with `params`."""
    return StageSpec(IMPORT_STAGE, IMPORT_VERSION, asdict(params), output_format="keypoint-items")


def import_key(params: ImportParams) -> str:
    return import_spec(params).key


# --- tubes ----------------------------------------------------------------------------------------------------
TUBES_STAGE = "tubes"
TUBES_VERSION = 3  # 2: frames upright by the video's rotation (io.video.iter_frames)
# 3: the global frame is a square window of the source (`global_view`: person-centred by default, was letterboxed);
#    packs record the window and its transform


@dataclass(frozen=True)
class TubeParams:
    """What changes the tubes; all of it goes into the stage key (with the keypoint stage's key)."""

    frames: int = 16  # frames sampled uniformly over each clip; training draws its T = 8 segments from these
    size: int = 112  # entity crop side in pixels
    global_size: int = 224  # side of the global frame (the TSM convention)
    global_view: str = "person"  # person: a short-side square centred on the person; letterbox: the whole frame
    entity_set: str = "k6"  # k6: face, head, torso, hands, lower body (MA-52); k5: no lower body (iMiGUE)
    smooth_sigma: float = 1.0  # temporal smoothing of boxes, in frames of the source video
    pack_size: int = 128  # clips per pack (one file per array); 20,000 clips -> 157 packs, 2,200 files

    def __post_init__(self) -> None:
        if self.frames < 1 or self.size < 8 or self.global_size < 8 or self.pack_size < 1:
            raise ValueError("frames >= 1, size >= 8, global_size >= 8 and pack_size >= 1 are required")
        get_entity_set(self.entity_set)
        if self.global_view not in GLOBAL_VIEWS:
            raise ValueError(f"global view {self.global_view!r} is not one of {', '.join(GLOBAL_VIEWS)}")


def tubes_spec(params: TubeParams, keypoints: StageOutput) -> StageSpec:
    """The `tubes` output of `params` over a keypoint output: `pack_size` changes files, not content, so it is
    recorded, not keyed."""
    content = {k: v for k, v in asdict(params).items() if k != "pack_size"}
    return StageSpec(TUBES_STAGE, TUBES_VERSION, content, inputs={keypoints.stage: keypoints.key},
                     recorded={"pack_size": params.pack_size}, output_format="tube-packs")


def tubes_key(params: TubeParams, keypoints: StageOutput) -> str:
    return tubes_spec(params, keypoints).key


# --- train ----------------------------------------------------------------------------------------------------
TRAIN_STAGE = "train"
TRAIN_VERSION = 5  # 2: crop and colour jitter run batched on the training device (crop jitter by grid_sample)
# 3: ImageNet weights by default (paper, r50, small) with partial BN; optimiser groups (backbone lr scale, no decay on
#    norms, biases, embeddings); MAC leaves same-class clips out of the negatives; only the configured path is built
# 4: a horizontal flip also mirrors the face points (MediaPipe's 468, iBUG's 68, OpenPose's 70), which the face entity
#    encodes point by point (issue 13)
#    and steps from pipelines.data.batching (any world size takes the same clips per step, each once, no padding); a
#    step's loss is the weighted mean over its clips, however many micro-batches and processes share them
# 5: pose-only models: the model's `pose_stride` and `pose_encoding="body_distances"`, and `test_flip` (issue 14)


@dataclass(frozen=True)
class TrainParams:
    """Optimisation and augmentation; all of it goes into the run's key."""

    epochs: int = 30  # ours: the paper does not give its schedule
    batch_size: int = 8
    lr: float = 1e-3  # peak learning rate (AdamW); SGD users typically want 0.01
    weight_decay: float = 0.05
    optimizer: str = "adamw"  # adamw | sgd (momentum 0.9, nesterov)
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to zero
    balance: str = "reweight"  # none | reweight (class-weighted CE, see class_weights) | sample (balanced sampling)
    class_weights: str = "inverse"  # reweight by: inverse frequency | sqrt (inverse square root) | effective
    # (Cui et al. 2019's effective number of samples, beta 0.999)
    backbone_lr: float = 0.1  # the backbone's learning rate, in multiples of lr (it starts from ImageNet weights)
    accumulate: int = 1  # gradient accumulation steps
    flip: float = 0.5  # probability of a horizontal flip with left/right entity swap
    crop_jitter: float = 0.1  # entity crops: random zoom-in up to this fraction and a matching shift (per clip)
    colour_jitter: float = 0.2  # brightness and contrast factors drawn from [1 - x, 1 + x] (per clip)
    keypoint_noise: float = 0.0  # std of Gaussian keypoint noise, in entity-box sides
    rotate: float = 0.0  # pose-only training: rotate each clip in the image plane by an angle drawn from
    # [-rotate, rotate] degrees about its centre (ours: skeleton sets are small, and a camera is not always level)
    test_flip: bool = False  # pose-only evaluation scores each clip and its mirror image and averages the logits
    # (test-time augmentation; where a flip keeps the label, as `flip` > 0 already says for training)
    temporal_crop: float = 0.0  # draw the T segments from a random sub-span keeping >= 1 - x of the clip: trains
    # for the partial, off-centre windows `predict` sees in long videos (0 = always the whole clip)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer {self.optimizer!r} is not adamw or sgd")
        if self.balance not in ("none", "reweight", "sample"):
            raise ValueError(f"balance {self.balance!r} is not none, reweight or sample")
        if self.class_weights not in ("inverse", "sqrt", "effective"):
            raise ValueError(f"class_weights {self.class_weights!r} is not inverse, sqrt or effective")
        if self.backbone_lr < 0:
            raise ValueError("backbone_lr must be >= 0")
        if not 0.0 <= self.rotate <= 180.0:
            raise ValueError("rotate must lie in [0, 180] degrees")
        if not 0.0 <= self.temporal_crop < 1.0:
            raise ValueError("temporal_crop must lie in [0, 1)")
        if self.epochs < 1 or self.batch_size < 1 or self.accumulate < 1:
            raise ValueError("epochs, batch_size and accumulate must be >= 1")




# --- pose clips (the pose-only training cache) ---------------------------------------------------------------------
POSE_CLIPS_STAGE = "poseclips"
POSE_CLIPS_VERSION = 2  # 2: a clip of a 3D source also holds its (T, V) depth (``depth`` in its entry)


def pose_clips_spec(keypoints: StageOutput, layout: str, entity_set: str, smooth_sigma: float = 1.0) -> StageSpec:
    """The cached pose-only inputs (keypoints, entity boxes, visibility per clip) over a keypoint output: keyed by
    that output, the layout's content (a layout .json file may move), the entity set and the box smoothing."""
    resolved = get_layout(layout)
    get_entity_set(entity_set)
    params = {"layout": resolved.name, "entity_set": entity_set, "smooth_sigma": smooth_sigma}
    return StageSpec(POSE_CLIPS_STAGE, POSE_CLIPS_VERSION, params, inputs={keypoints.stage: keypoints.key},
                     extra={"layout_content": stable_hash(asdict(resolved))}, output_format="pose-clips")
