"""Tokenizer health metrics: PSNR, codebook usage per 256 images, perplexity, dead codes."""

import math

import pytest
import torch

from vimtool.metrics.codebook import CodebookHealth, codebook_perplexity, codebook_usage, psnr_per_image


def test_psnr_of_known_error():
    x = torch.zeros(2, 3, 4, 4)
    y = torch.full_like(x, 0.1)  # MSE 0.01 -> 20 dB
    assert psnr_per_image(x, y).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)


def test_usage_is_averaged_over_groups_of_256_images():
    k = 1000
    ids = torch.zeros(512, 4, dtype=torch.long)
    ids[:256] = torch.arange(256 * 4).view(256, 4) % 500  # first group uses 500 codes
    ids[256:] = 7  # second group collapsed onto one code
    assert codebook_usage(ids, k) == pytest.approx((500 / k + 1 / k) / 2)
    assert codebook_usage(ids[:10], k) == pytest.approx(len(torch.unique(ids[:10])) / k)


def test_perplexity_uniform_and_collapsed():
    assert codebook_perplexity(torch.ones(64)) == pytest.approx(64.0)
    assert codebook_perplexity(torch.tensor([5, 0, 0, 0])) == pytest.approx(1.0)
    assert codebook_perplexity(torch.tensor([1, 1, 0, 0])) == pytest.approx(2.0)


def test_health_accumulates_batches():
    h = CodebookHealth(codebook_size=16)
    x = torch.zeros(3, 3, 4, 4)
    h.update(x, x + 0.2, torch.tensor([[0, 1], [1, 2], [2, 3]]))  # [0,1] error 0.1 -> 20 dB
    h.update(x[:1], x[:1], torch.tensor([[3, 3]]))  # perfect -> capped 100 dB
    m = h.compute()
    assert m["dead_codes"] == 12 and m["images"] == 4
    assert m["codebook_usage"] == pytest.approx(4 / 16)
    assert m["psnr"] == pytest.approx((3 * 20 + 100) / 4, abs=1e-3)
    assert m["recon_l2"] == pytest.approx(0.01 * 3 / 4)
    assert math.isfinite(m["codebook_perplexity"])
