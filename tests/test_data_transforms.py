"""Transforms without torchvision: odd PIL modes to RGB, crops, tensor range, grids."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from vimtool.data.transforms import (
    make_grid,
    random_crop_flip,
    resize_center_crop,
    to_pil,
    to_rgb,
    to_tensor,
    translate,
)


def _px(img, xy=(0, 0)):
    return img.getpixel(xy)


def test_transparent_pixels_become_white_for_rgba_la_and_p():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((1, 1), (255, 0, 0, 255))
    out = to_rgb(rgba)
    assert out.mode == "RGB" and _px(out) == (255, 255, 255) and _px(out, (1, 1)) == (255, 0, 0)

    la = Image.new("LA", (2, 2), (0, 0))
    assert _px(to_rgb(la)) == (255, 255, 255)

    p = Image.new("P", (2, 2), 1)
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert _px(to_rgb(p)) == (10, 20, 30)
    p.info["transparency"] = 1
    assert _px(to_rgb(p)) == (255, 255, 255)


def test_sixteen_bit_and_float_greyscale_scale_to_8_bits():
    a = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    img16 = Image.fromarray(a)
    out = np.asarray(to_rgb(img16))
    assert out[0, :, 0].tolist() == [0, 100, 255] and out.shape == (1, 3, 3)

    img32 = Image.fromarray(a.astype(np.int32))  # 16-bit PNGs often open as mode I
    assert np.asarray(to_rgb(img32))[0, :, 0].tolist() == [0, 100, 255]

    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert np.asarray(to_rgb(f))[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk_and_bilevel_convert_to_rgb():
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # no black, full magenta + yellow = red
    r, g, b = _px(to_rgb(cmyk))
    assert r > 200 and g < 50 and b < 50
    assert _px(to_rgb(Image.new("1", (2, 2), 1))) == (255, 255, 255)


def test_to_tensor_range_and_lossless_round_trip():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (7, 5, 3), dtype=np.uint8))
    t = to_tensor(img)
    assert t.shape == (3, 7, 5) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    assert to_tensor(Image.new("RGB", (1, 1), (0, 0, 0))).unique().item() == -1.0
    assert to_tensor(Image.new("RGB", (1, 1), (255, 255, 255))).unique().item() == 1.0
    assert np.array_equal(np.asarray(to_pil(t)), np.asarray(img))
    assert to_pil(torch.full((1, 2, 2), 3.0)).getpixel((0, 0)) == (255, 255, 255)  # clamped, grey -> RGB


def test_resize_center_crop_keeps_the_center_of_a_wide_image():
    img = Image.new("RGB", (60, 20), (0, 0, 255))
    img.paste((255, 0, 0), (20, 0, 40, 20))  # red middle third
    out = resize_center_crop(img, 10)
    assert out.size == (10, 10)
    a = np.asarray(out)
    assert (a[:, 2:8, 0] > 200).all() and (a[:, 2:8, 2] < 60).all()


def test_small_greyscale_digit_is_resized_up_to_target():
    digit = Image.fromarray(np.eye(28, dtype=np.uint8) * 255)
    out = resize_center_crop(digit, 32)
    assert out.size == (32, 32) and out.mode == "RGB"
    a = np.asarray(out)[:, :, 0]
    assert a[0, 0] > 150 and a[31, 31] > 150 and a[0, 31] < 50  # the diagonal stretched corner to corner


def test_random_crop_flip_is_a_function_of_the_rng_seed():
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (20, 40, 3), dtype=np.uint8))
    a = random_crop_flip(img, 16, random.Random(7))
    b = random_crop_flip(img, 16, random.Random(7))
    assert a.size == (16, 16) and np.array_equal(np.asarray(a), np.asarray(b))
    crops = {np.asarray(random_crop_flip(img, 16, random.Random(s))).tobytes() for s in range(20)}
    assert len(crops) > 5  # offsets and flips vary with the seed


def test_translate_moves_content_and_repeats_the_edges():
    x = torch.arange(3 * 5 * 6, dtype=torch.float32).view(3, 5, 6)
    y = translate(x, 2, -1)  # 2 right, 1 up
    assert y.shape == x.shape
    assert torch.equal(y[:, 0:4, 2:6], x[:, 1:5, 0:4])  # the content, moved
    assert torch.equal(y[:, :, 0], y[:, :, 2]) and torch.equal(y[:, :, 1], y[:, :, 2])  # left border: the edge column
    assert torch.equal(y[:, 4, :], y[:, 3, :])  # bottom border: the edge row
    assert torch.equal(translate(x, 0, 0), x)
    digit = torch.full((3, 8, 8), -1.0)
    digit[:, 3:5, 3:5] = 1.0  # a white blob on black: a shift keeps the background black
    moved = translate(digit, -3, 3)
    assert moved.sum() == digit.sum() and torch.equal(moved[:, 6:8, 0:2], digit[:, 3:5, 3:5])
    with pytest.raises(ValueError, match="out of its frame"):
        translate(x, 0, 5)


def test_random_crop_without_flip_never_mirrors():
    img = Image.new("RGB", (16, 16), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 4, 16))  # white band on the left
    for s in range(30):
        out = np.asarray(random_crop_flip(img, 16, random.Random(s), flip=False))
        assert out[0, 0, 0] == 255 and out[0, 15, 0] == 0
    flipped = [np.asarray(random_crop_flip(img, 16, random.Random(s), flip=True))[0, 0, 0] == 0 for s in range(30)]
    assert 5 < sum(flipped) < 25


def test_make_grid_layout_with_and_without_captions():
    imgs = [Image.new("RGB", (32, 32), (i * 40, 0, 0)) for i in range(5)]
    plain = make_grid(imgs, ncol=3, pad=2)
    assert plain.size == (3 * 34 + 2, 2 * 34 + 2)
    assert plain.getpixel((2, 2)) == (0, 0, 0) and plain.getpixel((2 + 34, 2)) == (40, 0, 0)

    caps = ["a small red circle in the top left", None, "x", "y", "a very long caption " * 6]
    labelled = make_grid(imgs, ncol=3, captions=caps, pad=2)
    w, h = labelled.size
    assert w == 3 * (96 + 2) + 2  # 32-px cells enlarged x3 so text fits
    assert h > 2 * (96 + 2) + 2  # room for caption lines under each row
    cell = np.asarray(labelled)[2 + 96 : 2 + 96 + 12, 2 : 2 + 96]
    assert (cell < 128).any()  # text was drawn under the first image


def test_make_grid_accepts_a_batch_tensor_and_checks_caption_count():
    batch = torch.zeros(4, 3, 8, 8)
    grid = make_grid(batch, ncol=2, pad=0)
    assert grid.size == (16, 16) and grid.getpixel((0, 0)) == (128, 128, 128)
    with pytest.raises(ValueError):
        make_grid(batch, ncol=2, captions=["one"])
