"""Transformer building blocks shared by every model: NOBLE linears, attention/MLP/norms/positions, stacks.

See noble.py (NOBLE, optimizer hints, param groups), layers.py (attention, MLP, norms, position embeddings)
and transformer.py (Encoder, CausalDecoder, CrossDecoder, KV cache); docs/ARCHITECTURE.md fixes the interface.
"""

from vimtool.nn.layers import MLP, Attention, LearnedPos1D, LearnedPos2D, make_norm, sincos_2d
from vimtool.nn.noble import (
    ACTIVATIONS,
    NOBLE_CLI_HELP,
    SITES,
    CosNet,
    NobleConfig,
    NobleLinear,
    make_linear,
    noble_from_cli,
    noble_param_count,
    param_groups,
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
    "make_linear",
    "make_norm",
    "noble_from_cli",
    "noble_param_count",
    "param_groups",
    "set_optim_hints",
    "sincos_2d",
]
