"""Models: one file per architecture (quantizer, vitvqgan, discriminator, losses, vim, parti,
dual_encoder) and the registry.

Models are single-device and know nothing of training. Each has `.config` (a dataclass) and a class attribute
`model_type`; `vimtool.models.registry` maps `model_type -> (ConfigClass, ModelClass)` so that
`vimtool.checkpoint.load_model` can rebuild any saved model.
"""

from vimtool.models.registry import get_config_class, get_model_class, known_model_types, register_model

__all__ = ["get_config_class", "get_model_class", "known_model_types", "register_model"]
