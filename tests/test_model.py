"""The model on random input, preset by preset (timm-style), and its documented behaviours."""

from __future__ import annotations

import pytest
import torch

import dualnet
from dualnet.layouts import get_layout
from dualnet.model import MicroDualNet

# ResNet-50/101 at 224 px take a minute per step on 2 CPU cores; their presets are checked at the documented
# T, K, D and layout with small images (the backbone pools adaptively, so nothing else depends on the size).
SMALL_IMAGES = {"paper": (32, 64), "r50": (32, 64), "small": (32, 64)}


def batch(config: dualnet.ModelConfig, b: int = 3, seed: int = 0, preset: str = "") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s, gs = SMALL_IMAGES.get(preset, (config.entity_size, config.global_size))
    t, k, v = config.num_frames, len(dualnet.entities.get_entity_set(config.entity_set)), \
        get_layout(config.layout).num_keypoints
    keypoints = torch.rand(b, t, v, 3, generator=g) * torch.tensor([1080.0, 1296.0, 1.0])
    keypoints[:, :, 100:200] = float("nan")  # missing points must not poison anything
    centre = torch.rand(b, t, k, 2, generator=g) * 800 + 100
    side = torch.rand(b, t, k, 1, generator=g) * 200 + 50
    return {
        "tubes": torch.randint(0, 256, (b, t, k, 3, s, s), dtype=torch.uint8, generator=g),
        "frames": torch.randint(0, 256, (b, t, 3, gs, gs), dtype=torch.uint8, generator=g),
        "keypoints": keypoints,
        "boxes": torch.cat([centre - side / 2, centre + side / 2], dim=-1),
    }


@pytest.mark.parametrize("name", list(dualnet.PRESETS))
def test_preset_forward_backward_every_parameter_learns(name):
    torch.manual_seed(0)
    config = dualnet.preset(name, num_coarse=7)
    model = MicroDualNet(config)
    inputs = batch(config, preset=name)
    out = model(**inputs)
    k = model.num_entities
    assert out.logits.shape == (3, config.num_classes) and out.coarse_logits.shape == (3, 7)
    assert out.routing.shape == (3, k, 2) and out.entity_st.shape == (3, k, config.dim)
    loss, parts = model.loss(out, torch.tensor([0, 1, 2]), torch.tensor([0, 3, 6]))
    assert torch.isfinite(loss) and set(parts) == {"ce", "mac", "coarse_ce", "total"}
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    silent = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not silent, silent
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all(n.startswith("backbone.fc.") for n in frozen)  # only torchvision's unused ImageNet classifier


def test_routing_weights_sum_to_one_and_sharpen_with_tau():
    torch.manual_seed(0)
    config = dualnet.preset("pose_tiny")
    inputs = batch(config)
    soft = MicroDualNet(config).eval()
    weights = soft(**inputs).routing
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 6))
    assert (weights.max(-1).values < 0.99).all()
    peaks = {}
    for tau in (0.01, 1e-4):
        sharp = MicroDualNet(config.override(tau=tau)).eval()
        sharp.load_state_dict(soft.state_dict())
        hard = sharp(**inputs).routing
        assert torch.equal(hard.argmax(-1), weights.argmax(-1))
        peaks[tau] = hard.max(-1).values
    assert peaks[0.01].mean() > 0.97 and (peaks[0.01] > 0.99).float().mean() > 0.75  # near-ties stay soft at 0.01
    assert (peaks[1e-4] > 0.999).all()  # ... and go one-hot as tau shrinks further


def test_st_and_ts_paths_differ_for_the_same_input_and_weights():
    torch.manual_seed(0)
    model = MicroDualNet(dualnet.preset("pose_tiny")).eval()
    inputs = batch(model.config)
    st, ts = model(**inputs, path="st"), model(**inputs, path="ts")
    assert not torch.allclose(st.logits, ts.logits)
    assert st.routing[..., 0].eq(1).all() and ts.routing[..., 1].eq(1).all() and st.mac is None
    average = model(**inputs, path="average")
    assert average.routing.eq(0.5).all()


def test_spatial_t_is_permutation_equivariant_without_position_embeddings():
    torch.manual_seed(0)
    path = dualnet.paths.SpatialT(dualnet.paths.AttentionBlock(32, 2, 1, 2.0, 0.0)).eval()
    x = torch.randn(2, 4, 6, 32)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(path(x[:, :, perm]), path(x)[:, :, perm])
    model = MicroDualNet(dualnet.preset("pose_tiny", position_embeddings=False)).eval()
    assert not any("embedding" in n for n, _ in model.named_parameters())


def test_mac_loss_limits():
    torch.manual_seed(0)
    b, k, e = 64, 6, 128
    independent = dualnet.losses.mac_loss(torch.randn(b, k, e), torch.randn(b, k, e), temperature=0.1)
    assert abs(float(independent) - torch.log(torch.tensor(float(b)))) < 1.0
    distinct = torch.eye(e)[:b].unsqueeze(1).repeat(1, k, 1)  # equal across paths, orthogonal across clips
    assert float(dualnet.losses.mac_loss(distinct, distinct.clone(), temperature=0.1)) < 0.01


def test_missing_inputs_are_clear_errors():
    model = MicroDualNet(dualnet.preset("tiny"))
    with pytest.raises(ValueError, match="needs tubes"):
        model(keypoints=torch.zeros(1, 4, 543, 3), boxes=torch.zeros(1, 4, 6, 4))
    with pytest.raises(ValueError, match="unknown config field"):
        dualnet.preset("tiny", num_class=3)
    with pytest.raises(ValueError, match="path 'both' is not one of"):
        dualnet.preset("tiny", path="both")
