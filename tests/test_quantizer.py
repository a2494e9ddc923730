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


def test_kmeans_init_puts_every_code_on_a_distinct_sample():
    # As many distinct samples as codes: k-means++ seeds each code on its own sample and Lloyd keeps it there.
    for kind in ("factorized", "plain"):
        vq = _vq(kind, k=16)
        lookup = vq.lookup_dim
        samples = torch.randn(16, lookup) * 3.0
        norms = vq.codebook.detach().norm(dim=-1)
        assert vq.kmeans_init(samples, iters=5, generator=torch.Generator().manual_seed(0)) == 16
        codes = vq._codes().detach()
        target = F.normalize(samples, dim=-1) if kind == "factorized" else samples
        dist = torch.cdist(codes, target)  # (K, N)
        assert dist.min(dim=1).values.max() < 1e-5  # every code sits on a sample ...
        assert dist.argmin(dim=1).unique().numel() == 16  # ... and no two on the same one
        assert torch.equal(vq.nearest(samples[None] if kind == "plain" else target[None]).unique(), torch.arange(16))
        if kind == "factorized":  # the random init's code norms are kept (they set how fast Adam turns a code)
            assert torch.allclose(vq.codebook.detach().norm(dim=-1), norms, atol=1e-5)


def test_kmeans_init_raises_usage_on_clustered_encoder_outputs():
    # Outputs in a small cap of the sphere (as a fresh encoder's are): a random codebook uses few codes, k-means most.
    vq = _vq("factorized", in_dim=16, k=64, lookup=8)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(1, 16, generator=g) * 4 + torch.randn(512, 16, generator=g)  # (N, in_dim), one common direction
    z_l = vq.project(z[None])  # (1, N, L)
    before = vq.nearest(z_l).unique().numel()
    vq.kmeans_init(z_l[0], iters=10, generator=g)
    after = vq.nearest(z_l).unique().numel()
    assert before < 20 and after > 48, (before, after)


def test_kmeans_init_with_fewer_distinct_samples_than_codes():
    # Flat backgrounds: 3 distinct vectors for 8 codes. Every code lands on one of them, each of them gets a code.
    vq = _vq("plain", k=8)
    base = torch.randn(3, 16)
    samples = base[torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 0])]
    assert vq.kmeans_init(samples, iters=3, generator=torch.Generator().manual_seed(0)) == 3
    dist = torch.cdist(vq.codebook.detach(), base)  # (8, 3)
    assert dist.min(dim=1).values.max() < 1e-5
    assert dist.argmin(dim=0).unique().numel() == 3 and dist.min(dim=0).values.max() < 1e-5
