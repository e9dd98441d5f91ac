"""Our Flax modules against the PyTorch originals on random weights, loaded from files they saved."""

import jax.numpy as jnp
import numpy as np
import pytest
import reference
import torch

from muse_styledrop import weights


def rel_err(ours, ref):
  return float(np.abs(np.asarray(ours) - ref).max() / (np.abs(ref).max() + 1e-12))


@pytest.mark.parametrize(
  "variant,grid",
  [
    ("amused-256-like", (4, 4)),
    ("amused-512-like", (8, 8)),  # 2x2 down/upsampling around the transformer
    ("non-square", (4, 6)),
  ],
)
def test_transformer_logits_match_diffusers(tmp_path, variant, grid):
  overrides = reference.UVIT_TINY_512 if variant == "amused-512-like" else {}
  torch_model = reference.uvit(**overrides)
  torch_model.save_pretrained(tmp_path)
  ours = weights.load_transformer(tmp_path)
  g = torch.Generator().manual_seed(1)
  b, (h, w) = 3, grid
  ids = torch.randint(0, torch_model.config.vocab_size, (b, h, w), generator=g)
  text = torch.randn(b, 7, 16, generator=g)
  pooled = torch.randn(b, 16, generator=g)
  micro = torch.tensor([[256.0, 256.0, 0.0, 0.0, 6.0]]).repeat(b, 1)
  with torch.no_grad():
    ref = torch_model(ids, text, pooled, micro).permute(0, 2, 3, 1).numpy()
  out = ours(*(jnp.asarray(t.numpy()) for t in (ids, text, pooled, micro)))
  assert out.shape == ref.shape
  assert rel_err(out, ref) < 1e-4


@pytest.mark.parametrize(
  "levels",
  [
    {},  # aMUSEd's shape: 3 levels, the last two equally wide
    dict(  # 4 levels of unequal widths (the embedded base's 8x8-token variant)
      down_block_types=("DownEncoderBlock2D",) * 4,
      up_block_types=("UpDecoderBlock2D",) * 4,
      block_out_channels=(8, 12, 16, 24),
    ),
  ],
  ids=["3-levels", "4-levels"],
)
def test_vq_ids_and_decode_match_diffusers(tmp_path, levels):
  torch_model = reference.vqvae(**levels)
  torch_model.save_pretrained(tmp_path)
  ours = weights.load_vqvae(tmp_path)
  images = torch.rand(4, 3, 32, 24, generator=torch.Generator().manual_seed(2))
  f = 2 ** (len(torch_model.config.block_out_channels) - 1)
  with torch.no_grad():
    latents = torch_model.encode(images).latents
    ids = torch_model.quantize(latents)[2][2].reshape(4, 32 // f, 24 // f)
    decoded = torch_model.decode(ids.reshape(-1), force_not_quantize=True, shape=(4, 32 // f, 24 // f, 4)).sample
  our_ids = np.asarray(ours.encode(jnp.asarray(images.permute(0, 2, 3, 1).numpy())))
  assert (our_ids == ids.numpy()).mean() >= 0.999
  assert len(np.unique(ids.numpy())) > 5  # the check is not vacuous: many codes in use
  our_decoded = ours.decode(jnp.asarray(ids.numpy()))
  assert rel_err(our_decoded, decoded.permute(0, 2, 3, 1).numpy()) < 1e-4


def normalized(x):
  x = np.asarray(x)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_clip_model_text_and_image_embeddings_match_transformers(tmp_path):
  torch_model = reference.clip_model()
  torch_model.save_pretrained(tmp_path)
  ours = weights.load_clip(tmp_path)
  g = torch.Generator().manual_seed(3)
  ids = torch.randint(3, 500, (3, 16), generator=g)
  ids[:, 0], ids[0, 5:], ids[1, 9:], ids[2, 15] = 0, 2, 2, 2  # bos, eos, eos padding
  pixels = torch.randn(3, 3, 16, 16, generator=g)
  with torch.no_grad():
    ref = torch_model(input_ids=ids, pixel_values=pixels)
    hidden = torch_model.text_model(input_ids=ids, output_hidden_states=True).hidden_states[-2]
  out, text_embeds = ours.encode_text(jnp.asarray(ids.numpy()))
  image_embeds = ours.encode_image(jnp.asarray(pixels.permute(0, 2, 3, 1).numpy()))
  np.testing.assert_allclose(normalized(text_embeds), ref.text_embeds.numpy(), atol=1e-5)
  np.testing.assert_allclose(normalized(image_embeds), ref.image_embeds.numpy(), atol=1e-5)
  np.testing.assert_allclose(out.penultimate_BTD, hidden.numpy(), atol=1e-5)


def test_text_encoder_with_projection_matches_transformers(tmp_path):
  """aMUSEd's text_encoder: CLIPTextModelWithProjection, new-style eos id (not 2), gelu activation."""
  torch_model = reference.text_encoder(eos_token_id=7, hidden_act="gelu")
  torch_model.save_pretrained(tmp_path)
  ours = weights.load_clip(tmp_path)
  ids = torch.randint(8, 500, (2, 16), generator=torch.Generator().manual_seed(4))
  ids[0, 4], ids[1, 11], ids[1, 13] = 7, 7, 7  # the first eos is the pooled position
  with torch.no_grad():
    ref = torch_model(input_ids=ids, output_hidden_states=True)
  out, text_embeds = ours.encode_text(jnp.asarray(ids.numpy()))
  np.testing.assert_allclose(text_embeds, ref.text_embeds.numpy(), atol=1e-5)
  np.testing.assert_allclose(out.penultimate_BTD, ref.hidden_states[-2].numpy(), atol=1e-5)
  np.testing.assert_allclose(out.last_hidden_BTD, ref.last_hidden_state.numpy(), atol=1e-5)


@pytest.mark.parametrize(
  "args",
  [
    dict(c_in=8, c_out=8, kernel=3, padding=1, groups=8),  # ConvNeXt depthwise
    dict(c_in=5, c_out=7, kernel=3, padding=1),  # VQ resnet
    dict(c_in=4, c_out=4, kernel=3, stride=2, padding=((0, 1), (0, 1))),  # VQ downsample
    dict(c_in=6, c_out=3, kernel=1),
    dict(c_in=4, c_out=6, kernel=2, stride=2, padding=((0, 1), (0, 1)), bias=False),  # U-ViT downsample
    dict(c_in=3, c_out=5, kernel=8, stride=8),  # CLIP patch embedding
  ],
)
def test_cpu_convolution_equals_xla_convolution(args):
  """The CPU path (im2col / shifted sums) computes exactly what lax.conv does, gradients included."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from muse_styledrop.models.layers import conv

  m = conv(rngs=nnx.Rngs(0), **args)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, args["c_in"])), jnp.float32)
  np.testing.assert_allclose(m(x), nnx.Conv.__call__(m, x), atol=1e-5)
  ours = jax.grad(lambda x: (m(x) ** 2).sum())(x)
  xla = jax.grad(lambda x: (nnx.Conv.__call__(m, x) ** 2).sum())(x)
  np.testing.assert_allclose(ours, xla, rtol=1e-4, atol=1e-4)
