"""ResNet-18/50/101 with the Temporal Shift Module, in plain torch.

State-dict keys and shapes match torchvision's ResNets (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``layer1.0.downsample.0``, ``fc``), so ImageNet weights saved from torchvision load directly. The temporal shift
(Lin et al., ICCV 2019) moves 1/8 of the channels one frame back and 1/8 one frame forward at the entrance of each
residual branch ("residual shift"); it has no parameters, so it adds no keys.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from torch import nn

FEATURE_DIMS = {"resnet18": 512, "resnet50": 2048, "resnet101": 2048, "tiny": 64}
# torchvision's published ImageNet-1k weights (IMAGENET1K_V1, the ones TSM starts from). Their file names carry the
# first hex digits of the file's sha256, as torch.hub checks them.
IMAGENET_WEIGHTS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-63fe2227.pth",
}
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z]+$")


def check_hash_prefix(path: Path) -> None:
    """When `path`'s name ends in ``-<hex>.<ext>`` (torch.hub's convention), its sha256 must start with that hex."""
    found = _HASH_IN_NAME.search(path.name)
    if found is None:
        return
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    if not h.hexdigest().startswith(found.group(1)):
        raise ValueError(f"{path}: sha256 {h.hexdigest()[:12]}... does not start with the {found.group(1)} its name "
                         "carries (a truncated or altered download): delete it and fetch it again")


def temporal_shift(x: torch.Tensor, num_frames: int, shift_div: int = 8) -> torch.Tensor:
    """Shift channels in time: x (B*T, C, H, W) with frames of one clip consecutive."""
    bt, c, h, w = x.shape
    x = x.view(bt // num_frames, num_frames, c, h, w)
    fold = c // shift_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]  # frame t sees t+1
    out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]  # frame t sees t-1
    out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
    return out.view(bt, c, h, w)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.num_frames = 0  # set by TSMResNet.forward; 0 = no shift
        self.shift_div = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = temporal_shift(x, self.num_frames, self.shift_div) if self.num_frames > 1 else x
        out = self.relu(self.bn1(self.conv1(out)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride on the 3x3, as torchvision
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.num_frames = 0
        self.shift_div = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = temporal_shift(x, self.num_frames, self.shift_div) if self.num_frames > 1 else x
        out = self.relu(self.bn1(self.conv1(out)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_SPECS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), 64),
    "resnet50": (Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), 64),
    "resnet101": (Bottleneck, (3, 4, 23, 3), (64, 128, 256, 512), 64),
    "tiny": (BasicBlock, (1, 1, 1, 1), (8, 16, 32, 64), 8),
}


class TSMResNet(nn.Module):
    """A ResNet whose residual blocks shift channels in time.

    Args:
        arch: resnet18 | resnet50 | resnet101 | tiny.
        shift_div: Fraction 1/shift_div of the channels shifted each way.
    """

    def __init__(self, arch: str = "resnet50", shift_div: int = 8, num_classes: int = 1000):
        super().__init__()
        block, layers, widths, stem = _SPECS[arch]
        self.arch = arch
        self.inplanes = stem
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, widths[0], layers[0], 1)
        self.layer2 = self._make_layer(block, widths[1], layers[1], 2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], 2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # torchvision's ImageNet classifier: kept so that its state dicts load key for key, frozen because the
        # model's own heads replace it.
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes).requires_grad_(False)
        self.feature_dim = widths[3] * block.expansion
        self.shift_div = shift_div
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Feature maps (B*T, C, h, w) of images x (B*T, 3, H, W) whose T frames per clip are consecutive."""
        for m in self.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                m.num_frames, m.shift_div = num_frames, self.shift_div
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def load_pretrained(self, path: str | Path) -> None:
        """Load torchvision-keyed weights from a local file (downloads are the pipeline's: `io.downloads`).

        A file named as torch.hub names its files (``<name>-<hex>.pth``, e.g. ``resnet101-63fe2227.pth``) must
        have a sha256 that starts with that hex, checked at every load. The classifier (``fc``) is skipped when its
        shape differs; every other key must match.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: weights file not found")
        check_hash_prefix(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        own = self.state_dict()
        state = {k: v for k, v in state.items() if not (k.startswith("fc.") and v.shape != own[k].shape)}
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as e:  # same names, other shapes
            first = str(e).strip().splitlines()[1].strip() if "\n" in str(e).strip() else str(e)
            raise ValueError(f"{path}: not a torchvision {self.arch} state dict ({first})") from None
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(f"{path}: not a torchvision {self.arch} state dict (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
