"""Tiny random PyTorch reference models (diffusers / transformers), saved as real model directories."""

from __future__ import annotations

from pathlib import Path

import torch

from muse_styledrop.tokenizer import build_clip_tokenizer

WORDS = ["a", "an", "red", "blue", "cat", "dog", "house", "in", "style", "watercolor", "painting", "of"]

# amused-256-like: no down/upsampling; amused-512-like: the 2x2 down/up pair.
UVIT_TINY = dict(
  hidden_size=32,
  use_bias=False,
  cond_embed_dim=16,
  micro_cond_encode_dim=4,
  micro_cond_embed_dim=20,
  encoder_hidden_size=16,
  vocab_size=41,
  codebook_size=40,
  in_channels=12,
  block_out_channels=16,
  num_res_blocks=1,
  downsample=False,
  upsample=False,
  block_num_heads=2,
  num_hidden_layers=2,
  num_attention_heads=4,
  intermediate_size=40,
  layer_norm_eps=1e-6,
  ln_elementwise_affine=True,
  sample_size=4,
)
UVIT_TINY_512 = {**UVIT_TINY, "downsample": True, "upsample": True, "num_res_blocks": 2}
VQ_TINY = dict(
  down_block_types=("DownEncoderBlock2D",) * 3,
  up_block_types=("UpDecoderBlock2D",) * 3,
  block_out_channels=(8, 16, 16),
  layers_per_block=1,
  latent_channels=4,
  num_vq_embeddings=40,
  norm_num_groups=4,
  mid_block_add_attention=False,
  lookup_from_codebook=True,
  force_upcast=True,
)


def randomize_(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> torch.nn.Module:
  """Replace every parameter (many start at 0 or 1) with noise, so parity checks every weight."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.copy_(torch.randn(p.shape, generator=g) * scale)
  return module.eval()


def uvit(**overrides):
  from diffusers import UVit2DModel

  return randomize_(UVit2DModel(**{**UVIT_TINY, **overrides}))


def vqvae(**overrides):
  from diffusers import VQModel

  model = randomize_(VQModel(**{**VQ_TINY, **overrides}), scale=0.2)
  with torch.no_grad():  # GroupNorm weights near 1 keep activations in a sane range through the stack
    for name, p in model.named_parameters():
      if "norm" in name and name.endswith("weight"):
        p.add_(1.0)
  return model


def clip_text_config(**overrides):
  from transformers import CLIPTextConfig

  return CLIPTextConfig(
    **{
      **dict(
        vocab_size=len(WORDS) + 600,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        hidden_size=16,
        intermediate_size=37,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=16,
        projection_dim=16,
        hidden_act="quick_gelu",
      ),
      **overrides,
    }
  )


def clip_vision_config(**overrides):
  from transformers import CLIPVisionConfig

  return CLIPVisionConfig(
    **{
      **dict(
        hidden_size=24,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=16,
        patch_size=4,
        projection_dim=16,
      ),
      **overrides,
    }
  )


def text_encoder(**overrides):
  from transformers import CLIPTextModelWithProjection

  return randomize_(CLIPTextModelWithProjection(clip_text_config(**overrides)), scale=0.1)


def clip_model(**text_overrides):
  from transformers import CLIPConfig, CLIPModel

  config = CLIPConfig(
    text_config=clip_text_config(**text_overrides).to_dict(),
    vision_config=clip_vision_config().to_dict(),
    projection_dim=16,
  )
  return randomize_(CLIPModel(config), scale=0.1)


def tokenizer(folder: Path, max_length: int = 16):
  from transformers import CLIPTokenizer

  build_clip_tokenizer(WORDS, folder, max_length=max_length)
  return CLIPTokenizer.from_pretrained(str(folder))


def token_ids(tok) -> dict:
  """The text-config fields that must agree with a tokenizer."""
  return dict(
    vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
  )


def amused_dir(folder: Path, *, uvit_overrides=None, safe_serialization=True) -> Path:
  """Save a complete tiny aMUSEd pipeline in the diffusers layout with diffusers' own save_pretrained."""
  from diffusers import AmusedPipeline, AmusedScheduler

  uvit_overrides = uvit_overrides or {}
  transformer = uvit(**uvit_overrides)
  tok = tokenizer(folder.parent / (folder.name + "_tok"))
  encoder = text_encoder(**token_ids(tok))
  pipe = AmusedPipeline(
    vqvae=vqvae(),
    tokenizer=tok,
    text_encoder=encoder,
    transformer=transformer,
    scheduler=AmusedScheduler(mask_token_id=transformer.config.vocab_size - 1),
  )
  pipe.save_pretrained(str(folder), safe_serialization=safe_serialization)
  return folder
