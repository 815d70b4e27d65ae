"""torchvision's own ResNet definitions, read from its wheel without importing torchvision.

The project never depends on torchvision (its compiled ops do not load with the pinned CPU torch: ``import
torchvision`` raises "operator torchvision::nms does not exist"), but ``torchvision/models/resnet.py`` is plain Python
and is the reference our backbone claims to match. ``make setup`` downloads the wheel, uninstalled, into
``$(VENV)/reference/`` (version: the Makefile's ``TORCHVISION_REFERENCE``). This module imports resnet.py and the
plain-Python modules it imports straight from that zip, under a private package name, with empty parent packages
in place of ``torchvision/__init__.py`` and ``models/__init__.py`` so that neither they nor the compiled ops run.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

REFERENCE_DIR = Path(sys.prefix) / "reference"  # $(VENV)/reference when run by the venv's python, as `make test` does
MAKE_VARIABLE = "TORCHVISION_REFERENCE"
_PACKAGE = "_torchvision_reference"  # never `torchvision`: an `import torchvision` elsewhere must still fail as usual


def torchvision_wheel() -> Path | None:
    """The one torchvision wheel in $(VENV)/reference, or None when `make setup` has not put it there."""
    wheels = sorted(REFERENCE_DIR.glob("torchvision-*.whl"))
    if len(wheels) > 1:
        raise RuntimeError(f"several torchvision wheels in {REFERENCE_DIR}: {[w.name for w in wheels]}; keep the one "
                           f"{MAKE_VARIABLE} names (make setup empties the folder before it downloads)")
    return wheels[0] if wheels else None


def _package(name: str, path: str | None) -> types.ModuleType:
    """An empty package whose submodules are found under `path` (a folder inside the wheel; zipimport reads it)."""
    module = types.ModuleType(name)
    module.__path__ = [path] if path else []
    sys.modules[name] = module
    return module


def load_resnet_module(wheel: Path) -> types.ModuleType:
    """torchvision's ``models/resnet.py`` from `wheel`, with its relative imports resolved inside the wheel.

    Real, from the wheel: ``models/resnet.py``, ``models/_api.py``, ``models/_utils.py``, ``models/_meta.py``,
    ``_utils.py``, ``_internally_replaced_utils.py``, ``utils.py`` (all plain Python). Stand-ins: the three package
    ``__init__``s (empty), and ``transforms._presets.ImageClassification``, which resnet.py only names in the
    metadata of its pretrained-weights enums (``partial(ImageClassification, crop_size=224)``) and never calls; the
    real one pulls in the transforms package and its compiled image ops.
    """
    name = f"{_PACKAGE}.models.resnet"
    if name in sys.modules:
        return sys.modules[name]
    root = f"{wheel}/torchvision"
    _package(_PACKAGE, root)
    _package(f"{_PACKAGE}.models", f"{root}/models")
    _package(f"{_PACKAGE}.transforms", None)
    presets = types.ModuleType(f"{_PACKAGE}.transforms._presets")

    class ImageClassification:
        """Named, never called: the preprocessing preset in the weights' metadata."""

    presets.ImageClassification = ImageClassification
    sys.modules[presets.__name__] = presets
    return importlib.import_module(name)
