"""Image transforms without torchvision: any PIL mode -> RGB, resize/crop, tensors in [-1, 1], labelled grids.

Conventions (ARCHITECTURE.md, "Images"): model-side image tensors are float32 `(3, H, W)` (or `(B, 3, H, W)`)
in **[-1, 1]**; `to_tensor` maps uint8 0..255 linearly onto that range and `to_pil` inverts it (rounding to
the nearest 8-bit value, so `to_pil(to_tensor(img))` is lossless).

- `to_rgb(img)`: any mode (1, L, LA, P (with or without transparency), RGBA (composited on white), CMYK, YCbCr,
  I;16 / I / F (16-bit or float greyscale, scaled to 8 bits)) -> 8-bit RGB.
- `resize_center_crop(img, size)`: eval transform. Shorter side -> `size` (bicubic with antialiasing when
  shrinking, as PIL does), then the central `size x size` square. Small images (MNIST 28x28 -> 32) are
  *resized* up the same way rather than padded, so every source goes through one path and digits keep
  filling the frame as they do at 28.
- `random_crop_flip(img, size, rng, flip=True)`: train transform. Shorter side -> `size`, a random
  `size x size` crop along the longer side, and a horizontal flip with probability 1/2 when `flip`. `rng` is
  a `random.Random` the caller derives from (seed, epoch, index) so a resumed run sees the same pixels.
- `translate(x, dx, dy)`: a tensor image moved by whole pixels, edges repeated into the uncovered border
  (tokenize-dataset's `--shifts` copies).
- `to_tensor(img)`, `to_pil(tensor)`.
- `make_grid(images, ncol, captions=None)`: a grid PNG helper shared by previews, reconstructions and samples;
  captions are drawn under each cell in PIL's default font, word-wrapped.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

WHITE = (255, 255, 255)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Transparent pixels are composited on white (not black: logos and sprites
    with an alpha channel would otherwise come out as black blobs)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if mode == "F":
            # float images: [0, 1] when they look normalised, else already on a 0..255 scale
            scale = 255.0 if a.size and np.nanmax(a) <= 1.0 else 1.0
            a = a * scale
        elif mode.startswith("I;16") or (a.size and a.max() > 255):
            a = a / 257.0  # 16-bit 0..65535 -> 0..255 (65535 / 257 = 255 exactly)
        a = np.nan_to_num(a, nan=0.0).clip(0, 255).round().astype(np.uint8)
        return Image.fromarray(a).convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # 1, L, CMYK, YCbCr, LAB, HSV: PIL's own conversions are right for these


def _resize_shorter(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    if min(w, h) == size:
        return img
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return img.resize(new, Image.Resampling.BICUBIC, reducing_gap=None)


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Shorter side -> `size` (bicubic), then the central `size x size` square. Returns RGB."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    img = _resize_shorter(to_rgb(img), size)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size)) if (w, h) != (size, size) else img


def random_crop_flip(img: Image.Image, size: int, rng: random.Random, flip: bool = True) -> Image.Image:
    """Shorter side -> `size`, a random square crop along the longer side, horizontal flip w.p. 1/2 if `flip`.

    Captioned sets whose text names left/right (the `shapes` set) must be used with `flip=False`.
    """
    img = _resize_shorter(to_rgb(img), size)
    w, h = img.size
    left = rng.randint(0, w - size)
    top = rng.randint(0, h - size)
    if (w, h) != (size, size):
        img = img.crop((left, top, left + size, top + size))
    if flip and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def translate(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """(C, H, W) image with its content moved `dx` pixels right and `dy` down (negative: left / up); the border
    it uncovers repeats the edge pixels (black around MNIST digits, a plausible continuation for photos)."""
    p = max(abs(dx), abs(dy))
    if p == 0:
        return x.clone()
    h, w = x.shape[-2:]
    if p >= min(h, w):
        raise ValueError(f"a shift of ({dx}, {dy}) pixels moves a {h}x{w} image out of its frame")
    padded = torch.nn.functional.pad(x.unsqueeze(0), (p, p, p, p), mode="replicate")[0]  # (C, H + 2p, W + 2p)
    return padded[:, p - dy : p - dy + h, p - dx : p - dx + w]


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image (any mode) -> float32 tensor (3, H, W) in [-1, 1]."""
    a = np.asarray(to_rgb(img), dtype=np.uint8)  # (H, W, 3)
    t = torch.from_numpy(a.copy()).permute(2, 0, 1)  # (3, H, W)
    return t.float().div_(127.5).sub_(1.0)


