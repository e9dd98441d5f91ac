"""The shapes world's renderer: deterministic, every style distinct, captions agree with labels."""

import dataclasses
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from muse_styledrop import shapes
from muse_styledrop.shapes import Obj, Scene

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # configs/ is a folder, not a package

SCENE = Scene((Obj("star", "blue", "large", "center"),), "white")


def test_world_has_what_the_design_asks_for():
  assert len(shapes.SHAPES) >= 8 and len(shapes.COLOURS) >= 8 and len(shapes.STYLES) >= 16
  assert len(shapes.HELD_OUT) >= 6 and not set(shapes.HELD_OUT) & set(shapes.SEEN)
  assert set(shapes.HELD_OUT) | set(shapes.SEEN) == set(shapes.STYLES)


@pytest.mark.parametrize("style", list(shapes.STYLES))
def test_render_is_deterministic_per_seed(style):
  a = shapes.render(SCENE, style, seed=3)
  b = shapes.render(SCENE, style, seed=3)
  assert a.shape == (64, 64, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)


def test_every_style_draws_the_same_scene_differently():
  pictures = {s: shapes.render(SCENE, s, seed=0).astype(float) for s in shapes.STYLES}
  for a, b in itertools.combinations(shapes.STYLES, 2):
    assert np.abs(pictures[a] - pictures[b]).mean() > 3.0, (a, b)


def test_every_shape_is_drawn_differently():
  pictures = {
    s: shapes.render(Scene((Obj(s, "red", "large", "center"),), "white"), "flat", 0).astype(float)
    for s in shapes.SHAPES
  }
  for a, b in itertools.combinations(shapes.SHAPES, 2):
    assert np.abs(pictures[a] - pictures[b]).mean() > 1.0, (a, b)


def test_captions_agree_with_labels():
  named = 0
  for seed in range(200):
    ex = shapes.example(seed)
    for o in ex.scene.objects:
      assert f"{o.colour} {o.shape}" in ex.caption
    if shapes.STYLES[ex.style] in ex.caption:
      named += 1
      assert ex.caption.endswith(shapes.STYLES[ex.style])
    assert ex.style in shapes.SEEN
    assert not any(shapes.STYLES[s] in ex.caption for s in shapes.STYLES if s != ex.style)
  assert 150 <= named < 200  # most captions name the style, not all


def test_two_objects_do_not_overlap():
  for seed in range(300):
    scene = shapes.random_scene(np.random.default_rng(seed))
    if len(scene.objects) == 2:
      a, b = scene.objects
      (ax, ay), (bx, by) = shapes.POSITIONS[a.position], shapes.POSITIONS[b.position]
      assert np.hypot(ax - bx, ay - by) > shapes.SIZES[a.size] + shapes.SIZES[b.size]


def test_rendered_dataset_round_trips_and_streams(tmp_path):
  from muse_styledrop.shapes import dataset

  arrays = dataset.render(10, first_seed=100, workers=1, chunk=4)
  dataset.save(arrays, tmp_path / "d.npz")
  back = dataset.load(tmp_path / "d.npz")
  for i in (0, 9):
    ex = shapes.example(100 + i)
    np.testing.assert_array_equal(back["images"][i], ex.image)
    assert back["caption"][i] == ex.caption
    assert shapes.SHAPES[back["shape"][i]] == ex.scene.objects[0].shape
    assert list(shapes.STYLES)[back["style"][i]] == ex.style
  it = iter(dataset.batches(back, batch_size=4, seed=0))
  first = [next(it) for _ in range(5)]  # more than one epoch: the stream does not end
  assert first[0]["images"].shape == (4, 64, 64, 3) and first[0]["caption"].shape == (4,)
  again = next(iter(dataset.batches(back, batch_size=4, seed=0)))
  np.testing.assert_array_equal(again["images"], first[0]["images"])  # reproducible per seed


def test_rendering_over_worker_processes_equals_rendering_in_process():
  from muse_styledrop.shapes import dataset

  a = dataset.render(8, first_seed=7, workers=2, chunk=4)
  b = dataset.render(8, first_seed=7, workers=1, chunk=4)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_shape_groups_differ_only_in_the_first_objects_shape():
  from muse_styledrop.shapes import dataset
  from muse_styledrop.shapes.render import shape_group

  group = shape_group(11, 4)
  first = group[0]
  assert len({e.scene.objects[0].shape for e in group}) == 4
  for e in group:
    assert e.style == first.style
    assert dataclasses.replace(e.scene.objects[0], shape="x") == dataclasses.replace(first.scene.objects[0], shape="x")
    assert e.scene.objects[1:] == first.scene.objects[1:] and e.scene.background == first.scene.background
    assert e.caption.replace(e.scene.objects[0].shape, "x") == first.caption.replace(first.scene.objects[0].shape, "x")
  assert all(np.abs(e.image.astype(int) - first.image).mean() > 0.5 for e in group[1:])
  arrays = dataset.render(2, first_seed=11, workers=1, group=4)
  assert arrays["group"].tolist() == [11] * 4 + [12] * 4
  np.testing.assert_array_equal(arrays["images"][:4], np.stack([e.image for e in group]))


def test_shipped_reference_pictures_are_the_renders_the_config_captions(tmp_path):
  from configs import style_one_shot
  from muse_styledrop.shapes import references

  assert set(references.REFERENCES) == set(shapes.HELD_OUT)
  references.main([f"--out={tmp_path}"])
  for style, scene in references.REFERENCES.items():
    shipped = references.reference_run(style)
    np.testing.assert_array_equal(np.asarray(Image.open(shipped["image"])), references.reference_picture(style))
    np.testing.assert_array_equal(
      np.asarray(Image.open(tmp_path / f"{style}.png")), references.reference_picture(style)
    )
    assert shipped["content"] == scene.content() and shipped["style"] == shapes.STYLES[style]
  assert style_one_shot.REFERENCE == references.reference_run("mosaic")  # the README run's picture
  with pytest.raises(ValueError, match="no reference picture for style 'flat'; the held-out styles are"):
    references.reference_picture("flat")
