"""Transformer building blocks shared by every model: NOBLE linears, attention/MLP/norms/positions, stacks.

See noble.py (NOBLE, its one option check, optimizer hints on the parameters), noble_fused.py (its CosNet kernels),
layers.py (attention, MLP, norms, position embeddings) and transformer.py (Encoder, CausalDecoder, CrossDecoder,
KV cache); docs/ARCHITECTURE.md fixes the interface. Optimizer groups from the hints: vimtool/train/optim.py.
"""

from vimtool.nn.layers import MLP, Attention, LearnedPos1D, LearnedPos2D, make_norm, sincos_2d
from vimtool.nn.noble import (
    ACTIVATIONS,
    NOBLE_CLI_HELP,
    SITES,
    CosNet,
    NobleConfig,
    NobleLinear,
    check_noble_options,
    make_linear,
    noble_from_cli,
    noble_param_count,
    set_optim_hints,
)
from vimtool.nn.transformer import Block, CausalDecoder, CrossDecoder, Encoder, KVCache

__all__ = [
    "ACTIVATIONS",
    "Attention",
    "Block",
    "CausalDecoder",
    "CosNet",
    "CrossDecoder",
    "Encoder",
    "KVCache",
    "LearnedPos1D",
    "LearnedPos2D",
    "MLP",
    "NOBLE_CLI_HELP",
    "NobleConfig",
    "NobleLinear",
    "SITES",
    "check_noble_options",
    "make_linear",
    "make_norm",
    "noble_from_cli",
    "noble_param_count",
    "set_optim_hints",
    "sincos_2d",
]
