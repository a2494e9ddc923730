"""`ImageDataset`: a torch map-style Dataset over a map-style image source, ready for a training loop.

    ImageDataset(source, image_size, train: bool, seed=0, flip=False)
    ds[i] -> {"image": FloatTensor (3, S, S) in [-1, 1], "label": int (-1 if none),
              "caption": str ("" if none), "index": int}
    ds.set_epoch(e)

Train: `random_crop_flip` with an rng seeded from (seed, epoch, index), so the pixels of example i in epoch e
are the same in every run and after a resume, whatever the worker count or order. Eval: `resize_center_crop`.
Small images are *resized* to `image_size` (MNIST 28 -> 32 bicubic), not padded: one path for every source.
`flip` defaults to False because captions that say left/right (the `shapes` set) would become wrong.
"""

from __future__ import annotations

import random

import torch

from vimtool.data.examples import ImageSource
from vimtool.data.transforms import random_crop_flip, resize_center_crop, to_tensor
from vimtool.errors import VimtoolError


class ImageDataset(torch.utils.data.Dataset):
    def __init__(self, source: ImageSource, image_size: int, train: bool, seed: int = 0, flip: bool = False):
        if getattr(source, "streaming", False) or not hasattr(source, "__getitem__"):
            raise VimtoolError(
                f"data {source.spec!r} is streaming; training needs a map-style source: "
                "open it with streaming=False (or use a local copy / smaller set)"
            )
        if image_size < 1:
            raise VimtoolError(f"image size must be positive, got {image_size}")
        self.source = source
        self.image_size = int(image_size)
        self.train = bool(train)
        self.seed = int(seed)
        self.flip = bool(flip)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    @property
    def num_classes(self) -> int | None:
        return self.source.num_classes

    def __getitem__(self, index: int) -> dict:
        ex = self.source[index]
        if self.train:
            rng = random.Random(f"{self.seed}|{self.epoch}|{index}")
            img = random_crop_flip(ex.image, self.image_size, rng, flip=self.flip)
        else:
            img = resize_center_crop(ex.image, self.image_size)
        return {
            "image": to_tensor(img),
            "label": -1 if ex.label is None else int(ex.label),
            "caption": ex.caption or "",
            "index": int(index),
        }
