"""`ImageDataset`: a torch map-style Dataset over a map-style image source, ready for a training loop.

    ImageDataset(source, image_size, train: bool, seed=0, flip=False, crop=None, resize="shorter-side",
                 draft=True)
    ds[i] -> {"image": FloatTensor (3, S, S) in [-1, 1], "label": int (-1 if none),
              "caption": str ("" if none), "index": int}
    ds.set_epoch(e)

Preprocessing is the papers' (ViT-VQGAN / VIM on ImageNet, docs/PAPERS.md): `resize="shorter-side"` scales the
shorter side to `image_size`, then `crop` takes a square: `"random"` (the train default: a random crop along the
longer side, with an rng seeded from (seed, epoch, index), so the pixels of example i in epoch e are the same in
every run and after a resume, whatever the worker count or order) or `"center"` (the eval default). Small images
are *resized* up (MNIST 28 -> 32 bicubic), not padded: one path for every source. `flip` defaults to False
because captions that say left/right (the `shapes` set) would become wrong. `draft=True` lets JPEGs decode at a
reduced scale that still covers `image_size` (examples.py), which changes pixels only within JPEG noise.

A corrupt image cannot leave a hole in a training batch (the engine's batch sampler fixed the batch's size and
indices), so *here*, and only here, item i then serves the next decodable item; the source counts the skip.
Commands that write one row per image (tokenize-dataset, previews, FID) read the source directly and skip.
"""

from __future__ import annotations

import random

import torch

from vimtool.data.examples import Example, ImageSource
from vimtool.data.transforms import random_crop_flip, resize_center_crop, to_tensor
from vimtool.errors import VimtoolError

RESIZES = ("shorter-side",)
CROPS = ("random", "center")


class ImageDataset(torch.utils.data.Dataset):
    def __init__(
        self,
        source: ImageSource,
        image_size: int,
        train: bool,
        seed: int = 0,
        flip: bool = False,
        crop: str | None = None,
        resize: str = "shorter-side",
        draft: bool = True,
    ):
        if getattr(source, "streaming", False) or not hasattr(source, "__getitem__"):
            raise VimtoolError(
                f"data {source.spec!r} is streaming; training needs a map-style source: "
                "open it with streaming=False (or use a local copy / smaller set)"
            )
        if image_size < 1:
            raise VimtoolError(f"image size must be positive, got {image_size}")
        crop = crop or ("random" if train else "center")
        if crop not in CROPS:
            raise VimtoolError(f"data.crop must be one of {', '.join(CROPS)}, got {crop!r}")
        if resize not in RESIZES:
            raise VimtoolError(f"data.resize must be {' or '.join(RESIZES)}, got {resize!r}")
        self.source = source
        self.image_size = int(image_size)
        self.train = bool(train)
        self.seed = int(seed)
        self.flip = bool(flip)
        self.crop = crop
        self.epoch = 0
        if draft:
            source.draft_size = self.image_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    @property
    def num_classes(self) -> int | None:
        return self.source.num_classes

    def _example(self, index: int) -> Example:
        n = len(self.source)
        for step in range(n):  # a corrupt item serves the next good one (see the module docstring)
            ex = self.source.get((index + step) % n)
            if ex is not None:
                return ex
        raise VimtoolError(f"data {self.source.spec!r}: every image is corrupt or unreadable; check the files")

    def __getitem__(self, index: int) -> dict:
        ex = self._example(index)
        if self.crop == "random" or (self.train and self.flip):
            rng = random.Random(f"{self.seed}|{self.epoch}|{index}")
            if self.crop == "random":
                img = random_crop_flip(ex.image, self.image_size, rng, flip=self.flip and self.train)
            else:
                img = random_crop_flip(resize_center_crop(ex.image, self.image_size), self.image_size, rng, self.flip)
        else:
            img = resize_center_crop(ex.image, self.image_size)
        return {
            "image": to_tensor(img),
            "label": -1 if ex.label is None else int(ex.label),
            "caption": ex.caption or "",
            "index": int(index),
        }
