"""The shipped oracle grades fresh renders of every style, held-out ones included."""

import numpy as np
import pytest

from muse_styledrop import shapes
from muse_styledrop.shapes import dataset, grading, oracle


@pytest.fixture(scope="session")
def fresh():
  # seeds far from the oracle's training renders (1,000,000+) and its test set (9,000,000+)
  return dataset.render(240, first_seed=20_000_000, styles=tuple(shapes.STYLES), workers=1)


@pytest.fixture(scope="session")
def grader():
  return oracle.Grader(oracle.load())


def test_oracle_names_shape_colour_and_style_of_fresh_renders(fresh, grader):
  report = grading.label_accuracy(grader(fresh["images"]), fresh)
  assert report["colour"] >= 0.95 and report["style"] >= 0.95 and report["shape"] >= 0.9, report


def test_every_style_is_distinct_under_the_oracle(grader):
  scenes = grading.eval_scenes(6, seed=5)
  pictures = [shapes.render(scene, s, seed=i) for s in shapes.STYLES for i, scene in enumerate(scenes)]
  pred = grader(np.stack(pictures))["style"].reshape(len(shapes.STYLES), len(scenes))
  for k, s in enumerate(shapes.STYLES):
    assert np.mean(pred[k] == k) >= 0.8, s


def test_grader_accepts_uint8_and_float_pictures(fresh, grader):
  a = grader(fresh["images"][:5])
  b = grader(fresh["images"][:5].astype(np.float32) / 255.0)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_missing_oracle_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no oracle in"):
    oracle.load(tmp_path)


def test_a_reference_outside_the_world_reads_with_low_confidence(grader, tmp_path):
  """Concentric rings are no style of the world: the oracle names one (it always does), but the style evaluator
  sees its confidence, averaged over the picture's rotations and mirrors, fall under the threshold; every shipped
  reference stays above it."""
  from PIL import Image, ImageDraw

  from muse_styledrop.evaluators.shapes_oracle import STYLE_CONFIDENCE
  from muse_styledrop.shapes.references import REFERENCE_DIR

  rings = Image.new("RGB", (64, 64), (240, 235, 220))
  draw = ImageDraw.Draw(rings)
  for r in range(30, 0, -4):
    draw.ellipse((32 - r, 32 - r, 32 + r, 32 + r), outline=(30, 60, 150) if r % 8 else (200, 80, 40), width=2)
  rings.save(tmp_path / "rings.png")
  assert grading.read_reference(grader, tmp_path / "rings.png")["style_confidence"] < STYLE_CONFIDENCE
  shipped = sorted(REFERENCE_DIR.glob("*.png"))
  assert len(shipped) == 6
  for path in shipped:
    seen = grading.read_reference(grader, path)
    assert seen["style_confidence"] >= STYLE_CONFIDENCE and seen["style"] == path.stem, (path.name, seen)


def test_grading_without_a_style_reports_shape_and_colour_with_standard_errors(grader):
  scenes = grading.eval_scenes(8, 3)
  pictures = np.stack([shapes.render(scene, "flat", seed=i) for i, scene in enumerate(scenes)])
  graded = grading.grade(pictures, scenes, None, grader)
  assert "style_accuracy" not in graded and graded["count"] == 8
  p = graded["content_accuracy"]
  assert graded["content_accuracy_se"] == round(float(np.sqrt(p * (1 - p) / 8)), 4)
  assert "style_accuracy_se" in grading.grade(pictures, scenes, ["flat"] * 8, grader)
