"""Checkpoints `train` writes: loading one (one-line errors for anything else), its classes, the newest run's, and
`Predictor` (a checkpoint with how its inputs are made)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dualnet.config import ModelConfig
from dualnet.model import MicroDualNet
from pipelines.errors import InputError
from pipelines.formats.params import ExtractParams, TubeParams
from pipelines.hashing import hash_file
from pipelines.store import Store


def model_from_state(state: dict) -> MicroDualNet:
    """The model a loaded checkpoint holds (its config travels with it), in evaluation mode."""
    model = MicroDualNet(ModelConfig(**state["config"]))
    model.load_state_dict(state["model"])
    return model.eval()


def load_checkpoint(checkpoint: str | Path, device: str = "cpu") -> tuple[MicroDualNet, dict]:
    """The model a checkpoint `train` wrote holds, on `device`, and the checkpoint itself (config, classes, data).

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
    """A model from a checkpoint `train` wrote (see `load_checkpoint`)."""
    return load_checkpoint(checkpoint, device)[0]


def checkpoint_classes(checkpoint: Path) -> list[str] | None:
    """The class names a checkpoint was trained on (None when it records none)."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - not a checkpoint: it holds no classes
        return None
    return state.get("classes") if isinstance(state, dict) else None


def latest_checkpoint(store: Store, classes: list[str]) -> Path:
    """best.pt of the newest training run whose classes are `classes` (the current run first): a run trained on
    another dataset is never picked. Raises InputError when there is none."""
    runs = [store.stage("train", key).path for key in [store.refs().get("train")] if key]
    others = sorted((o.path for o in store.outputs() if o.stage == "train"),
                    key=lambda p: (p / "best.pt").stat().st_mtime if (p / "best.pt").exists() else 0, reverse=True)
    seen = 0
    for run in runs + [p for p in others if p not in runs]:
        best = run / "best.pt"
        if not best.is_file():
            continue
        seen += 1
        if checkpoint_classes(best) == list(classes):
            return best
    what = f"none of its {seen} training run(s) was" if seen else "no training run was"
    raise InputError(store.root, f"{what} trained on this dataset's {len(classes)} classes; pass --checkpoint")


@dataclass
class Predictor:
    """A checkpoint with what is needed to turn video into its inputs: tube and pose parameters, class names."""

    model: MicroDualNet
    checkpoint: Path
    fingerprint: str
    classes: list[str]
    tube_params: TubeParams
    extract_params: ExtractParams

    @classmethod
    def load(cls, checkpoint: str | Path, store: Store | None = None, device: str = "cpu",
             check_layout: bool = True) -> Predictor:
        """Load `checkpoint`; inputs are made as its training inputs were (older checkpoints: defaults).

        Args:
            store: Memoises the checkpoint's content fingerprint (else it is hashed here).
            check_layout: Require a model that a pose backend can feed from video (predict does; export need not).
        """
        checkpoint = Path(checkpoint)
        model, state = load_checkpoint(checkpoint, device)
        config = model.config
        data = state.get("data") or {}
        tubes = data.get("tubes") or {}
        if tubes and "global_view" not in tubes:  # trained on tubes before v3: letterboxed global frames
            tubes = {**tubes, "global_view": "letterbox"}
        tube_params = TubeParams(**{k: v for k, v in tubes.items() if k in TubeParams.__dataclass_fields__})
        if tube_params.entity_set != config.entity_set:
            tube_params = TubeParams(entity_set=config.entity_set)
        keypoints = data.get("keypoints") or {}
        extract_fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in keypoints.get("params", {}).items()
                          if k in ExtractParams.__dataclass_fields__} if keypoints.get("stage") == "extract" else {}
        extract_params = ExtractParams(**extract_fields)
        if check_layout and keypoints.get("stage", "extract") != "extract":
            raise InputError(checkpoint, f"was trained on imported keypoints ({keypoints.get('layout')}); predict "
                                         "runs a pose model on video, so it needs a model trained on `extract` output")
        if check_layout and extract_params.layout != config.layout:
            raise InputError(checkpoint, f"model layout {config.layout!r} is not what any pose backend gives "
                                         "(mediapipe_holistic, coco_wholebody)")
        classes = state.get("classes") or [f"class_{i}" for i in range(config.num_classes)]
        if store is None:
            fingerprint = hash_file(checkpoint)
        else:
            fingerprints = store.fingerprints()
            try:
                fingerprint = fingerprints.fingerprint(checkpoint)
            finally:
                fingerprints.close()
        return cls(model, checkpoint, fingerprint, list(classes), tube_params, extract_params)


