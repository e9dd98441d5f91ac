"""Full-size aMUSEd-256 components in PyTorch (diffusers/transformers) with random weights, from our presets."""

import torch

from muse_styledrop import weights
from muse_styledrop.models import presets


def components(seed: int = 0, **text_overrides):
  """(transformer, vqvae, text_encoder): the published architecture, built from the same presets as ours."""
  from diffusers import UVit2DModel, VQModel
  from transformers import CLIPTextConfig, CLIPTextModelWithProjection

  torch.manual_seed(seed)
  transformer = UVit2DModel.from_config(weights.uvit_config_dict(presets.AMUSED_256_TRANSFORMER)).eval()
  vqvae = VQModel.from_config(weights.vq_config_dict(presets.AMUSED_VQ)).eval()
  text_config = {**weights.clip_config_dict(presets.CLIP_L14_TEXT), **text_overrides}
  text = CLIPTextModelWithProjection(CLIPTextConfig(**text_config)).eval()
  return transformer, vqvae, text
