"""The built-in `shapes` set: procedural captioned scenes, their renderer, a caption grammar, and a checker.

Two halves, each readable on its own:
- making images: scene.py (vocabulary, `Scene`, captions, hold-out, the generator `scene_at`), render.py
  (`render(scene, size)`), source.py (`ShapesSource`, `endless_shapes`, `captions`: the `--data shapes:...` source);
- reading them: grammar.py (`parse_caption`), checker.py (`check`, `score`, `detect_objects`).
Every name other modules use is re-exported here: `from vimtool.data.shapes import check`.
"""

from vimtool.data.shapes.checker import CheckResult, DetectedObject, check, detect_objects, score
from vimtool.data.shapes.grammar import parse_caption
from vimtool.data.shapes.render import render
from vimtool.data.shapes.scene import (
    BACKGROUND,
    CLASS_NAMES,
    COLOURS,
    NUM_CLASSES,
    ONE_OBJECT_TEMPLATES,
    POSITIONS,
    RELATION_WORDS,
    RELATIONS,
    SHAPES,
    SIZES,
    TWO_OBJECT_TEMPLATES,
    Scene,
    ShapeObject,
    caption_for,
    is_held_out,
    parse_holdout,
    random_scene,
    scene_at,
)
from vimtool.data.shapes.source import DEFAULT_N, ShapesSource, captions, endless_shapes, parse_objects

__all__ = [
    "BACKGROUND",
    "CLASS_NAMES",
    "COLOURS",
    "CheckResult",
    "DEFAULT_N",
    "DetectedObject",
    "NUM_CLASSES",
    "ONE_OBJECT_TEMPLATES",
    "POSITIONS",
    "RELATIONS",
    "RELATION_WORDS",
    "SHAPES",
    "SIZES",
    "Scene",
    "ShapeObject",
    "ShapesSource",
    "TWO_OBJECT_TEMPLATES",
    "caption_for",
    "captions",
    "check",
    "detect_objects",
    "endless_shapes",
    "is_held_out",
    "parse_caption",
    "parse_holdout",
    "parse_objects",
    "random_scene",
    "render",
    "scene_at",
    "score",
]
