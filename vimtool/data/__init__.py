"""Image data for vimtool: sources behind `--data` specs, the built-in `shapes` set and its checker,
transforms (no torchvision), a torch Dataset, and token shards.

- `open_source(spec, split, ...)` (sources.py) -> an `ImageSource` of `Example`s (examples.py)
- `ImageDataset(source, image_size, train, seed, flip, crop, resize, draft)` (image_dataset.py)
- `vimtool.data.loading`: DataLoading (workers, prefetch, resize, crop, draft), loader_kwargs, decode_ahead
- `vimtool.data.transforms`: to_rgb, resize_center_crop, random_crop_flip, to_tensor, to_pil, make_grid
- `vimtool.data.shapes`: scenes, render, parse_caption, check, score
- `vimtool.data.shards`: TokenizerIdentity, ShardWriter, read_shard_metadata, load_token_table, TokenShardReader
"""

from vimtool.data.examples import Example, ImageSource
from vimtool.data.image_dataset import ImageDataset
from vimtool.data.shards import ShardWriter, TokenizerIdentity, TokenShardReader, load_token_table, read_shard_metadata
from vimtool.data.sources import open_source
from vimtool.data.transforms import make_grid, to_pil, to_tensor

__all__ = [
    "Example",
    "ImageSource",
    "ImageDataset",
    "open_source",
    "ShardWriter",
    "TokenizerIdentity",
    "TokenShardReader",
    "load_token_table",
    "read_shard_metadata",
    "make_grid",
    "to_pil",
    "to_tensor",
]
