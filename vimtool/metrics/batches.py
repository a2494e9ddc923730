"""ADM-style `.npz` files, read and written without holding a 50,000-image batch in memory.

ADM (Dhariwal & Nichol 2021) exchanges sample batches as `.npz` with `arr_0`: uint8 (N, H, W, 3) (and
`arr_1` labels), and reference batches that also hold statistics `mu`/`sigma` (pool_3) and `mu_s`/`sigma_s`
(spatial, sFID). `np.load` would read all of `arr_0` at once (9.8 GB for 50,000 images at 256x256), so
`open_npz` reads the `.npy` header only and `NpzBatch.iter_images` streams images from the zip member in
chunks; `write_image_batch` writes `arr_0` the same way. Statistics (a few MB) are read whole.

Also accepted: NCHW uint8 (transposed per chunk), grey (N, H, W) or (N, H, W, 1).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vimtool.atomic import atomic_path
from vimtool.errors import VimtoolError
from vimtool.metrics.fid import FidStats

CHUNK = 64  # images per read from the zip member


@dataclass
class NpzBatch:
    """What an `.npz` holds: statistics (pool_3 and/or spatial) and/or an image batch (header only)."""

    path: Path
    stats: FidStats | None = None  # mu / sigma
    spatial: FidStats | None = None  # mu_s / sigma_s
    image_count: int = 0
    image_shape: tuple[int, ...] | None = None  # shape of arr_0 as stored
    channels_first: bool = False

    @property
    def has_images(self) -> bool:
        return self.image_shape is not None

    @property
    def image_size(self) -> str | None:
        """ "HxW" of the images, or None without images."""
        if self.image_shape is None:
            return None
        h, w = (self.image_shape[2:4] if self.channels_first else self.image_shape[1:3])[:2]
        return f"{h}x{w}"

    def iter_images(self, indices: Iterable[int] | None = None) -> Iterator[np.ndarray]:
        """Yield (H, W, 3) uint8 images in file order (only `indices`, sorted, when given), CHUNK at a time."""
        if self.image_shape is None:
            raise VimtoolError(f"{self.path} holds no arr_0 images")
        wanted = None if indices is None else sorted(set(indices))
        per_image = int(np.prod(self.image_shape[1:]))
        with zipfile.ZipFile(self.path) as zf, zf.open("arr_0.npy") as f:
            _read_npy_header(f, self.path)
            pos, k = 0, 0
            while pos < self.image_count:
                n = min(CHUNK, self.image_count - pos)
                raw = f.read(n * per_image)
                chunk = np.frombuffer(raw, dtype=np.uint8).reshape((n, *self.image_shape[1:]))
                for i in range(n):
                    if wanted is not None:
                        if k >= len(wanted):
                            return
                        if wanted[k] != pos + i:
                            continue
                        k += 1
                    yield _to_hwc3(chunk[i], self.channels_first)
                pos += n


def _to_hwc3(img: np.ndarray, channels_first: bool) -> np.ndarray:
    if channels_first:
        img = img.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def _read_npy_header(f, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
    except Exception as e:
        raise VimtoolError(f"{path}: arr_0 is not a readable .npy array ({type(e).__name__})") from None
    return shape, fortran, dtype


def open_npz(path: str | Path) -> NpzBatch:
    """Read an `.npz`'s statistics and `arr_0` header; a clear error when it holds neither."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise VimtoolError(
            f"cannot read {path} as .npz ({type(e).__name__}); give a .npz with mu/sigma or arr_0"
        ) from None
    with zf:
        names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
        out = NpzBatch(path)
        if "arr_0" in names:
            with zf.open("arr_0.npy") as f:
                shape, fortran, dtype = _read_npy_header(f, path)
            if dtype != np.uint8 or fortran:
                raise VimtoolError(f"{path}: arr_0 must hold C-ordered uint8 images (N, H, W, 3), got {dtype}")
            if len(shape) == 4 and shape[1] in (1, 3) and shape[-1] not in (1, 3):
                out.channels_first = True
            elif not (len(shape) == 3 or (len(shape) == 4 and shape[-1] in (1, 3))):
                raise VimtoolError(f"{path}: arr_0 must be images (N, H, W, 3), got shape {shape}")
            out.image_shape, out.image_count = tuple(shape), int(shape[0])
    with np.load(path, allow_pickle=False) as f:  # statistics only: small arrays, read whole
        count = int(f["count"]) if "count" in names else None
        if {"mu", "sigma"} <= names:
            out.stats = FidStats(f["mu"].astype(np.float64), f["sigma"].astype(np.float64), count)
        if {"mu_s", "sigma_s"} <= names:
            out.spatial = FidStats(f["mu_s"].astype(np.float64), f["sigma_s"].astype(np.float64), count)
    if out.stats is None and out.spatial is None and not out.has_images:
        raise VimtoolError(
            f"{path} holds {sorted(names)}; expected 'mu' and 'sigma' (stats), 'mu_s'/'sigma_s' or 'arr_0' (images)"
        )
    return out


def load_npz(path: str | Path, prefer_images: bool = False) -> FidStats | np.ndarray:
    """A whole `.npz` at once, through `open_npz` (for small files and tests; eval-fid streams instead):
    `FidStats` when it holds `mu`/`sigma` (pytorch-fid's `--save-stats`, ours, ADM reference batches), unless
    `prefer_images` and it has `arr_0`; else its images as one (N, H, W, 3) uint8 array."""
    batch = open_npz(path)
    if batch.stats is not None and not (prefer_images and batch.has_images):
        return batch.stats
    if not batch.has_images:
        raise VimtoolError(f"{path} holds no 'mu'/'sigma' statistics and no 'arr_0' images")
    return np.stack(list(batch.iter_images()))


def write_image_batch(path: str | Path, images: Iterable[np.ndarray], count: int) -> Path:
    """Write `count` (H, W, 3) uint8 images as an ADM sample batch (`arr_0`), streaming, atomically.

    All images must share one size (ADM's format is one array). `np.load(path)["arr_0"]` reads it back.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise VimtoolError(f"--save-batch {path}: the file name must end in .npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    written, shape = 0, None
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("arr_0.npy", "w", force_zip64=True) as f:
                for img in images:
                    img = np.ascontiguousarray(img, dtype=np.uint8)
                    if shape is None:
                        shape = img.shape
                        header = {"descr": "|u1", "fortran_order": False, "shape": (count, *shape)}
                        np.lib.format.write_array_header_2_0(f, header)
                    elif img.shape != shape:
                        raise VimtoolError(
                            f"--save-batch: images differ in size ({shape} then {img.shape}); an ADM batch holds one "
                            "size, resize them first"
                        )
                    if written == count:
                        raise VimtoolError(f"--save-batch: more than the {count} images announced")
                    f.write(img.tobytes())
                    written += 1
        if written != count:
            raise VimtoolError(f"--save-batch: wrote {written} images, expected {count}")
    return path
