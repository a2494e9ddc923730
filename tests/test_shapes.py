"""The built-in `shapes` set: determinism, captions <-> scenes, hold-out, and the checker's two scores."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from vimtool.data.shapes import (
    CLASS_NAMES,
    COLOURS,
    NUM_CLASSES,
    ONE_OBJECT_TEMPLATES,
    POSITIONS,
    TWO_OBJECT_TEMPLATES,
    Scene,
    ShapeObject,
    caption_for,
    check,
    detect_objects,
    is_held_out,
    parse_caption,
    parse_holdout,
    render,
    scene_at,
    score,
)
from vimtool.data.sources import open_source
from vimtool.errors import VimtoolError


def test_scenes_are_a_pure_function_of_seed_split_and_index():
    a = open_source("shapes:size=32")
    b = open_source("shapes:size=32")
    for i in (0, 5, 123):
        assert a[i].caption == b[i].caption
        assert np.array_equal(np.asarray(a[i].image), np.asarray(b[i].image))
    other = open_source("shapes:size=32", seed=1)
    assert [other[i].caption for i in range(10)] != [a[i].caption for i in range(10)]
    val = open_source("shapes:size=32", "val")
    assert [val[i].caption for i in range(10)] != [a[i].caption for i in range(10)]


def test_scene_vocabulary_covers_the_spec():
    scenes = [scene_at(0, "train", i) for i in range(600)]
    objs = [o for s in scenes for o in s.objects]
    assert {o.shape for o in objs} == {"circle", "square", "triangle"}
    assert len({o.colour for o in objs}) >= 6 and {o.size for o in objs} == {"small", "large"}
    assert {o.position for o in objs} == set(POSITIONS)
    assert {len(s.objects) for s in scenes} == {1, 2}
    assert {s.relation for s in scenes if len(s.objects) == 2} == {"left of", "right of", "above", "below"}
    assert len({s.template for s in scenes}) >= 3
    for s in scenes:
        assert 0 <= s.label < NUM_CLASSES and CLASS_NAMES[s.label] == f"{s.objects[0].colour} {s.objects[0].shape}"
        if len(s.objects) == 2:
            assert s.objects[0].colour != s.objects[1].colour and s.objects[0].cell != s.objects[1].cell


@pytest.mark.parametrize("size", [16, 32, 64, 100])
def test_render_any_resolution(size):
    img = render(scene_at(0, "train", 3), size)
    assert img.size == (size, size) and img.mode == "RGB"


def test_every_template_parses_back_to_its_scene():
    for i in range(200):
        scene = scene_at(3, "train", i)
        n = len(ONE_OBJECT_TEMPLATES if len(scene.objects) == 1 else TWO_OBJECT_TEMPLATES)
        for t in range(n):
            text = caption_for(scene, t)
            parsed = parse_caption(text)
            assert len(parsed.objects) == len(scene.objects), text
            for want, got in zip(scene.objects, parsed.objects):
                assert (got.shape, got.colour) == (want.shape, want.colour), text
                assert got.size in (None, want.size) and got.position in (None, want.position), text
            assert parsed.relation in (None, scene.relation), text
            assert parsed.relation is not None or len(scene.objects) == 1 or "and a" in text, text


def test_parser_reads_variants_and_rejects_non_captions():
    s = parse_caption("A big Green Triangle, top-left.")
    assert s.objects == (ShapeObject("triangle", "green", "large", "top left"),)
    s = parse_caption("a purple circle under a cyan square")
    assert s.relation == "below" and [o.colour for o in s.objects] == ["purple", "cyan"]
    assert parse_caption("a red square in the centre").objects[0].position == "center"
    assert parse_caption("a blue circle at the bottom").objects[0].position == "bottom center"
    with pytest.raises(VimtoolError, match="cannot read a shapes scene"):
        parse_caption("a photo of a dog")


@pytest.mark.parametrize("size", [32, 64])
def test_checker_scores_own_images_high_and_wrong_captions_near_zero(size):
    n = 300
    right = wrong = 0
    for i in range(n):
        scene = scene_at(0, "train", i)
        img = render(scene, size)
        right += check(img, scene.caption).ok
        wrong += check(img, scene_at(99, "train", i).caption).ok
    assert right / n >= 0.99
    assert wrong / n <= 0.02


def test_checker_reports_which_attribute_is_wrong():
    scene = Scene((ShapeObject("circle", "red", "large", "top left"),))
    img = render(scene, 64)
    assert check(img, scene).ok
    r = check(img, "a large red square in the top left")
    assert not r.ok and not r.shape and r.colour and r.position and r.count and "shape" in r.detail
    r = check(img, "a large red circle in the bottom right")
    assert not r.ok and r.shape and not r.position
    r = check(img, "a small red circle in the top left")
    assert not r.ok and not r.size and r.shape
    r = check(img, "a blue circle in the top left")
    assert not r.ok and not r.colour
    r = check(img, "a red circle to the left of a blue square")
    assert not r.ok and not r.count

    two = Scene(
        (ShapeObject("square", "blue", "large", "center"), ShapeObject("triangle", "yellow", "small", "middle left")),
        "right of",
    )
    img2 = render(two, 32)
    assert check(img2, "a blue square to the right of a yellow triangle").ok
    r = check(img2, "a blue square to the left of a yellow triangle")
    assert not r.ok and not r.relation and r.shape and r.colour


@pytest.mark.parametrize("size", [32, 64])
def test_checker_survives_blur_noise_and_resampling(size):
    """Generated and reconstructed images are not pixel-perfect: blur, noise and a 0.75x down/up-sampling
    (detail lost as in a tokenizer's reconstruction) must still read as the right scene."""
    rng = np.random.default_rng(0)
    ok = 0
    for i in range(100):
        scene = scene_at(5, "train", i)
        img = render(scene, size)
        img = img.resize((size * 3 // 4,) * 2, Image.BILINEAR).resize((size, size), Image.BILINEAR)
        img = img.filter(ImageFilter.GaussianBlur(0.5))
        a = np.asarray(img).astype(np.float32) + rng.normal(0, 6, (size, size, 3))
        ok += check(Image.fromarray(a.clip(0, 255).astype(np.uint8)), scene.caption).ok
    assert ok >= 95


def test_checker_takes_model_tensors_and_arrays():
    from vimtool.data.transforms import to_tensor

    scene = scene_at(0, "train", 11)
    img = render(scene, 32)
    assert check(to_tensor(img), scene.caption).ok and check(np.asarray(img), scene.caption).ok


def test_blank_image_has_no_objects():
    assert detect_objects(Image.new("RGB", (32, 32), (245, 245, 245))) == []
    assert not check(Image.new("RGB", (32, 32), (245, 245, 245)), "a red circle in the center").ok


def test_holdout_combinations_never_reach_train_and_fill_the_holdout_split():
    combos = parse_holdout("red+triangle;blue+circle+top-left")
    assert combos == [
        {"colour": "red", "shape": "triangle"},
        {"colour": "blue", "shape": "circle", "position": "top left"},
    ]
    train = open_source("shapes:size=32,holdout=red+triangle;blue+circle+top-left,n=400")
    val = open_source("shapes:size=32,holdout=red+triangle;blue+circle+top-left,n=200", "val")
    for src in (train, val):
        assert not any(is_held_out(src.scene(int(i)), combos) for i in src.indices)
    held = open_source("shapes:size=32,holdout=red+triangle;blue+circle+top-left,n=200", "holdout")
    scenes = [held.scene(int(i)) for i in held.indices]
    assert all(is_held_out(s, combos) for s in scenes)
    assert any(o.colour == "blue" and o.shape == "circle" for s in scenes for o in s.objects)
    assert score([held[i].image for i in range(50)], [held[i].caption for i in range(50)]) >= 0.98


def test_bad_shapes_options_are_one_line_errors():
    with pytest.raises(VimtoolError, match="holdout"):
        parse_holdout("red+pentagon")
    with pytest.raises(VimtoolError, match="holdout"):
        open_source("shapes", "holdout")
    with pytest.raises(VimtoolError, match="objects"):
        open_source("shapes:objects=3")
    with pytest.raises(VimtoolError, match="unknown option"):
        open_source("shapes:colour=red")
    with pytest.raises(VimtoolError, match="too small"):
        render(scene_at(0, "train", 0), 8)


def test_endless_stream_and_options():
    src = open_source("shapes:size=16,objects=1,n=inf")
    assert src.streaming and not hasattr(src, "__len__")
    first = [ex for _, ex in zip(range(5), src)]
    assert [ex.source_id for ex in first] == [f"shapes/train/{i}" for i in range(5)]
    assert all(ex.image.size == (16, 16) and ex.caption for ex in first)
    fixed = open_source("shapes:size=16,objects=1,n=5")
    assert [ex.caption for ex in fixed] == [ex.caption for ex in first]
    assert len(COLOURS) >= 6
