"""The ViT-VQGAN quantizer: nearest-code lookup, straight-through gradients, codebook term, plain ablation."""

import torch
import torch.nn.functional as F

from vimtool.models.quantizer import VectorQuantizer


def _vq(kind="factorized", in_dim=16, out_dim=16, k=32, lookup=8):
    torch.manual_seed(0)
    return VectorQuantizer(in_dim, out_dim, codebook_size=k, lookup_dim=lookup, kind=kind)


def test_factorized_picks_the_nearest_l2_normalized_code():
    vq = _vq()
    z = torch.randn(2, 5, 16)
    _, _, ids, _ = vq(z)
    zl = F.normalize(vq.down(z), dim=-1)  # (B, T, L)
    codes = F.normalize(vq.codebook, dim=-1)
    brute = torch.cdist(zl.reshape(-1, 8), codes).argmin(-1).view(2, 5)
    assert torch.equal(ids, brute)
    assert ids.dtype == torch.long and ids.shape == (2, 5)


def test_forward_output_equals_embed_of_its_ids():
    for kind in ("factorized", "plain"):
        vq = _vq(kind, out_dim=16 if kind == "plain" else 24)
        z = torch.randn(3, 4, 16)
        zq, _, ids, _ = vq(z)
        assert torch.allclose(zq, vq.embed(ids), atol=1e-6)


def test_straight_through_gives_encoder_grads_but_no_codebook_grads():
    vq = _vq("plain")
    z = torch.randn(2, 6, 16, requires_grad=True)
    zq, _, _, _ = vq(z)
    w = torch.randn_like(zq)
    (zq * w).sum().backward()
    # Straight-through (plain: no projections): d(sum(zq * w))/dz is exactly w.
    assert torch.allclose(z.grad, w)
    assert vq.codebook.grad is None or vq.codebook.grad.abs().sum() == 0


def test_codebook_learns_from_codebook_term_and_encoder_from_commitment():
    vq = _vq()
    z = torch.randn(4, 8, 16, requires_grad=True)
    _, loss, ids, _ = vq(z)
    loss.backward()
    g = vq.codebook.grad
    used = torch.unique(ids)
    unused = torch.tensor([i for i in range(32) if i not in set(used.tolist())])
    assert g[used].abs().sum(-1).gt(0).all()  # every chosen code is pulled towards its inputs
    if len(unused):
        assert g[unused].abs().sum() == 0  # unchosen codes get nothing
    assert z.grad.abs().sum() > 0  # the 0.25 commitment term reaches the encoder


def test_vq_loss_is_codebook_plus_quarter_commitment():
    vq = _vq("plain")
    z = torch.randn(2, 3, 16)
    _, loss, ids, _ = vq(z)
    e = vq.codebook[ids]
    mse = F.mse_loss(e, z)
    assert torch.allclose(loss, 1.25 * mse)  # both terms have the same value, beta = 0.25


def test_training_the_codebook_reduces_loss():
    vq = _vq()
    opt = torch.optim.Adam(vq.parameters(), lr=1e-2)
    z = torch.randn(8, 16, 16)
    first = None
    for _ in range(30):
        _, loss, _, _ = vq(z)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_embed_rejects_out_of_range_ids():
    vq = _vq()
    try:
        vq.embed(torch.tensor([[0, 32]]))
    except ValueError as e:
        assert "[0, 32)" in str(e)
    else:
        raise AssertionError("expected ValueError")


def test_restart_codes_moves_only_dead_codes_onto_samples():
    vq = _vq()
    before = vq.codebook.detach().clone()
    dead = torch.zeros(32, dtype=torch.bool)
    dead[[3, 7]] = True
    samples = torch.randn(5, 8)
    assert vq.restart_codes(dead, samples, torch.Generator().manual_seed(0)) == 2
    after = vq.codebook.detach()
    assert torch.equal(after[~dead], before[~dead])
    for i in (3, 7):
        assert any(torch.equal(after[i], s) for s in samples)
