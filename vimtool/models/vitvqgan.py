"""ViT-VQGAN: a Vision-Transformer image tokenizer (Yu et al. 2021, arXiv 2110.04627, section 3; docs/PAPERS.md section 1).

    image (B, 3, H, W) --patchify (p x p)--> (B, h*w, p*p*3) --linear + 2D sin-cos positions--> ViT encoder
      --> 2-layer feed-forward head with tanh in the middle --> quantizer (factorized, l2-normalized, 8192 codes)
      --> token ids (B, h*w)
    ids --codebook + up-projection--> + positions --> ViT decoder --> tanh feed-forward head --> p x p patches

Section 3.1: 256x256 images in 8x8 patches give 32x32 = 1024 tokens; the decoder mirrors the encoder.
Decoder output (section 3.3): with ``logit_laplace`` on, each pixel channel gets a location mu (in logit space;
sigmoid(mu), unmapped from DALL-E's (eps, 1 - eps) range, is the mean image) and a log-scale ln b for the
logit-Laplace loss (vimtool/models/losses.py); ``decode`` returns that mean in [-1, 1]. With it off (as Parti
later did) the decoder predicts the [-1, 1] pixels directly, with no sigmoid.

Public API used by the other stages: ``encode(images in [-1, 1]) -> LongTensor (B, h*w)``,
``decode(ids) -> images in [-1, 1]``, ``reconstruct(images)``, ``.grid -> (h, w)``, ``.codebook_size``,
``forward(images) -> (recon in [-1, 1], aux)`` with aux = {"vq_loss", "ids", "z_lookup" (B, T, L) detached
lookup-space vectors, and with logit-Laplace "mu", "log_scale" (B, 3, H, W)}. The model is single-device and knows nothing of training.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vimtool.config import require_positive
from vimtool.errors import VimtoolError
from vimtool.models.hub import HubMixin
from vimtool.models.losses import unmap_pixels
from vimtool.models.quantizer import VectorQuantizer
from vimtool.models.registry import register_model
from vimtool.nn.layers import ChannelsLastConv2d, sincos_2d
from vimtool.nn.noble import NobleConfig, init_linear
from vimtool.nn.transformer import Encoder


@dataclass
class ViTVQGANConfig:
    """Every hyperparameter of a tokenizer; saved as JSON beside the weights (stage 2 reads it from there)."""

    image_size: int = 256
    patch_size: int = 8
    channels: int = 3
    enc_dim: int = 512
    enc_depth: int = 8
    enc_heads: int = 8
    enc_mlp_dim: int = 2048
    dec_dim: int = 512
    dec_depth: int = 8
    dec_heads: int = 8
    dec_mlp_dim: int = 2048
    codebook_size: int = 8192
    lookup_dim: int = 32  # factorized lookup width (Table 4: 32 is the sweet spot; 4-256 ablated)
    quantizer: Literal["factorized", "plain"] = "factorized"  # plain = Table 4's collapse ablation
    commitment: float = 0.25  # beta of the VQ loss
    logit_laplace: bool = True  # decoder predicts (mu, ln b) per pixel channel; off = direct pixels
    dropout: float = 0.0
    # not in the paper: channels of a residual 3x3 conv pair over the decoded pixels (0 = off, the paper's
    # decoder). Each patch's pixels come from its own token alone, so edges that cross a patch border are
    # drawn twice, independently; the convs see both sides (docs/RESULTS.md section 3: small shapes' corners)
    out_conv: int = 0
    norm: str = "layernorm"
    mlp_act: str = "gelu_tanh"
    noble: NobleConfig = field(default_factory=NobleConfig)  # rank 0 = off

    def __post_init__(self) -> None:
        self.noble = NobleConfig.coerce(self.noble)  # config.json and recipes give a dict
        require_positive("tokenizer config", image_size=self.image_size, patch_size=self.patch_size,
                         channels=self.channels, enc_dim=self.enc_dim, enc_depth=self.enc_depth,
                         enc_heads=self.enc_heads, enc_mlp_dim=self.enc_mlp_dim, dec_dim=self.dec_dim,
                         dec_depth=self.dec_depth, dec_heads=self.dec_heads, dec_mlp_dim=self.dec_mlp_dim,
                         lookup_dim=self.lookup_dim)  # fmt: skip
        if self.out_conv < 0:
            raise VimtoolError(
                f"out_conv must be >= 0 (0 = no pixel refiner, the paper's decoder), got {self.out_conv}"
            )
        if self.image_size % self.patch_size:
            raise VimtoolError(
                f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}; "
                f"pick an image size that is a multiple of the patch size (e.g. {self.patch_size * max(1, self.image_size // self.patch_size)})"
            )
        if not 2 <= self.codebook_size <= 65536:
            raise VimtoolError(
                f"codebook_size must be in [2, 65536] (token shards store uint16), got {self.codebook_size}"
            )
        if self.quantizer not in ("factorized", "plain"):
            raise VimtoolError(f"quantizer {self.quantizer!r} is unknown; use factorized or plain")

    @property
    def grid(self) -> tuple[int, int]:
        n = self.image_size // self.patch_size
        return (n, n)


def _vit(dim: int, depth: int, heads: int, mlp: int) -> dict[str, int]:
    return {"dim": dim, "depth": depth, "heads": heads, "mlp_dim": mlp}


# Paper Table 1 (blocks / heads / width / MLP): Small 8/8/512/2048, Base 12/12/768/3072, Large 32/16/1280/5120.
_VIT = {
    "S": _vit(512, 8, 8, 2048),
    "B": _vit(768, 12, 12, 3072),
    "L": _vit(1280, 32, 16, 5120),
}


def _pair(enc: dict[str, int], dec: dict[str, int], **kw) -> ViTVQGANConfig:
    return ViTVQGANConfig(
        enc_dim=enc["dim"], enc_depth=enc["depth"], enc_heads=enc["heads"], enc_mlp_dim=enc["mlp_dim"],
        dec_dim=dec["dim"], dec_depth=dec["depth"], dec_heads=dec["heads"], dec_mlp_dim=dec["mlp_dim"], **kw,
    )  # fmt: skip


# Named sizes: the paper's encoder+decoder pairs, plus tiny CPU sizes (32x32 in 4x4 patches -> 8x8 = 64 tokens).
SIZES: dict[str, ViTVQGANConfig] = {
    "SS": _pair(_VIT["S"], _VIT["S"]),
    "BB": _pair(_VIT["B"], _VIT["B"]),
    "SL": _pair(_VIT["S"], _VIT["L"]),
    "LL": _pair(_VIT["L"], _VIT["L"]),
    # tiny: a CPU tokenizer for 32x32 data (mnist5k, shapes) that trains in ~10 minutes on 2 shared cores
    # (0.3M parameters); 512 codes, so "usage per 256 images" (256 x 64 = 16k tokens) can reach the paper's regime.
    "tiny": _pair(_vit(64, 2, 4, 256), _vit(64, 2, 4, 256), image_size=32, patch_size=4, codebook_size=512),
    # micro: for unit tests only.
    "micro": _pair(_vit(32, 1, 2, 64), _vit(32, 1, 2, 64), image_size=16, patch_size=4, codebook_size=64, lookup_dim=8),
}
SIZES["small"], SIZES["base"], SIZES["large"] = SIZES["SS"], SIZES["BB"], SIZES["LL"]


def size_config(name: str, **overrides) -> ViTVQGANConfig:
    """A named size with fields replaced, e.g. ``size_config("tiny", image_size=64, patch_size=8)``."""
    if name not in SIZES:
        raise VimtoolError(f"unknown tokenizer size {name!r}; use one of {', '.join(SIZES)}")
    return replace(SIZES[name], **overrides)


class FeedForwardHead(nn.Module):
    """The 2-layer feed-forward head with tanh in the middle that ends the encoder and the decoder (sec. 3.1)."""

    def __init__(self, d_in: int, hidden: int, d_out: int) -> None:
        super().__init__()
        self.fc1 = init_linear(nn.Linear(d_in, hidden))
        self.fc2 = init_linear(nn.Linear(hidden, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


class PixelRefiner(nn.Module):
    """x + conv3x3(gelu(conv3x3(x))) over the decoded pixels; starts as the identity (last conv zero). The convs run
    channels-last (`ChannelsLastConv2d`: 3-channel NCHW convolutions are slow on CPU); the output is NCHW again."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = ChannelsLastConv2d(channels, hidden, 3, padding=1)
        self.conv2 = ChannelsLastConv2d(hidden, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.conv2(F.gelu(self.conv1(x)))).contiguous()


