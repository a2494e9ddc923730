"""vimtool: autoregressive image generation with discrete tokens (ViT-VQGAN, VIM, Parti, NOBLE)."""

__version__ = "0.1.0"
