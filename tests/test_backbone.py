"""The TSM ResNet: torchvision-compatible weights, and the temporal shift."""

from __future__ import annotations

import pytest
import torch
from reference_torchvision import MAKE_VARIABLE, REFERENCE_DIR, load_resnet_module, torchvision_wheel

from dualnet.backbone import TSMResNet, temporal_shift


@pytest.fixture(scope="module")
def torchvision_resnets():
    """torchvision's models/resnet.py, from the wheel `make setup` keeps in $(VENV)/reference (never installed)."""
    wheel = torchvision_wheel()
    if wheel is None:
        pytest.skip(f"no torchvision wheel in {REFERENCE_DIR}: `make setup` downloads the one the Makefile's "
                    f"{MAKE_VARIABLE} names")
    return load_resnet_module(wheel)


def randomized(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """`model` with every norm's weight, bias, running mean and variance drawn at random: at their init values
    (1, 0, 0, 1) an eval-mode norm is the identity, and a norm applied in the wrong place would go unseen."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                for t, low, high in ((m.weight, 0.5, 1.5), (m.running_var, 0.5, 1.5), (m.bias, -0.2, 0.2),
                                     (m.running_mean, -0.2, 0.2)):
                    t.copy_(low + (high - low) * torch.rand(t.shape, generator=g))
    return model


@pytest.fixture(scope="module", params=("resnet18", "resnet50", "resnet101"))
def resnet_pair(request, torchvision_resnets):
    """(torchvision's model: its random init, norms randomized, eval mode; ours: as built)."""
    torch.manual_seed(0)
    return randomized(getattr(torchvision_resnets, request.param)(), seed=1).eval(), TSMResNet(request.param)


def test_state_dict_keys_and_shapes_are_torchvisions(resnet_pair):
    theirs, ours = resnet_pair
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def test_features_equal_torchvisions_with_its_weights(resnet_pair):
    """At T = 1 (no shift) our layer4 maps and logits equal torchvision's, with the same weights."""
    theirs, ours = resnet_pair
    ours.load_state_dict(theirs.state_dict(), strict=True)  # load_pretrained's file checks: tested below, on tiny
    ours.eval()
    seen = {}
    hook = theirs.layer4.register_forward_hook(lambda module, args, out: seen.update(layer4=out))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = theirs(x)
        maps = ours.forward_features(x, num_frames=1)  # (B*T, C, h, w) with T = 1
        our_logits = ours.fc(torch.flatten(ours.avgpool(maps), 1))
    hook.remove()
    assert maps.shape == seen["layer4"].shape == (2, ours.feature_dim, 2, 2)
    torch.testing.assert_close(maps, seen["layer4"], rtol=1e-5, atol=1e-5 * seen["layer4"].abs().max().item())
    torch.testing.assert_close(our_logits, logits, rtol=1e-5, atol=1e-5 * logits.abs().max().item())


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
