"""The U-ViT's objective: the masked-token loss StyleDrop trains with, conditioned on a frozen CLIP text tower."""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from muse_styledrop import distributed, files, weights
from muse_styledrop.frozen import frozen_jit
from muse_styledrop.losses import masked_loss
from muse_styledrop.models.uvit import UVit2DModel, UVitConfig
from muse_styledrop.pipeline import Pipeline, micro_conds
from muse_styledrop.pretraining.objective import Objective
from muse_styledrop.tokenizer import Tokenizer


def encoder_fingerprint(vq_dir: Path) -> str:
  """A hash of what a VQ directory's tokens depend on: its encoder, quant_conv and codebook (not its decoder, which
  train='decoder' may change under a transformer trained on the same tokens)."""
  tensors = weights.read_tensors(weights.weight_files(vq_dir, weights.DIFFUSERS_WEIGHTS))
  h = hashlib.sha256()
  for k in sorted(k for k in tensors if k.startswith(("encoder.", "quant_conv.", "quantize."))):
    h.update(k.encode() + np.asarray(tensors[k][0]).tobytes())
  return h.hexdigest()


def training_subset(arrays: dict, which: str) -> np.ndarray:
  """Indices of the training pictures to use: 'all', or 'single_large' (one medium or large object: the shape
  fills more of the picture, so less of the masked-token loss is background and texture)."""
  if which == "all":
    return np.arange(len(arrays["objects"]))
  if which == "single_large":
    small = np.char.find(arrays["caption"].astype(str), "a small ") >= 0
    return np.flatnonzero((arrays["objects"] == 1) & ~small)
  raise ValueError(f"data.select={which!r}; use 'all' or 'single_large'")


def warm_start(model: UVit2DModel, source: Path, fresh: tuple[str, ...] = ()) -> None:
  """Fill `model` from a trained transformer directory. Weights whose names start with a prefix in `fresh` keep
  their init (the token embedding and the logit layer of a model on another VQ's codes); a position embedding the
  source lacks keeps its init, and one on another grid is resized bilinearly (a body trained on an 8x8 grid
  warm-starts one on a 16x16 grid)."""
  tensors = weights.read_tensors(weights.weight_files(source, weights.DIFFUSERS_WEIGHTS))
  tensors = {k: v for k, v in tensors.items() if not k.startswith(fresh)}
  grid = model.config.position_embedding_grid
  if grid and "position_embedding" in tensors:
    value, path = tensors["position_embedding"]
    side = math.isqrt(value.shape[0])
    if side * side != value.shape[0]:
      raise ValueError(
        f"{path}: position_embedding of {value.shape[0]} rows is not a square grid, so it cannot be resized; "
        "warm-start from a transformer with a square position_embedding_grid"
      )
    if (side, side) != tuple(grid):
      square = jnp.asarray(value, jnp.float32).reshape(side, side, -1)
      value = jax.image.resize(square, (*grid, square.shape[-1]), "bilinear").reshape(grid[0] * grid[1], -1)
      tensors["position_embedding"] = (value, path)
  weights.load_params(model, tensors, str(source), keep_missing=(*fresh, "position_embedding"))


class UVitObjective(Objective):
  def __init__(self, config, workdir):
    super().__init__(config, workdir)
    clip_dir = Path(config.clip_dir)
    self.vq = weights.load_vqvae(Path(config.vq_dir))
    self.text_encoder = weights.load_clip(clip_dir / "text_encoder")
    self.tokenizer = Tokenizer(clip_dir / "tokenizer")
    self.codes = self.vq.config.num_vq_embeddings
    arrays = self._token_data(Path(config.data.train), Path(config.vq_dir))
    self.tokens = arrays["tokens"]
    self.ids = np.concatenate(
      [self.tokenizer(list(arrays["caption"][i : i + 4096])) for i in range(0, len(self.tokens), 4096)]
    )
    keep = training_subset(arrays, config.data.select)
    self.tokens, self.ids = self.tokens[keep], self.ids[keep]  # the cache keeps every picture's tokens
    self.empty_ids = self.tokenizer([""])[0]
    text = self.text_encoder.config.text
    self.uvit_config = UVitConfig(
      **config.uvit.to_dict(),
      vocab_size=self.codes + 1,
      codebook_size=self.codes,
      encoder_hidden_size=text.hidden_size,
      cond_embed_dim=self.text_encoder.config.projection_dim,
      sample_size=self.tokens.shape[1],
    )
    self.text_graphdef, self.text_state = nnx.split(self.text_encoder)

  def _token_data(self, train: Path, vq_dir: Path) -> dict:
    """The training set as VQ tokens + captions + labels, made from the pictures once and cached in the workdir
    (workdir/tokens.npz). Once it exists the pictures are never opened, so a run can go on where only the
    workdir travels (a GPU machine: 60,000 pictures' tokens are 6-12 MB compressed, their pixels 740 MB)."""
    cache = self.workdir / "tokens.npz"
    fingerprint = encoder_fingerprint(vq_dir)
    if cache.is_file():
      arrays = files.load_arrays(cache)
      if str(arrays.pop("encoder_fingerprint")) != fingerprint:
        raise ValueError(
          f"{cache} holds tokens of another VQ encoder than {vq_dir}'s; use another workdir or delete the file"
        )
      return arrays
    if not train.is_file():
      raise FileNotFoundError(
        f"data.train={train} does not exist and {cache} is not there yet; render the pictures with "
        "the data set as the config's docstring says"
      )
    arrays = files.load_arrays(train)
    images = arrays.pop("images")
    encode = frozen_jit(lambda vq, x: vq.encode(x.astype(jnp.float32) / 255.0), self.vq)
    chunks = range(0, len(images), 512)
    tokens = np.concatenate([np.asarray(encode(images[i : i + 512])) for i in tqdm(chunks, desc="VQ tokens")])
    arrays["tokens"] = tokens.astype(np.int16)
    if distributed.is_writer():  # every process encoded the same tokens; one writes them
      files.save_arrays({**arrays, "encoder_fingerprint": np.asarray(fingerprint)}, cache, compressed=True)
    return arrays

  def build(self, rngs):
    model = UVit2DModel(self.uvit_config, rngs=rngs)
    if self.c.init_from:
      warm_start(model, Path(self.c.init_from), fresh=tuple(self.c.init_fresh))
    return model

  def frozen_state(self):
    return self.text_state

  def host_batches(self, rng, steps):
    idx = self.pick(rng, steps, len(self.tokens))
    ids = self.ids[idx]
    drop = rng.random(idx.shape) < self.c.text_dropout
    ids = np.where(drop[..., None], self.empty_ids, ids)
    return {"tokens": self.tokens[idx].astype(np.int32), "ids": ids}

  def loss(self, model, batch, extra, frozen, rng):
    out, pooled = nnx.merge(self.text_graphdef, frozen).encode_text(batch["ids"])
    side = self.tokens.shape[1] * self.vq.config.downscale
    micro = micro_conds(batch["ids"].shape[0], side, side)
    mask_id = self.uvit_config.mask_token_id
    return masked_loss(model, batch["tokens"], out.penultimate_BTD, pooled, micro, None, rng, mask_id), {}

  def export(self, model, out: Path) -> Path:
    """out/shapes_base: the whole base directory in the diffusers layout, half precision."""
    pipe = Pipeline(model, self.vq, self.text_encoder, self.tokenizer, mask_token_id=self.codes)
    target = out / "shapes_base"
    tmp = out / "shapes_base.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, dtype=jnp.float16)
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    return target