@register_model
class ViTVQGAN(HubMixin, nn.Module):  # HubMixin: save_pretrained / from_pretrained / push_to_hub
    model_type = "vitvqgan"

    def __init__(self, config: ViTVQGANConfig) -> None:
        super().__init__()
        self.config = c = config
        p, ch = c.patch_size, c.channels
        h, w = c.grid
        self.out_channels = 2 * ch if c.logit_laplace else ch
        # Encoder: patch embedding (a linear on flattened patches = a stride-p conv) + fixed 2D positions.
        self.patch_embed = nn.Linear(p * p * ch, c.enc_dim)
        # Xavier (as MAE's patch embedding): with N(0, 0.02) the fixed sin-cos positions (std ~0.7) drown the
        # image content at init, every patch at a position maps to the same code and the codebook never recovers.
        nn.init.xavier_uniform_(self.patch_embed.weight)
        nn.init.zeros_(self.patch_embed.bias)
        self.register_buffer("enc_pos", sincos_2d(h, w, c.enc_dim), persistent=False)  # (h*w, De)
        self.encoder = Encoder(
            c.enc_dim,
            c.enc_depth,
            c.enc_heads,
            c.enc_mlp_dim,
            dropout=c.dropout,
            noble=c.noble,
            norm=c.norm,
            mlp_act=c.mlp_act,
        )
        self.enc_head = FeedForwardHead(c.enc_dim, c.enc_mlp_dim, c.enc_dim)
        self.quantizer = VectorQuantizer(c.enc_dim, c.dec_dim, c.codebook_size, c.lookup_dim, c.quantizer, c.commitment)
        # Decoder mirrors the encoder: positions -> ViT -> tanh head -> pixels of each patch.
        self.register_buffer("dec_pos", sincos_2d(h, w, c.dec_dim), persistent=False)  # (h*w, Dd)
        self.decoder = Encoder(
            c.dec_dim,
            c.dec_depth,
            c.dec_heads,
            c.dec_mlp_dim,
            dropout=c.dropout,
            noble=c.noble,
            norm=c.norm,
            mlp_act=c.mlp_act,
        )
        self.dec_head = FeedForwardHead(c.dec_dim, c.dec_mlp_dim, p * p * self.out_channels)
        self.out_conv = PixelRefiner(self.out_channels, c.out_conv) if c.out_conv > 0 else None

    # --- public facts ---------------------------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        return self.config.grid

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def num_tokens(self) -> int:
        h, w = self.grid
        return h * w

    # --- pieces ---------------------------------------------------------------------------------------------
    def _patchify(self, images: torch.Tensor) -> torch.Tensor:
        c = self.config
        b, ch, hh, ww = images.shape
        if (hh, ww) != (c.image_size, c.image_size) or ch != c.channels:
            raise VimtoolError(
                f"tokenizer expects {c.channels}x{c.image_size}x{c.image_size} images, got {ch}x{hh}x{ww}; "
                f"resize the data to --image-size {c.image_size}"
            )
        p = c.patch_size
        h, w = hh // p, ww // p
        x = images.reshape(b, ch, h, p, w, p)  # (B, C, h, p, w, p)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(b, h * w, p * p * ch)  # (B, h*w, p*p*C)

    def _unpatchify(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        p = self.config.patch_size
        h, w = self.grid
        b = x.shape[0]
        x = x.reshape(b, h, w, p, p, channels)  # (B, h, w, p, p, C)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, h * p, w * p)  # (B, C, H, W)

    def encode_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, h*w, enc_dim) pre-quantization features."""
        x = self.patch_embed(self._patchify(images)) + self.enc_pos.to(images.dtype)  # (B, T, De)
        return self.enc_head(self.encoder(x))

    def decode_latents(self, z_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(B, T, dec_dim) quantized latents -> (recon in [-1, 1], mu, log_scale) (the last two None without LL)."""
        x = self.decoder(z_q + self.dec_pos.to(z_q.dtype))  # (B, T, Dd)
        out = self._unpatchify(self.dec_head(x), self.out_channels)  # (B, C_out, H, W)
        if self.out_conv is not None:
            out = self.out_conv(out)
        if not self.config.logit_laplace:
            return out, None, None
        ch = self.config.channels
        mu, log_scale = out[:, :ch], out[:, ch:]
        mean01 = unmap_pixels(torch.sigmoid(mu.float())).to(out.dtype)  # DALL-E: mean pixel = unmap(sigmoid(mu))
        return mean01 * 2 - 1, mu, log_scale

    # --- public API -----------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z_q, vq_loss, ids, z_lookup = self.quantizer(self.encode_features(images))
        recon, mu, log_scale = self.decode_latents(z_q)
        aux = {"vq_loss": vq_loss, "ids": ids, "z_lookup": z_lookup}
        if mu is not None:
            aux["mu"], aux["log_scale"] = mu, log_scale
        return recon, aux

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [-1, 1] -> (B, h*w) LongTensor token ids in raster order."""
        return self.quantizer.nearest(self.quantizer.project(self.encode_features(images)))

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, h*w) token ids (raster order) -> (B, 3, H, W) images in [-1, 1]."""
        if ids.ndim != 2 or ids.shape[1] != self.num_tokens:
            raise VimtoolError(
                f"decode expects (B, {self.num_tokens}) token ids for grid {self.grid}, got shape {tuple(ids.shape)}"
            )
        return self.decode_latents(self.quantizer.embed(ids.long()))[0]

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> tokens -> images, all in [-1, 1]."""
        return self.decode(self.encode(images))
