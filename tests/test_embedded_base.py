"""The shipped shapes-world base: small, half precision, loadable by us and by diffusers, the default everywhere."""

import subprocess
import sys

import numpy as np
import pytest

from muse_styledrop.pipeline import EMBEDDED_BASE, Pipeline, resolve_base_model


def test_embedded_base_is_the_default_and_small():
  assert resolve_base_model("") == EMBEDDED_BASE
  files = [p for p in EMBEDDED_BASE.rglob("*") if p.is_file()]
  assert sum(p.stat().st_size for p in files) <= 25 * 2**20
  from safetensors import safe_open

  for f in EMBEDDED_BASE.rglob("*.safetensors"):
    with safe_open(str(f), "np") as st:
      assert all(str(st.get_slice(k).get_dtype()) == "F16" for k in st.keys()), f


def test_embedded_base_loads_and_parity_passes_against_diffusers():
  pipe = Pipeline.from_pretrained(EMBEDDED_BASE)
  # aMUSEd's layout plus Muse's learned 2D position embedding; parity below installs it in diffusers with a hook
  assert pipe.transformer.config.position_embedding_grid == (16, 16)
  with pytest.raises(TypeError, match="divide by 255"):  # uint8 pictures are a silent wrong answer otherwise
    pipe.encode_images(np.zeros((1, 64, 64, 3), np.uint8))
  result = subprocess.run(
    [sys.executable, "-m", "muse_styledrop.parity", f"--reference={EMBEDDED_BASE}"],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stdout + result.stderr


def test_base_quality_grades_every_sampler():
  from muse_styledrop.shapes import grading

  pipe = Pipeline.from_pretrained(EMBEDDED_BASE)
  samplers = {"a": grading.BASE_SAMPLERS["default"], "b": grading.BASE_SAMPLERS["likeliest"]}
  report = grading.base_quality(pipe, grading.grader_or_none(""), count=4, steps=2, samplers=samplers)
  assert set(report["samplers"]) == {"a", "b"} and report["samplers"]["b"]["settings"]["token_temperature"] == 0.1
  assert report["count"] == 4 and report["shape_accuracy"] == report["samplers"]["a"]["shape_accuracy"]
