"""Published architecture configs of the open Muse-family models (aMUSEd) and their text encoder.

Values are those of the config.json files in the amused-256 / amused-512
directories (diffusers layout) and of OpenAI CLIP ViT-L/14's text tower, so
full-size models can be built without the files (abstractly, for counting
and benchmarks). Loading a real directory always reads its own config.json.
"""

from muse_styledrop.models.clip import CLIPConfig, TowerConfig
from muse_styledrop.models.uvit import UVitConfig
from muse_styledrop.models.vq import VQConfig

AMUSED_256_TRANSFORMER = UVitConfig(
  hidden_size=1024,
  use_bias=False,
  hidden_dropout=0.0,
  cond_embed_dim=768,
  micro_cond_encode_dim=256,
  micro_cond_embed_dim=1280,
  encoder_hidden_size=768,
  vocab_size=8256,
  codebook_size=8192,
  in_channels=768,
  block_out_channels=768,
  num_res_blocks=3,
  downsample=False,
  upsample=False,
  block_num_heads=12,
  num_hidden_layers=22,
  num_attention_heads=16,
  attention_dropout=0.0,
  intermediate_size=2816,
  layer_norm_eps=1e-6,
  ln_elementwise_affine=True,
  sample_size=16,
)

# amused-512: the same transformer with the 2x2 down/upsampling pair around it, on a 32x32 token grid.
AMUSED_512_TRANSFORMER = UVitConfig(
  **{**AMUSED_256_TRANSFORMER.__dict__, "downsample": True, "upsample": True, "sample_size": 32}
)

AMUSED_VQ = VQConfig(
  in_channels=3,
  out_channels=3,
  block_out_channels=(128, 256, 256, 512, 768),
  layers_per_block=2,
  latent_channels=64,
  num_vq_embeddings=8192,
  norm_num_groups=32,
  sample_size=32,
  act_fn="silu",
  mid_block_add_attention=False,
  lookup_from_codebook=True,
)

CLIP_L14_TEXT = CLIPConfig(
  text=TowerConfig(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    vocab_size=49408,
    max_position_embeddings=77,
    eos_token_id=2,
  ),
  projection_dim=768,
)

# The paper's Muse-3B size in aMUSEd's layout (an estimate for memory planning; no such weights are published):
# 48 transformer layers of width 2048 (32 heads of 64), conv blocks of 1536, text states of T5-XXL's width 4096,
# 16x16 tokens of an 8192-code VQ. Its round-1 adapter has 229,760 weights, the paper's 0.23M.
MUSE_3B_TRANSFORMER = UVitConfig(
  **{
    **AMUSED_256_TRANSFORMER.__dict__,
    "hidden_size": 2048,
    "num_hidden_layers": 48,
    "num_attention_heads": 32,
    "intermediate_size": 5632,
    "block_out_channels": 1536,
    "block_num_heads": 24,
    "in_channels": 1024,
    "encoder_hidden_size": 4096,
    "cond_embed_dim": 4096,
  }
)