def to_pil(t: torch.Tensor) -> Image.Image:
    """Tensor in [-1, 1], shaped (3, H, W), (1, H, W) or (H, W) -> RGB PIL image (values clamped)."""
    t = t.detach().float().cpu()
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"to_pil expects (3, H, W), (1, H, W) or (H, W), got {tuple(t.shape)}")
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    a = ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
    return Image.fromarray(np.ascontiguousarray(a))


def _as_pil_list(images) -> list[Image.Image]:
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        return [to_pil(x) for x in images]  # (B, 3, H, W) in [-1, 1]
    out = []
    for im in images:
        if isinstance(im, torch.Tensor):
            out.append(to_pil(im))
        elif isinstance(im, np.ndarray):
            out.append(to_rgb(Image.fromarray(im)))
        else:
            out.append(to_rgb(im))
    return out


def _font(size: int = 11) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable default font
    except (TypeError, AttributeError, OSError):
        return ImageFont.load_default()


def _text_width(font, text: str) -> float:
    return font.getlength(text) if hasattr(font, "getlength") else len(text) * 6


def _wrap(text: str, font, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to `width` pixels; over-long words are cut; at most `max_lines` (last one ends in ...)."""
    lines: list[str] = []
    for para in str(text).splitlines() or [""]:
        line = ""
        for word in para.split():
            while _text_width(font, word) > width and len(word) > 1:  # a word wider than the cell: hard-break it
                cut = len(word)
                while cut > 1 and _text_width(font, word[:cut]) > width:
                    cut -= 1
                if line:
                    lines.append(line)
                    line = ""
                lines.append(word[:cut])
                word = word[cut:]
            trial = f"{line} {word}".strip()
            if _text_width(font, trial) <= width or not line:
                line = trial
            else:
                lines.append(line)
                line = word
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and _text_width(font, last + "...") > width:
            last = last[:-1]
        lines[-1] = last + "..."
    return lines


def make_grid(
    images,
    ncol: int = 8,
    captions: Sequence[str | None] | None = None,
    *,
    pad: int = 2,
    min_cell: int | None = None,
    max_caption_lines: int = 4,
    background: tuple[int, int, int] = WHITE,
) -> Image.Image:
    """Images (PIL list, tensor (B, 3, H, W) in [-1, 1], or a list of (3, H, W) tensors) -> one RGB grid.

    Cells take the first image's size (others are resized to it). With captions, small cells are enlarged by
    an integer factor (nearest neighbour, so pixels stay visible) to at least `min_cell` pixels wide
    (default 96) so the text can be read; without captions the pixels are kept 1:1 unless `min_cell` is given.
    """
    pil = _as_pil_list(images)
    if not pil:
        raise ValueError("make_grid needs at least one image")
    if captions is not None and len(captions) != len(pil):
        raise ValueError(f"make_grid: {len(captions)} captions for {len(pil)} images")
    ncol = max(1, min(int(ncol), len(pil)))
    nrow = math.ceil(len(pil) / ncol)
    w0, h0 = pil[0].size
    if min_cell is None:
        min_cell = 96 if captions is not None else 1
    factor = max(1, math.ceil(min_cell / w0))
    cw, ch = w0 * factor, h0 * factor

    font = _font()
    line_h = 0
    wrapped: list[list[str]] = []
    if captions is not None:
        bbox = font.getbbox("Ag") if hasattr(font, "getbbox") else (0, 0, 6, 11)
        line_h = bbox[3] - bbox[1] + 2
        wrapped = [_wrap("" if c is None else str(c), font, cw, max_caption_lines) for c in captions]
    text_h = (max(len(lines) for lines in wrapped) * line_h + 2) if wrapped else 0

    grid = Image.new("RGB", (ncol * (cw + pad) + pad, nrow * (ch + text_h + pad) + pad), background)
    draw = ImageDraw.Draw(grid)
    for i, im in enumerate(pil):
        r, c = divmod(i, ncol)
        x, y = pad + c * (cw + pad), pad + r * (ch + text_h + pad)
        if im.size != (w0, h0):
            im = im.resize((w0, h0), Image.Resampling.BICUBIC)
        if factor != 1:
            im = im.resize((cw, ch), Image.Resampling.NEAREST)
        grid.paste(im, (x, y))
        for j, line in enumerate(wrapped[i] if wrapped else []):
            draw.text((x, y + ch + 1 + j * line_h), line, fill=(0, 0, 0), font=font)
    return grid
