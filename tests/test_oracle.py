"""The shipped oracle grades fresh renders of every style, held-out ones included."""

import numpy as np
import pytest

from muse_styledrop import shapes
from muse_styledrop.shapes import dataset, grading, oracle


@pytest.fixture(scope="module")
def fresh():
  # seeds far from the oracle's training renders (1,000,000+) and its test set (9,000,000+)
  return dataset.render(240, first_seed=20_000_000, styles=tuple(shapes.STYLES), workers=1)


@pytest.fixture(scope="module")
def grader():
  return oracle.Grader(oracle.load())


def test_oracle_names_shape_colour_and_style_of_fresh_renders(fresh, grader):
  report = grading.label_accuracy(grader(fresh["images"]), fresh)
  assert report["colour"] >= 0.95 and report["style"] >= 0.95 and report["shape"] >= 0.9, report


def test_every_style_is_distinct_under_the_oracle(grader):
  scenes = grading.eval_scenes(6, seed=5)
  for s in shapes.STYLES:
    pred = grader(np.stack([shapes.render(scene, s, seed=i) for i, scene in enumerate(scenes)]))["style"]
    assert np.mean(pred == list(shapes.STYLES).index(s)) >= 0.8, s


def test_grader_accepts_uint8_and_float_pictures(fresh, grader):
  a = grader(fresh["images"][:5])
  b = grader(fresh["images"][:5].astype(np.float32) / 255.0)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_missing_oracle_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no oracle in"):
    oracle.load(tmp_path)
