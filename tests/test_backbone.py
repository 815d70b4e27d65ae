"""The TSM ResNet: torchvision-compatible weights, and the temporal shift."""

from __future__ import annotations

import torch

from dualnet.backbone import TSMResNet, temporal_shift


def torchvision_resnet50_state_dict() -> dict[str, torch.Tensor]:
    """Key names and shapes of torchvision's resnet50, written out from its published structure."""
    sd = {"conv1.weight": torch.randn(64, 3, 7, 7)}

    def bn(prefix: str, c: int) -> None:
        sd.update({f"{prefix}.weight": torch.rand(c) + 0.5, f"{prefix}.bias": torch.randn(c) * 0.1,
                   f"{prefix}.running_mean": torch.randn(c) * 0.1, f"{prefix}.running_var": torch.rand(c) + 0.5,
                   f"{prefix}.num_batches_tracked": torch.tensor(100)})

    bn("bn1", 64)
    inplanes = 64
    for layer, (planes, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), 1):
        for j in range(blocks):
            p = f"layer{layer}.{j}"
            sd[f"{p}.conv1.weight"] = torch.randn(planes, inplanes, 1, 1)
            bn(f"{p}.bn1", planes)
            sd[f"{p}.conv2.weight"] = torch.randn(planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            sd[f"{p}.conv3.weight"] = torch.randn(planes * 4, planes, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if j == 0:
                sd[f"{p}.downsample.0.weight"] = torch.randn(planes * 4, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    return sd


def test_torchvision_resnet50_weights_load_exactly(tmp_path):
    sd = torchvision_resnet50_state_dict()
    model = TSMResNet("resnet50")
    assert set(model.state_dict()) == set(sd)
    result = model.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(model.layer3[5].conv2.weight, sd["layer3.5.conv2.weight"])
    torch.save(sd, tmp_path / "resnet50.pth")
    fresh = TSMResNet("resnet50")
    fresh.load_pretrained(str(tmp_path / "resnet50.pth"))
    torch.testing.assert_close(fresh.conv1.weight, sd["conv1.weight"])


def test_temporal_shift_moves_one_eighth_each_way():
    x = torch.arange(2 * 4 * 16, dtype=torch.float32).view(2 * 4, 16, 1, 1)  # B=2 clips of T=4 frames, C=16
    y = temporal_shift(x, 4, 8).view(2, 4, 16)
    v = x.view(2, 4, 16)
    torch.testing.assert_close(y[:, :-1, :2], v[:, 1:, :2])  # first 1/8: from the next frame
    assert y[:, -1, :2].eq(0).all()
    torch.testing.assert_close(y[:, 1:, 2:4], v[:, :-1, 2:4])  # second 1/8: from the previous frame
    torch.testing.assert_close(y[:, :, 4:], v[:, :, 4:])


def test_features_shapes():
    model = TSMResNet("tiny").eval()
    maps = model.forward_features(torch.randn(2 * 4, 3, 64, 64), num_frames=4)
    assert maps.shape == (8, 64, 2, 2) and model.feature_dim == 64


def test_imagenet_weights_by_url_are_downloaded_once_and_hash_checked_at_every_use(tmp_path):
    """Issue 13: weights named as torch.hub names them (``<arch>-<sha256 prefix>.pth``) are checked against that
    prefix at every load; a URL is fetched once into the store's models folder."""
    import hashlib

    import pytest

    from pipelines.errors import InputError
    from pipelines.io.downloads import resolve_pretrained

    sd = TSMResNet("tiny").state_dict()
    plain = tmp_path / "tiny.pth"
    torch.save(sd, plain)
    prefix = hashlib.sha256(plain.read_bytes()).hexdigest()[:8]
    named = tmp_path / "src" / f"tiny-{prefix}.pth"
    named.parent.mkdir()
    plain.rename(named)
    local = resolve_pretrained(named.as_uri(), "tiny", tmp_path / "models")
    assert local.parent.parent == tmp_path / "models" and local.name == named.name
    model = TSMResNet("tiny")
    model.load_pretrained(local)
    torch.testing.assert_close(model.conv1.weight, sd["conv1.weight"])
    assert resolve_pretrained(named.as_uri(), "tiny", tmp_path / "models") == local  # no second download
    assert resolve_pretrained("none", "resnet50", tmp_path / "models") is None
    # a file whose content does not match the hash its name carries is refused at load time
    wrong = tmp_path / "tiny-00000000.pth"
    torch.save(sd, wrong)
    with pytest.raises(ValueError, match="does not start with the 00000000 its name carries"):
        TSMResNet("tiny").load_pretrained(wrong)
    with pytest.raises(ValueError, match="not a torchvision resnet50 state dict"):
        TSMResNet("resnet50").load_pretrained(local)
    # offline (nothing listens on port 9): one line saying how to go on, never a silent random start
    with pytest.raises(InputError, match="--pretrained PATH, or train from random weights with --pretrained none"):
        resolve_pretrained("http://127.0.0.1:9/resnet18-f37072fd.pth", "resnet18", tmp_path / "models", timeout=5)
    with pytest.raises(InputError, match="no ImageNet weights for backbone 'tiny'"):
        resolve_pretrained("imagenet", "tiny", tmp_path / "models")


def test_imagenet_urls_are_torchvisions():
    from dualnet.backbone import IMAGENET_WEIGHTS

    assert IMAGENET_WEIGHTS["resnet101"] == "https://download.pytorch.org/models/resnet101-63fe2227.pth"
    assert set(IMAGENET_WEIGHTS) == {"resnet18", "resnet50", "resnet101"}
