"""Drawing a `shapes` scene at any resolution.

Shapes are drawn at 4x (2x above 128 px) and box-filtered down, so edges are anti-aliased and the covered area
is exact to 1/16 pixel. Objects fill most of their cell (a cell is 10.7 px at 32x32, so a small object is
~6.4 px and a large one ~9.6 px).
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from vimtool.data.shapes.scene import BACKGROUND, COLOURS, SIZES, Scene
from vimtool.errors import VimtoolError


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Draw `scene` as an RGB image of `size x size` (anti-aliased by supersampling)."""
    if size < 12:
        raise VimtoolError(f"shapes size {size} is too small to draw 3x3 positions; use 16 or more (32, 64)")
    ss = 4 if size <= 128 else 2
    big = size * ss
    img = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(img)
    cell = big / 3
    for o in scene.objects:
        row, col = o.cell
        cx, cy = (col + 0.5 + o.dx) * cell, (row + 0.5 + o.dy) * cell
        h = SIZES[o.size or "large"] * cell / 2
        x0, y0, x1, y1 = cx - h, cy - h, cx + h, cy + h
        fill = COLOURS[o.colour]
        if o.shape == "circle":
            draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
        elif o.shape == "square":
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
        else:  # upright isosceles triangle: base = height = extent, so it fills half its box
            draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    return img.reduce(ss)  # box filter: each pixel's colour mixes in proportion to the area covered
