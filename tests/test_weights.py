"""Loading and writing model directories: dtypes, shards, round trips, and the errors a user can cause."""

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import reference
import torch

from muse_styledrop import weights
from muse_styledrop.pipeline import ModelDirectoryError, Pipeline, check_model_dir


@pytest.fixture()
def uvit_dir(tmp_path):
  model = reference.uvit()
  model.save_pretrained(tmp_path / "transformer")
  return model, tmp_path / "transformer"


def forward_inputs(b=2, h=4, w=4):
  g = torch.Generator().manual_seed(0)
  return (
    torch.randint(0, 41, (b, h, w), generator=g),
    torch.randn(b, 5, 16, generator=g),
    torch.randn(b, 16, generator=g),
    torch.tensor([[256.0, 256.0, 0.0, 0.0, 6.0]] * b),
  )


def ours_logits(model, inputs):
  return np.asarray(model(*(jnp.asarray(t.numpy()) for t in inputs)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_load_as_stored(tmp_path, dtype):
  model = reference.uvit().to(dtype)
  model.save_pretrained(tmp_path, variant="fp16")
  ours = weights.load_transformer(tmp_path, variant="fp16")
  ref = model.state_dict()["transformer_layers.0.attn1.to_q.weight"].float().numpy()
  kernel = np.asarray(ours.transformer_layers[0].attn1.to_q.kernel[...])
  np.testing.assert_array_equal(kernel.T, ref)  # fp16/bf16 values are exact in fp32


def test_sharded_checkpoint_loads(tmp_path):
  model = reference.uvit()
  model.save_pretrained(tmp_path, max_shard_size="20KB")
  assert (tmp_path / "diffusion_pytorch_model.safetensors.index.json").exists()
  ours = weights.load_transformer(tmp_path)
  inputs = forward_inputs()
  with torch.no_grad():
    ref = model(*inputs).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(ours_logits(ours, inputs), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_written_transformer_loads_in_diffusers(uvit_dir, tmp_path):
  from diffusers import UVit2DModel

  torch_model, folder = uvit_dir
  ours = weights.load_transformer(folder)
  weights.save_transformer(ours, tmp_path / "out")
  back = UVit2DModel.from_pretrained(tmp_path / "out").eval()
  for key, value in torch_model.state_dict().items():
    assert torch.equal(back.state_dict()[key], value), key


def test_written_pipeline_loads_in_diffusers_and_back(amused_dir, tmp_path):
  from diffusers import AmusedPipeline

  ours = Pipeline.from_pretrained(amused_dir)
  ours.save_pretrained(tmp_path / "copy")
  pipe = AmusedPipeline.from_pretrained(tmp_path / "copy")
  original = AmusedPipeline.from_pretrained(amused_dir)
  for name in ("transformer", "vqvae", "text_encoder"):
    a, b = getattr(pipe, name).state_dict(), getattr(original, name).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), name
  again = Pipeline.from_pretrained(tmp_path / "copy")
  assert again.fingerprint == ours.fingerprint


def test_shape_mismatch_names_file_and_key(uvit_dir):
  _, folder = uvit_dir
  config = json.loads((folder / "config.json").read_text())
  config["intermediate_size"] = 48
  (folder / "config.json").write_text(json.dumps(config))
  with pytest.raises(
    weights.WeightsError,
    match=r"diffusion_pytorch_model.safetensors: weight "
    r"'transformer_layers.0.ff.net.0.proj.weight' has shape",
  ):
    weights.load_transformer(folder)


def test_unknown_key_is_an_error(uvit_dir):
  from safetensors.torch import load_file, save_file

  _, folder = uvit_dir
  path = folder / "diffusion_pytorch_model.safetensors"
  tensors = load_file(path)
  tensors["transformer_layers.0.attn1.extra.weight"] = torch.zeros(3)
  save_file(tensors, path)
  with pytest.raises(weights.WeightsError, match="unknown weight 'transformer_layers.0.attn1.extra.weight'"):
    weights.load_transformer(folder)


def test_missing_key_is_an_error(uvit_dir):
  from safetensors.torch import load_file, save_file

  _, folder = uvit_dir
  path = folder / "diffusion_pytorch_model.safetensors"
  tensors = load_file(path)
  del tensors["mlm_layer.conv2.weight"]
  save_file(tensors, path)
  with pytest.raises(weights.WeightsError, match="'mlm_layer.conv2.weight' is missing"):
    weights.load_transformer(folder)


def test_pickle_only_checkpoint_is_refused_without_unpickling(uvit_dir):
  _, folder = uvit_dir
  (folder / "diffusion_pytorch_model.safetensors").unlink()
  # A file that would run code if unpickled: the loader must not touch it.
  (folder / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04cos\nsystem\n(S'exit 3'\ntR.")
  with pytest.raises(weights.WeightsError, match="only pickle weights.*never unpickle"):
    weights.load_transformer(folder)


def test_corrupt_safetensors_is_a_clear_error(uvit_dir):
  _, folder = uvit_dir
  (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file at all")
  with pytest.raises(weights.WeightsError, match="not a readable safetensors file"):
    weights.load_transformer(folder)


def test_missing_and_incomplete_model_directories(amused_dir, tmp_path):
  with pytest.raises(ModelDirectoryError, match="does not exist.*download"):
    check_model_dir(tmp_path / "nowhere")
  with pytest.raises(ModelDirectoryError, match="no model_index.json"):
    check_model_dir(tmp_path)
  partial = tmp_path / "partial"
  shutil.copytree(amused_dir, partial)
  shutil.rmtree(partial / "vqvae")
  with pytest.raises(ModelDirectoryError, match="lacks the vqvae/ folder"):
    Pipeline.from_pretrained(partial)
  (partial / "transformer" / "config.json").unlink()
  with pytest.raises(weights.WeightsError, match="transformer/config.json is missing"):
    weights.load_transformer(partial / "transformer")
