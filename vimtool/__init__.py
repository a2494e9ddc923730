"""vimtool: autoregressive image generation with discrete tokens (ViT-VQGAN, VIM, Parti, NOBLE).

    import vimtool
    pipe = vimtool.load("runs/parti/final")                  # or a Hub repo id
    images = pipe.generate("a red circle top left", n=4, guidance=3.0, rerank=16, seed=0)

`load` and `load_tokenizer` (vimtool/api.py) are imported on first use, so `import vimtool` (and every `vimtool`
command's start) stays free of torch and the models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {"load": "vimtool.api", "load_tokenizer": "vimtool.api", "Pipeline": "vimtool.api"}

if TYPE_CHECKING:
    from vimtool.api import Pipeline, load, load_tokenizer


def __getattr__(name: str) -> Any:
    # deferred on purpose: vimtool.api imports torch and the models (seconds), which `import vimtool` must not
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vimtool' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["Pipeline", "__version__", "load", "load_tokenizer"]
