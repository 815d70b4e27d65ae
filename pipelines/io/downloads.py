"""Model files given as a path or a URL: a URL is downloaded once into ``<store>/models/`` and checksummed.

The first download records the file's sha256 next to it; every later use verifies it, so a truncated or altered
file is never used silently. A known sha256 can be given up front (``url#sha256=<hex>``) and is then checked on the
first download too. Zip archives (OpenMMLab's ONNX SDK packages) are unpacked and their ``.onnx`` file is used.
"""

from __future__ import annotations

import json
import os
import urllib.request
import zipfile
from pathlib import Path

from pipelines.errors import InputError
from pipelines.hashing import sha256_file, stable_hash


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://", "file://"))


def resolve_model(spec: str, models_dir: Path, timeout: float = 60.0) -> Path:
    """A local path to the model `spec` names (a file path, or a URL optionally ending in ``#sha256=<hex>``)."""
    if not is_url(spec):
        path = Path(spec)
        if not path.is_file():
            raise InputError(path, "model file not found")
        return path
    url, _, fragment = spec.partition("#")
    expected = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else None
    folder = models_dir / stable_hash(url)
    record = folder / "download.json"
    if record.is_file():
        info = json.loads(record.read_text())
        path = folder / info["file"]
        if path.is_file() and sha256_file(path) == info["sha256"] and expected in (None, info["sha256"]):
            return _onnx_inside(path)
        raise InputError(path, "cached model fails its recorded sha256 check; delete the folder to download again")
    folder.mkdir(parents=True, exist_ok=True)
    name = Path(url.split("?")[0]).name or "model"
    part = folder / f".{name}.part"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise InputError(url, f"download failed ({getattr(e, 'reason', e)}); pass a local model path instead") from None
    digest = sha256_file(part)
    if expected is not None and digest != expected:
        part.unlink()
        raise InputError(url, f"sha256 {digest[:12]}... does not match the expected {expected[:12]}...")
    os.replace(part, folder / name)
    record.write_text(json.dumps({"url": url, "file": name, "sha256": digest}))
    return _onnx_inside(folder / name)


def _onnx_inside(path: Path) -> Path:
    """`path` itself, or the .onnx file unpacked from it when it is a .zip archive (a .pth is a zip too: kept)."""
    if path.suffix.lower() != ".zip" or not zipfile.is_zipfile(path):
        return path
    target = path.with_suffix("")
    if not target.is_dir():
        tmp = path.with_name(f".{path.name}.unzip")
        with zipfile.ZipFile(path) as archive:
            archive.extractall(tmp)
        os.replace(tmp, target)
    found = sorted(target.rglob("*.onnx"))
    if not found:
        raise InputError(path, "archive holds no .onnx file")
    return found[0]


def resolve_pretrained(spec: str, arch: str, models_dir: Path, timeout: float = 60.0) -> Path | None:
    """The local weights file a model's ``pretrained`` names: ``imagenet`` (torchvision's published weights for
    `arch`, downloaded once into `models_dir`), a URL, or a file path; None for ``""`` / ``none`` (random init).
    Offline without a copy is one line saying how to go on, never a silent random start."""
    from dualnet.backbone import IMAGENET_WEIGHTS

    if spec in ("", "none"):
        return None
    if spec == "imagenet":
        if arch not in IMAGENET_WEIGHTS:
            raise InputError(spec, f"no ImageNet weights for backbone {arch!r}; use --pretrained none")
        spec = IMAGENET_WEIGHTS[arch]
    try:
        return resolve_model(spec, models_dir, timeout)
    except InputError as e:
        if not is_url(spec) or "download failed" not in e.problem:
            raise
        raise InputError(spec, f"cannot download the backbone weights ({e.problem.split('(', 1)[-1].split(')')[0]}): "
                               "fetch the file elsewhere and pass --pretrained PATH, or train from random weights "
                               "with --pretrained none") from None
