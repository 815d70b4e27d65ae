"""`dualnet export --onnx`: a trained checkpoint as an ONNX graph, for inference without torch or this package.

Inputs are the model's, by name, batch first (any batch size): ``frames`` (B, T, 3, G, G) uint8 for RGB models
with ``tubes`` (B, T, K, 3, S, S) uint8 (crop SEM) or ``frame_boxes`` (B, T, K, 4) float32 (ROIAlign SEM: the
entity boxes in the global frames' pixels), ``keypoints`` (B, T, V, 3) float32 (x, y in pixels, score; NaN where
missing; (B, T, V, 4) = x, y, score, z for a model with ``pose_depth``) and ``boxes`` (B, T, K, 4) float32 (x1, y1,
x2, y2 pixels) for pose models. Outputs: ``logits`` (B, classes), ``routing`` (B, K, 2) (the ST / TS weights of
each entity) and, with a coarse head, ``coarse_logits``. A JSON file beside the graph records the inputs' shapes,
the class names and how the inputs were made (tube and pose parameters), so that a runtime can prepare them.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from dualnet.entities import get_entity_set
from dualnet.layouts import get_layout
from dualnet.model import MicroDualNet
from pipelines.errors import InputError
from pipelines.formats.params import TubeParams
from pipelines.store import write_file_atomic

OPSET = 17


class _Exported(torch.nn.Module):
    """Positional inputs -> a tuple of outputs (what the ONNX exporter traces)."""

    def __init__(self, model: MicroDualNet, inputs: list[str]):
        super().__init__()
        self.model, self.inputs = model, inputs

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(**dict(zip(self.inputs, tensors, strict=True)))
        extra = (out.coarse_logits,) if out.coarse_logits is not None else ()
        return (out.logits, out.routing, *extra)


def example_inputs(model: MicroDualNet, tube_params: TubeParams, batch: int = 2,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of the shapes `model` takes (uint8 images, keypoints and boxes in pixels)."""
    config = model.config
    g = torch.Generator().manual_seed(seed)
    t, k = config.num_frames, len(get_entity_set(config.entity_set))
    v = get_layout(config.layout).num_keypoints
    out: dict[str, torch.Tensor] = {}
    if config.uses_rgb:
        s, gs = tube_params.size, tube_params.global_size
        if config.sem == "roialign":
            centre = torch.rand(batch, t, k, 2, generator=g) * gs * 0.6 + gs * 0.2
            half = torch.rand(batch, t, k, 1, generator=g) * gs * 0.15 + gs * 0.05
            out["frame_boxes"] = torch.cat([centre - half, centre + half], dim=-1)
        else:
            out["tubes"] = torch.randint(0, 256, (batch, t, k, 3, s, s), generator=g, dtype=torch.uint8)
        out["frames"] = torch.randint(0, 256, (batch, t, 3, gs, gs), generator=g, dtype=torch.uint8)
    if config.uses_pose:
        xy = torch.rand(batch, t, v, 2, generator=g) * 400 + 100
        out["keypoints"] = torch.cat([xy, torch.rand(batch, t, v, 1, generator=g)], dim=-1)
        if config.pose_depth:  # z, in the units of x, y
            out["keypoints"] = torch.cat([out["keypoints"], torch.rand(batch, t, v, 1, generator=g) * 100 + 400], -1)
        centre = torch.rand(batch, t, k, 2, generator=g) * 400 + 100
        half = torch.rand(batch, t, k, 1, generator=g) * 60 + 20
        out["boxes"] = torch.cat([centre - half, centre + half], dim=-1)
    return out


def export_onnx(checkpoint: str | Path, out: str | Path) -> Path:
    """Write `checkpoint` as ONNX at `out` (and ``<out>.json`` with its inputs, classes and data parameters)."""
    from pipelines.formats.checkpoints import Predictor

    out = Path(out)
    if out.is_dir():
        raise InputError(out, "is a folder: give the path of the .onnx file to write")
    predictor = Predictor.load(checkpoint, check_layout=False)
    model = predictor.model.eval()
    inputs = example_inputs(model, predictor.tube_params)
    names = list(inputs)
    outputs = ["logits", "routing"] + (["coarse_logits"] if model.config.num_coarse > 0 else [])
    wrapper = _Exported(model, names).eval()

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():  # tracer warnings about Python-side shape checks: shapes are fixed but batch
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, tuple(inputs.values()), tmp, input_names=names, output_names=outputs,
                              dynamic_axes={n: {0: "batch"} for n in names + outputs}, opset_version=OPSET,
                              dynamo=False)

    write_file_atomic(out, write)  # a failed export leaves no temporary file behind
    meta = {"checkpoint": str(Path(checkpoint)), "opset": OPSET, "classes": predictor.classes,
            "inputs": {n: {"shape": ["batch", *inputs[n].shape[1:]], "dtype": str(inputs[n].dtype).split(".")[-1]}
                       for n in names},
            "outputs": outputs, "model": asdict(model.config), "tubes": asdict(predictor.tube_params),
            "extract": asdict(predictor.extract_params)}
    Path(f"{out}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def compare_onnx(checkpoint: str | Path, onnx_path: str | Path, batch: int = 3, seed: int = 1) -> float:
    """Largest absolute difference between ONNX Runtime's and torch's logits on a random batch."""
    import onnxruntime as ort

    from pipelines.formats.checkpoints import load_model

    model = load_model(checkpoint).eval()
    meta = json.loads(Path(f"{onnx_path}.json").read_text())
    inputs = example_inputs(model, TubeParams(**meta["tubes"]), batch, seed)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {n: x.numpy() for n, x in inputs.items()})[0]
    with torch.no_grad():
        want = model(**inputs).logits.numpy()
    if got.shape != want.shape:
        raise InputError(onnx_path, f"gives logits of shape {got.shape}, torch {want.shape}")
    return float(np.abs(got - want).max())
