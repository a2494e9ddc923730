"""Generated image data for the data-layer tests (nothing can be downloaded): an ImageNet-layout folder of JPEGs
of varied sizes, the same as Parquet (image bytes + a ClassLabel, as `datasets` writes it), a folder of corrupt
and unusual images, and a micro tokenizer. Tiny on purpose: every test using them runs in seconds."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SYNSETS = ["n01440764", "n01443537", "n01484850"]  # ImageNet-style class folder names


def jpeg_bytes(width: int, height: int, seed: int, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] //= 2  # some structure, so a decode at another scale is visibly the same picture
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def imagenet_items(per_class: int = 4) -> list[tuple[str, int, bytes]]:
    """(file name, label, JPEG bytes) with sides between 40 and 100 px, every aspect."""
    items = []
    for label, synset in enumerate(SYNSETS):
        for i in range(per_class):
            seed = 10 * label + i
            w, h = 40 + (seed * 17) % 61, 40 + (seed * 29) % 61
            items.append((f"{synset}/{synset}_{i}.JPEG", label, jpeg_bytes(w, h, seed)))
    return items


def imagenet_folder(root: Path, per_class: int = 4) -> Path:
    """root/train/<synset>/<synset>_<i>.JPEG, as ILSVRC's train folder is laid out."""
    for name, _, data in imagenet_items(per_class):
        path = root / "train" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def imagenet_dataset(per_class: int = 4):
    """The same images as a `datasets.Dataset` with Image and ClassLabel features (the Hub's imagenet-1k layout)."""
    import datasets

    items = imagenet_items(per_class)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=SYNSETS)})
    return datasets.Dataset.from_dict(
        {"image": [{"bytes": d, "path": None} for _, _, d in items], "label": [lab for _, lab, _ in items]},
        features=features,
    )


def imagenet_parquet(path: Path, per_class: int = 4) -> Path:
    """Parquet with image bytes + label, written by `datasets` (ClassLabel names in the file metadata)."""
    imagenet_dataset(per_class).to_parquet(str(path), batch_size=5)  # several row groups
    return path


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG header claiming width x height pixels and no data: PIL refuses it (DecompressionBombError)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


NON_UTF8_NAME = b"caf\xe9.png"  # Latin-1 e-acute: not UTF-8
GOOD_IDS = ["a.png", "b.png", "c.png", "deep16.png", "cmyk.jpg", "palette_alpha.png", "tiny.png", "caf\\xe9.png"]
BAD_CAUSES = {"truncated": 1, "empty": 1, "not_an_image": 1, "too_large": 1}


def corrupt_folder(root: Path) -> Path:
    """Good images (also 16-bit, CMYK, palette + alpha, 1x1, a non-UTF-8 name) and bad ones (truncated JPEG,
    0-byte file, text named .png, a 20000x20000 header). The good ones' source ids are GOOD_IDS; the bad ones'
    causes BAD_CAUSES."""
    root.mkdir(parents=True)
    for name, colour in (("a.png", (255, 0, 0)), ("b.png", (0, 255, 0)), ("c.png", (0, 0, 255))):
        (root / name).write_bytes(png_bytes(Image.new("RGB", (20, 20), colour)))
    (root / "deep16.png").write_bytes(png_bytes(Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16))))
    (root / "cmyk.jpg").write_bytes(jpeg_bytes(24, 20, 1, mode="CMYK"))
    palette = Image.new("P", (20, 20), 0)  # left half transparent (index 0), right half opaque red (index 1)
    palette.paste(1, (10, 0, 20, 20))
    palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    palette.info["transparency"] = 0
    (root / "palette_alpha.png").write_bytes(png_bytes(palette))
    (root / "tiny.png").write_bytes(png_bytes(Image.new("RGB", (1, 1), (9, 9, 9))))
    with open(os.path.join(os.fsencode(root), NON_UTF8_NAME), "wb") as f:
        f.write(png_bytes(Image.new("RGB", (20, 20), (50, 60, 70))))
    good = jpeg_bytes(64, 64, 3)
    (root / "trunc.jpg").write_bytes(good[: len(good) // 2])
    (root / "z.png").write_bytes(b"")
    (root / "text.png").write_text("this is not a picture\n")
    (root / "bomb.png").write_bytes(bomb_png())
    return root


def save_micro_tokenizer(folder: Path) -> Path:
    """A random micro ViT-VQGAN checkpoint (16 px images, 4x4 tokens) in `folder`."""
    from vimtool.checkpoint import save_model
    from vimtool.models.vitvqgan import ViTVQGAN, size_config

    torch.manual_seed(0)
    save_model(ViTVQGAN(size_config("micro")), folder)
    return folder
