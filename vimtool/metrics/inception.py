"""The FID Inception v3: the TF-ported network of pytorch-fid, built here without torchvision.

FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule ...") and Inception Score (Salimans et
al. 2016) are only comparable across papers when computed with the same network: the TensorFlow graph
`inception-2015-12-05` ported to PyTorch by pytorch-fid as `pt_inception-2015-12-05-6726825d.pth`. That port is
*not* torchvision's Inception v3: the pools of the A/C/E_1 blocks ignore padding (TF's average pool), the last
E block max-pools, BatchNorm eps is 1e-3, and the classifier has 1008 classes. Module names below are chosen
so that `state_dict()` keys and shapes are exactly those of that file (plus BatchNorm's `num_batches_tracked`,
which the loader accepts present or absent).

Preprocessing is pytorch-fid's: RGB in [0, 1] -> bilinear resize to 299x299 (align_corners=False, no
antialias) -> 2x - 1. Outputs: the 2048-d pool3 features used by FID, and the 1008-way logits used by IS
(without the fc bias, as the original IS code and torch-fidelity take them: `pool3 @ W`).

Speed (see bench/bench_fid.py): for inference `fuse_for_inference()` folds every BatchNorm into its conv
(w' = w * g / sqrt(v + eps), b' = beta - m * g / sqrt(v + eps)), runs channels-last and, on CPU, uses oneDNN's
fused conv+ReLU. These change float32 rounding only (~1e-6 relative on the features); tests/test_fid_parity.py
checks features and FID against pytorch-fid itself. bf16 is not offered: it would not keep 1e-4 FID parity.

Weights resolve in the one order for weights that cannot ship: explicit path -> local cache
($VIMTOOL_CACHE, ~/.cache/vimtool, torch hub's checkpoints folder where pytorch-fid leaves the file) ->
download from pytorch-fid's release URL -> a one-line `VimtoolError` naming the file and `--inception-weights`.
Never random weights.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vimtool.atomic import atomic_path
from vimtool.errors import VimtoolError

log = logging.getLogger(__name__)

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
INPUT_SIZE = 299  # the TF graph's input resolution
FEATURE_DIM = 2048  # pool3
NUM_CLASSES = 1008  # the TF graph's softmax (1000 ImageNet classes + 8 unused)
BN_EPS = 1e-3  # TF's BatchNorm epsilon, kept by the port
# sFID (Nash et al. 2021; ADM's evaluator, Dhariwal & Nichol 2021) takes TF's `mixed_6/conv:0`, channels [:7].
# TF's blocks are mixed, mixed_1..mixed_10 = Mixed_5b..5d, 6a, 6b..6e, 7a..7c, so `mixed_6` is Mixed_6d (not 6e;
# torch-fidelity's graph-def map has mixed_6/conv -> Mixed_6d.branch1x1), and `mixed_6/conv` is that block's
# 1x1 branch after its ReLU. The block concatenates that branch first, so its channels [:7] are the block's.
SPATIAL_CHANNELS = 7
SPATIAL_DIM = SPATIAL_CHANNELS * 17 * 17  # 2023


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm(eps=1e-3) -> ReLU; after `fuse()` the conv carries the BN as its bias."""

    def __init__(self, c_in: int, c_out: int, **conv_kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, bias=False, **conv_kwargs)
        self.bn: nn.Module = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.cpu_conv_relu = False  # set by FIDInceptionV3.fuse_for_inference where oneDNN offers conv+ReLU

    def forward(self, x: Tensor) -> Tensor:
        if self.cpu_conv_relu and x.device.type == "cpu" and not torch.is_grad_enabled():
            # oneDNN's fused conv+ReLU (what torch.compile emits on CPU): the ReLU pass over memory was ~15%
            # of the CPU time. Same arithmetic; only used after the BN fold (the conv then has the bias).
            c = self.conv
            return torch.ops.mkldnn._convolution_pointwise(
                x, c.weight, c.bias, c.padding, c.stride, c.dilation, c.groups, "relu", [], ""
            )
        return F.relu(self.bn(self.conv(x)), inplace=True)

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the (eval-mode) BatchNorm into the conv: one op instead of two, same function."""
        bn = self.bn
        if not isinstance(bn, nn.BatchNorm2d):
            return
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
        conv = self.conv
        fused = nn.Conv2d(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True
        ).to(conv.weight.device, conv.weight.dtype)
        fused.weight.copy_(conv.weight * scale[:, None, None, None])  # (C_out, C_in, kh, kw)
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        self.conv = fused
        self.bn = nn.Identity()


def _tf_avg_pool(x: Tensor) -> Tensor:
    # TF's average pool does not count the zero padding (count_include_pad=False), unlike torchvision's blocks.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """Mixed_5b/5c/5d (pytorch-fid's FIDInceptionA)."""

    def __init__(self, c_in: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Mixed_6a: grid reduction 35 -> 17."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class InceptionC(nn.Module):
    """Mixed_6b..6e (pytorch-fid's FIDInceptionC): factorized 7x7 convolutions."""

    def __init__(self, c_in: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = conv(bd)
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Mixed_7a: grid reduction 17 -> 8."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class InceptionE(nn.Module):
    """Mixed_7b (average pool without padding, FIDInceptionE_1) and Mixed_7c (max pool, FIDInceptionE_2).

    The max pool in the last block is a quirk of the TF graph that pytorch-fid keeps; FID depends on it.
    """

    def __init__(self, c_in: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(c_in, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "avg":
            bp = _tf_avg_pool(x)
        else:
            bp = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([b1, b3, bd, self.branch_pool(bp)], 1)


class InceptionOutputs(NamedTuple):
    pool: Tensor  # (B, 2048) pool3 features (FID)
    logits: Tensor  # (B, 1008) pool3 @ fc.weight.T, no bias (IS)
    spatial: Tensor  # (B, 7, 17, 17) TF `mixed_6/conv`, first 7 channels (sFID; see SPATIAL_CHANNELS)


class FIDInceptionV3(nn.Module):
    """Inception v3 as in `pt_inception-2015-12-05-6726825d.pth`; input RGB in [0, 1], any size."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)
        self.channels_last = False
        self.eval()
        self.requires_grad_(False)

    @staticmethod
    def preprocess(images: Tensor) -> Tensor:
        """pytorch-fid's input path: RGB (B, 3, H, W) in [0, 1] -> bilinear 299x299, no antialias -> [-1, 1]."""
        x = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return 2 * x - 1

    def forward(self, images: Tensor) -> InceptionOutputs:
        x = self.preprocess(images.to(self.fc.weight.dtype))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (B, 288, 35, 35)
        x = self.Mixed_6a(x)  # (B, 768, 17, 17)
        x = self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x)))  # (B, 768, 17, 17)
        spatial = x[:, :SPATIAL_CHANNELS]  # (B, 7, 17, 17): = Mixed_6d.branch1x1's ReLU output, first channels
        x = self.Mixed_6e(x)
        x = self.Mixed_7a(x)  # (B, 1280, 8, 8)
        x = self.Mixed_7c(self.Mixed_7b(x))  # (B, 2048, 8, 8)
        pool = x.mean(dim=(2, 3))  # (B, 2048): adaptive average pool to 1x1
        return InceptionOutputs(pool=pool, logits=pool @ self.fc.weight.T, spatial=spatial)

    def fuse_for_inference(self, channels_last: bool = True) -> FIDInceptionV3:
        """Fold BatchNorms into convs and (optionally) run channels-last; returns self. Inference only."""
        convs = [m for m in self.modules() if isinstance(m, BasicConv2d)]
        for m in convs:
            m.fuse()
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)
        fused_relu = _cpu_conv_relu_available()
        for m in convs:
            m.cpu_conv_relu = fused_relu
        return self

    def load_weights(
        self, state_dict: dict[str, Tensor], source: str = "state dict", assign: bool = False
    ) -> FIDInceptionV3:
        """Load the FID weights strictly (BatchNorm's `num_batches_tracked` may be present or absent).

        `assign=True` adopts the given tensors (for a model built on the meta device: no wasted random init).
        """
        own = self.state_dict()
        expected = {k for k in own if not k.endswith("num_batches_tracked")}
        given = {k for k in state_dict if not k.endswith("num_batches_tracked")}
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        bad_shape = [k for k in expected & given if tuple(state_dict[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or bad_shape:
            detail = (
                (missing and f"missing {missing[:3]}")
                or (unexpected and f"unexpected {unexpected[:3]}")
                or (f"shape of {bad_shape[:3]}")
            )
            raise VimtoolError(
                f"{source} is not the FID Inception v3 ({WEIGHTS_FILE}): {detail}; "
                "give that file with --inception-weights"
            )
        full = {k: state_dict.get(k, torch.zeros((), dtype=torch.long)) for k in own}  # (num_batches_tracked)
        self.load_state_dict(full, strict=True, assign=assign)
        self.requires_grad_(False)
        return self


def _cpu_conv_relu_available() -> bool:
    """Whether this torch build has oneDNN's fused conv+ReLU and it computes conv then ReLU."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        g = torch.Generator().manual_seed(0)
        x, w, b = (
            torch.randn(1, 2, 5, 5, generator=g),
            torch.randn(3, 2, 3, 3, generator=g),
            torch.randn(3, generator=g),
        )
        with torch.no_grad():
            got = torch.ops.mkldnn._convolution_pointwise(x, w, b, [1, 1], [1, 1], [1, 1], 1, "relu", [], "")
        return bool(torch.allclose(got, F.relu(F.conv2d(x, w, b, padding=1)), atol=1e-5))
    except Exception:  # older/newer torch without this private op: the plain path is used
        return False


# --- weights resolution: path option -> local cache -> download -> clear error -------------------------------


def cache_dirs() -> list[Path]:
    """Folders searched for the weights file, in order (first is where a download goes)."""
    dirs = []
    if os.environ.get("VIMTOOL_CACHE"):
        dirs.append(Path(os.environ["VIMTOOL_CACHE"]).expanduser())
    dirs.append(Path.home() / ".cache" / "vimtool")
    # pytorch-fid downloads through torch.hub, which keeps files in <hub dir>/checkpoints ($TORCH_HOME aware).
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def resolve_inception_weights(path: str | Path | None = None, download: bool = True) -> Path:
    """Find `pt_inception-2015-12-05-6726825d.pth`: `path` -> caches -> download; else a one-line VimtoolError."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise VimtoolError(f"--inception-weights {p} does not exist; give the path of {WEIGHTS_FILE}")
        return p
    for d in cache_dirs():
        if (d / WEIGHTS_FILE).is_file():
            return d / WEIGHTS_FILE
    target = cache_dirs()[0] / WEIGHTS_FILE
    if download and not _offline():
        try:
            return _download(WEIGHTS_URL, target)
        except Exception as e:  # no network, proxy, HTTP error: fall through to the one-line error
            log.warning("download of %s failed: %s", WEIGHTS_URL, " ".join(str(e).split())[:200])
    raise VimtoolError(
        f"FID Inception weights {WEIGHTS_FILE} not found (looked in {', '.join(str(d) for d in cache_dirs())}) "
        f"and not downloadable; fetch it from {WEIGHTS_URL} into {cache_dirs()[0]} or pass --inception-weights PATH"
    )


def _offline() -> bool:
    return os.environ.get("VIMTOOL_OFFLINE", "") not in ("", "0") or os.environ.get("HF_HUB_OFFLINE", "") not in (
        "",
        "0",
    )


def _download(url: str, target: Path) -> Path:
    """Download atomically (temp file, then rename). The protocol card records the file's sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s -> %s", url, target)
    with atomic_path(target) as tmp:
        torch.hub.download_url_to_file(url, str(tmp), progress=True)
    return target


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_inception(
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    fuse: bool = True,
    download: bool = True,
) -> tuple[FIDInceptionV3, Path]:
    """The FID Inception with real weights, in eval mode on `device`; returns (model, weights path)."""
    path = resolve_inception_weights(weights, download=download)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise VimtoolError(
            f"cannot read {path} as a PyTorch state dict ({type(e).__name__}); re-download {WEIGHTS_FILE}"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise VimtoolError(f"{path} holds no state dict; give {WEIGHTS_FILE} with --inception-weights")
    with torch.device("meta"):  # skip the random init of 24M parameters: every one is loaded just below
        model = FIDInceptionV3()
    model.load_weights(state, source=str(path), assign=True).to(device)
    if fuse:
        model.fuse_for_inference(channels_last=True)
    return model, path
