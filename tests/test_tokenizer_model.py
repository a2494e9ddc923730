"""ViT-VQGAN model: shapes of encode/decode, sizes, gradient path end to end, NOBLE and plain options."""

import pytest
import torch

from vimtool.errors import VimtoolError
from vimtool.models.losses import logit_laplace_nll
from vimtool.models.vitvqgan import SIZES, ViTVQGAN, size_config
from vimtool.nn.noble import NobleConfig, NobleLinear


def _micro(**kw):
    torch.manual_seed(0)
    return ViTVQGAN(size_config("micro", **kw))


def test_encode_decode_shapes_and_ranges():
    m = _micro().eval()
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    ids = m.encode(x)
    assert ids.shape == (3, 16) and ids.dtype == torch.long and m.grid == (4, 4)
    assert 0 <= int(ids.min()) and int(ids.max()) < m.codebook_size
    y = m.decode(ids)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    recon, aux = m(x)
    assert torch.equal(aux["ids"], ids)  # forward and encode agree on the tokens
    assert torch.allclose(recon, y, atol=1e-5)  # and decode(ids) is forward's reconstruction
    assert aux["mu"].shape == x.shape and aux["log_scale"].shape == x.shape
    assert torch.allclose(m.reconstruct(x), y, atol=1e-5)


def test_other_image_and_patch_sizes():
    m = ViTVQGAN(size_config("micro", image_size=64, patch_size=8, logit_laplace=False)).eval()
    ids = m.encode(torch.zeros(2, 3, 64, 64))
    assert ids.shape == (2, 64) and m.decode(ids).shape == (2, 3, 64, 64)
    with pytest.raises(VimtoolError, match="not divisible"):
        size_config("micro", image_size=30, patch_size=4)
    with pytest.raises(VimtoolError, match="expects 3x64x64"):
        m.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(VimtoolError, match="decode expects"):
        m.decode(torch.zeros(1, 10, dtype=torch.long))


def test_paper_sizes_have_paper_widths():
    assert (SIZES["SS"].enc_dim, SIZES["SS"].enc_depth, SIZES["SS"].enc_heads, SIZES["SS"].enc_mlp_dim) == (
        512,
        8,
        8,
        2048,
    )
    assert (SIZES["BB"].dec_dim, SIZES["BB"].dec_depth) == (768, 12)
    assert (SIZES["SL"].enc_dim, SIZES["SL"].dec_dim, SIZES["SL"].dec_depth, SIZES["SL"].dec_heads) == (
        512,
        1280,
        32,
        16,
    )
    assert SIZES["SS"].grid == (32, 32) and SIZES["SS"].codebook_size == 8192 and SIZES["SS"].lookup_dim == 32
    assert SIZES["tiny"].grid == (8, 8)


def test_all_losses_reach_encoder_decoder_and_codebook():
    m = _micro()
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    recon, aux = m(x)
    loss = (
        (recon - x).pow(2).mean() + aux["vq_loss"] + 0.1 * logit_laplace_nll((x + 1) / 2, aux["mu"], aux["log_scale"])
    )
    loss.backward()
    for name in ("patch_embed.weight", "quantizer.codebook", "quantizer.down.weight", "dec_head.fc2.weight"):
        g = dict(m.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name


def test_plain_quantizer_and_noble_options():
    m = _micro(quantizer="plain")
    assert m.quantizer.lookup_dim == 32 and not m.quantizer.l2_normalize
    ids = m.encode(torch.zeros(1, 3, 16, 16))
    assert ids.shape == (1, 16)
    n = _micro(noble=NobleConfig(rank=4))
    assert any(isinstance(mod, NobleLinear) for mod in n.encoder.modules())
    assert any(isinstance(mod, NobleLinear) for mod in n.decoder.modules())
    assert n.encode(torch.zeros(1, 3, 16, 16)).shape == (1, 16)


def test_short_training_lowers_reconstruction_error():
    torch.manual_seed(0)
    m = ViTVQGAN(size_config("micro", logit_laplace=False))
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    first = None
    for _ in range(40):
        recon, aux = m(x)
        loss = (recon - x).pow(2).mean() + aux["vq_loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first


def test_the_pixel_refiner_starts_as_the_identity_and_trains():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    plain, refined = _micro(logit_laplace=False).eval(), _micro(logit_laplace=False, out_conv=8).eval()
    assert plain.out_conv is None and refined.out_conv is not None
    with torch.no_grad():
        assert torch.allclose(plain(x)[0], refined(x)[0], atol=1e-6)  # zero-initialised last conv: the same model
    recon, _ = refined.train()(x)
    assert recon.is_contiguous()  # its convs run channels-last; what it returns is NCHW again
    recon.square().mean().backward()
    assert refined.out_conv.conv2.weight.grad.abs().sum() > 0  # it trains
    assert refined.out_conv.conv1.weight.grad is not None  # (zero until conv2 moves: its input gradient is 0)
    with pytest.raises(VimtoolError, match="out_conv"):
        size_config("micro", out_conv=-1)
