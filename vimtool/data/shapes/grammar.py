"""Reading a `shapes` caption back into a scene: the caption grammar.

`parse_caption(text) -> Scene` reads every template of scene.py (and close variants: "big", "centre",
"to the left of", "top") into a scene whose unspecified attributes are None.
"""

from __future__ import annotations

import re

from vimtool.data.shapes.scene import COLOURS, POSITIONS, Scene, ShapeObject
from vimtool.errors import VimtoolError

_COLOUR_RE = "|".join(COLOURS)
_OBJECT_RE = re.compile(rf"\b(?:(small|large|big|little|tiny)\s+)?({_COLOUR_RE})\s+(circle|square|triangle)s?\b")
_RELATION_RE = re.compile(r"\b(?:(?:to|on) the\s+)?(left|right) of\b|\b(above|over|below|under|beneath)\b")
_ROW = {"top": 0, "upper": 0, "middle": 1, "center": 1, "bottom": 2, "lower": 2}
_COL = {"left": 0, "center": 1, "middle": 1, "right": 2}
_POSITION_RE = re.compile(
    r"\b(top|upper|middle|center|bottom|lower)\s+(left|center|middle|right)\b"
    r"|\b(top|bottom|left|right|center|middle|upper|lower)\b"
)


def _position_from(text: str) -> str | None:
    m = _POSITION_RE.search(text)
    if not m:
        return None
    if m.group(1):
        return POSITIONS[_ROW[m.group(1)] * 3 + _COL[m.group(2)]]
    word = m.group(3)
    row, col = _ROW.get(word, 1), _COL.get(word, 1)
    if word in ("left", "right"):
        row = 1
    return POSITIONS[row * 3 + col]


def parse_caption(text: str) -> Scene:
    """Caption -> Scene (attributes the caption leaves out are None). VimtoolError if it names no object."""
    t = " ".join(re.sub(r"[^a-z ]", " ", str(text).lower().replace("centre", "center")).split())
    found = list(_OBJECT_RE.finditer(t))
    if not found:
        raise VimtoolError(
            f"cannot read a shapes scene from {text!r}; expected e.g. 'a small red circle in the "
            "top left' or 'a blue square above a yellow triangle'"
        )
    objs, relation = [], None
    for i, m in enumerate(found):
        tail = t[m.end() : found[i + 1].start() if i + 1 < len(found) else len(t)]
        r = _RELATION_RE.search(tail)
        if r:
            if i == 0 and len(found) > 1:
                word = r.group(1) or r.group(2)
                relation = {
                    "left": "left of",
                    "right": "right of",
                    "above": "above",
                    "over": "above",
                    "below": "below",
                    "under": "below",
                    "beneath": "below",
                }[word]
            tail = tail[: r.start()] + " " + tail[r.end() :]
        size = {"big": "large", "little": "small", "tiny": "small"}.get(m.group(1), m.group(1))
        objs.append(ShapeObject(m.group(3), m.group(2), size, _position_from(tail)))
    return Scene(tuple(objs), relation)
