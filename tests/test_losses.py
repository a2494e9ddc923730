"""Loss terms of the ViT-VQGAN objective: logit-Laplace by hand, GAN losses, R1, perceptual weights."""

import math

import pytest
import torch

from vimtool.errors import VimtoolError
from vimtool.models.discriminator import DiscriminatorConfig, StyleGANDiscriminator, minibatch_stddev
from vimtool.models.losses import (
    discriminator_loss,
    generator_adversarial_loss,
    logit_laplace_nll,
    map_pixels,
    r1_penalty,
    unmap_pixels,
)
from vimtool.models.perceptual import LPIPS, PerceptualConfig, VGG16Features, load_lpips


def test_logit_laplace_matches_hand_computed_value():
    # Pixel 0.5 -> mapped 0.5, logit 0; mu = 1, b = 1:
    #   ln2 + ln1 + ln0.5 + ln0.5 + |0 - 1| / 1 = 0.693147 - 1.386294 + 1 = 0.306853
    # Pixel 1.0 -> mapped 0.9 (eps 0.1), logit ln9 = 2.197225; mu = 0, b = 0.5:
    #   ln2 + ln0.5 + ln0.9 + ln0.1 + 2.197225 / 0.5 = 0 - 0.105361 - 2.302585 + 4.394449 = 1.986503
    # mean = 1.146678
    x = torch.tensor([0.5, 1.0])
    mu = torch.tensor([1.0, 0.0])
    log_scale = torch.tensor([0.0, math.log(0.5)])
    assert logit_laplace_nll(x, mu, log_scale).item() == pytest.approx(1.146678, abs=1e-5)


def test_logit_laplace_learns_its_scale_unlike_l1():
    # For fixed mu the NLL is minimal at b = |logit(x) - mu|: the scale matters, so this is not L1.
    x = torch.tensor([0.8])
    mu = torch.tensor([0.0])
    target_b = abs(math.log(map_pixels(x).item() / (1 - map_pixels(x).item())))
    bs = torch.linspace(0.1, 3.0, 300)
    vals = torch.stack([logit_laplace_nll(x, mu, torch.log(b).view(1)) for b in bs])
    assert bs[vals.argmin()].item() == pytest.approx(target_b, abs=0.02)


def test_map_unmap_round_trip():
    x = torch.rand(100)
    assert torch.allclose(unmap_pixels(map_pixels(x)), x, atol=1e-6)
    assert map_pixels(torch.tensor(0.0)).item() == pytest.approx(0.1)


def test_gan_losses_are_non_saturating_logistic():
    zero = torch.zeros(4)
    assert generator_adversarial_loss(zero).item() == pytest.approx(math.log(2))
    assert discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert discriminator_loss(torch.full((4,), 20.0), torch.full((4,), -20.0)).item() < 1e-6


def test_discriminator_shapes_and_r1_penalty_backprops():
    torch.manual_seed(0)
    d = StyleGANDiscriminator(DiscriminatorConfig(image_size=32, channels=8, max_channels=32))
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    pen, logits = r1_penalty(d, x)
    assert logits.shape == (6,)
    assert pen.item() > 0
    pen.backward()
    assert d.from_rgb.weight.grad.abs().sum() > 0


def test_minibatch_stddev_adds_a_constant_channel_per_group():
    x = torch.randn(8, 5, 4, 4)
    y = minibatch_stddev(x, 4)
    assert y.shape == (8, 6, 4, 4)
    assert torch.allclose(minibatch_stddev(torch.ones(4, 2, 4, 4), 4)[:, -1], torch.full((4, 4, 4), 1e-4), atol=1e-5)


def test_perceptual_without_weights_fails_with_the_file_name_and_option(tmp_path, monkeypatch):
    monkeypatch.setenv("VIMTOOL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("VIMTOOL_OFFLINE", "1")
    with pytest.raises(VimtoolError) as e:
        load_lpips(PerceptualConfig())
    msg = str(e.value)
    assert "vgg16-397923af.pth" in msg and "loss.perceptual_weights.vgg_weights" in msg and "\n" not in msg
    with pytest.raises(VimtoolError, match="file not found"):
        load_lpips(PerceptualConfig(vgg_weights=str(tmp_path / "nope.pth")))


def test_perceptual_loads_standard_key_layout_and_measures_distance(tmp_path, monkeypatch):
    # Random weights in the standard files' key layout (the real files cannot be fetched offline): this checks
    # that the files load by their torchvision / LPIPS key names and that the distance behaves like one.
    monkeypatch.setenv("VIMTOOL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VIMTOOL_OFFLINE", "1")
    torch.manual_seed(0)
    vgg = {k: v for k, v in VGG16Features().state_dict().items()}
    vgg["classifier.0.weight"] = torch.zeros(1)  # torchvision's file also holds the classifier: ignored
    torch.save(vgg, tmp_path / "vgg.pth")
    lins = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(lins, tmp_path / "lin.pth")
    lp = load_lpips(PerceptualConfig(vgg_weights=str(tmp_path / "vgg.pth"), lpips_weights=str(tmp_path / "lin.pth")))
    assert isinstance(lp, LPIPS) and not any(p.requires_grad for p in lp.parameters())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    assert lp(x, x).item() == pytest.approx(0.0, abs=1e-6)
    y.requires_grad_(True)
    d = lp(x, y)
    assert d.item() > 0
    d.backward()
    assert y.grad.abs().sum() > 0
    # "uniform" is an explicit choice that needs only the VGG16 file.
    lp_u = load_lpips(PerceptualConfig(vgg_weights=str(tmp_path / "vgg.pth"), lpips_weights="uniform"))
    assert lp_u(x, y.detach()).item() > 0
