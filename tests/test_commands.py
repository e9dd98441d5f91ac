"""The sample and parity commands as a user runs them."""

import subprocess
import sys

import numpy as np
from PIL import Image


def run(*args, cwd=None):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_sample_writes_pngs_and_a_grid(amused_dir, tmp_path):
  out = tmp_path / "samples"
  result = run(
    "muse_styledrop.sample",
    f"--base_model={amused_dir}",
    "--prompt=a red cat",
    "--prompt=a house",
    "--num_images=2",
    "--steps=4",
    f"--out={out}",
  )
  assert result.returncode == 0, result.stderr
  names = sorted(p.name for p in out.iterdir())
  assert names == ["grid.png", "image_000.png", "image_001.png", "image_002.png", "image_003.png"]
  image = np.asarray(Image.open(out / "image_000.png"))
  assert image.shape == (16, 16, 3) and image.std() > 0  # 4x4 tokens, 4x VQ downscale
  assert Image.open(out / "grid.png").size == (2 + 2 * 18, 2 + 2 * 18)


def test_sample_with_a_missing_model_is_one_line_and_nonzero(tmp_path):
  result = run("muse_styledrop.sample", f"--base_model={tmp_path / 'nowhere'}", f"--out={tmp_path / 'o'}")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: model directory")
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "o").exists()


def test_parity_command_fails_past_tolerance(amused_dir):
  # within tolerance, every row passes: tests/test_uvit_options.py (a tiny base) and test_embedded_base.py (the command)
  result = run("muse_styledrop.parity", f"--reference={amused_dir}", "--rtol=0")
  assert result.returncode == 1
  for component in ("text encoder text_embeds", "VQ encode token ids", "VQ decode", "transformer logits"):
    assert component in result.stdout
  assert "FAIL" in result.stdout


def test_adapter_for_another_base_is_refused(amused_dir, tmp_path):
  import reference
  from flax import nnx

  from muse_styledrop import weights
  from muse_styledrop.models.adapters import AdapterConfig, AdapterParam
  from muse_styledrop.pipeline import Pipeline

  pipe = Pipeline.from_pretrained(amused_dir)
  pipe.transformer.attach_adapters(AdapterConfig(), nnx.Rngs(0))
  weights.write_adapter(
    nnx.state(pipe.transformer, AdapterParam),
    {"base_fingerprint": pipe.fingerprint, "adapter": {"hidden": 4}},
    tmp_path / "adapter",
  )
  other = reference.amused_dir(tmp_path / "other", uvit_overrides={"num_hidden_layers": 3})
  pipe.load_adapter(tmp_path / "adapter.safetensors")  # its own base takes it (sample does: tests/test_train.py)
  bad = run(
    "muse_styledrop.sample",
    f"--base_model={other}",
    f"--adapter={tmp_path / 'adapter.safetensors'}",
    "--steps=2",
    f"--out={tmp_path / 'bad'}",
  )
  assert bad.returncode == 2
  assert "trained on another base model" in bad.stderr.strip().splitlines()[-1]
  assert not (tmp_path / "bad").exists()


def test_sample_image_to_image(amused_dir, tmp_path):
  picture = tmp_path / "in.png"
  Image.fromarray((np.random.default_rng(0).random((40, 30, 3)) * 255).astype(np.uint8)).save(picture)
  result = run(
    "muse_styledrop.sample",
    f"--base_model={amused_dir}",
    f"--init_image={picture}",
    "--strength=0.5",
    "--steps=4",
    f"--out={tmp_path / 'out'}",
  )
  assert result.returncode == 0, result.stderr
  assert (tmp_path / "out" / "image_000.png").exists()


def test_feedback_command_reports_a_bad_request_in_one_line(tmp_path):
  result = run("muse_styledrop.feedback", "--adapter=x.safetensors", "--select=clip", f"--out={tmp_path / 'fb'}")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
    "error: --select=clip needs --clip_model: a transformers CLIPModel directory with both towers"
  )
  assert not (tmp_path / "fb").exists()
