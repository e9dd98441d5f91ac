"""What each component of the embedded base learns from the shapes world, for `muse_styledrop.pretrain`.

An objective builds its model, draws host batches (stacked for a scan of
steps), gives the loss, optionally edits the weights after an update (the VQ's
dead-code restarts), exports the result in the diffusers/transformers layout
and measures it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from muse_styledrop import weights
from muse_styledrop.models.clip import CLIPConfig, CLIPModel, TowerConfig, clip_pixels
from muse_styledrop.models.uvit import UVit2DModel, UVitConfig
from muse_styledrop.models.vq import VQConfig, VQModel, squared_distances
from muse_styledrop.shapes import dataset, grading, patch_codes
from muse_styledrop.shapes.styles import STYLES
from muse_styledrop.tokenizer import Tokenizer, build_clip_tokenizer


def _key(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


class Objective:
  def __init__(self, config, workdir: Path):
    self.c = config
    self.workdir = Path(workdir)

  # the weights the optimizer trains (an nnx filter); the rest stays as built and is not checkpointed
  trainable = nnx.Param

  def init_extra(self):
    return {}

  def frozen_state(self):
    return {}

  def after_update(self, params, extra, aux, rng):
    return params, extra, {}

  def pick(self, rng: np.random.Generator, steps: int, n: int):
    return rng.integers(0, n, (steps, self.c.batch_size))


# ----------------------------------------------------------------------------
# VQ tokenizer: L1 + L2 reconstruction, codebook and commitment losses, dead-code restarts
# ----------------------------------------------------------------------------


def fsq_grid(levels) -> np.ndarray:
  """Every point of a finite-scalar-quantization grid (Mentzer et al. 2023) as a (prod(levels), len(levels))
  codebook: level L of a dimension takes the values -(L-1)/2 .. (L-1)/2 in unit steps, ids in mixed radix with
  the last dimension fastest. On a product grid the nearest point in L2 is the per-dimension nearest value, so
  aMUSEd's nearest-codebook lookup (ours and diffusers') over this codebook IS finite scalar quantization."""
  axes = [np.arange(n, dtype=np.float32) - (n - 1) / 2 for n in levels]
  return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(levels))


class VQObjective(Objective):
  """A VQ autoencoder trained on random crops (it is convolutional; crops cost a quarter of full pictures).

  quantizer 'vq': a learned codebook (codebook + commitment losses, dead-code restarts). 'fsq': a fixed grid
  codebook (`fsq_grid(fsq_levels)`), which cannot collapse; only the commitment loss keeps the encoder near it.
  'patch_kmeans': the codebook is the k-means centres of the pixel patches under the tokens (shapes/patch_codes.py,
  codes of dimension 3 p^2 in pixel space, fixed), so a token depends on its own patch. The encoder learns to
  output its patch's centre (regression, plus cross-entropy over negative distances so the nearest entry is that
  centre: the k-means rule) and the decoder to draw pictures from the centres.

  train 'decoder' (with init_from, a trained VQ directory): only the decoder (and post_quant_conv) trains, on the
  loaded encoder's own codes of whole pictures. The encoder, its codebook and so every picture's tokens stay
  bitwise the same, so a transformer already trained on those tokens stays valid.
  """

  def __init__(self, config, workdir):
    super().__init__(config, workdir)
    self.images = dataset.load(Path(config.data.train))["images"]
    self.vq_config = VQConfig(**{**config.vq.to_dict(), "block_out_channels": tuple(config.vq.block_out_channels)})
    self.codes = self.vq_config.num_vq_embeddings
    quantizer = config.get("quantizer", "vq")
    if quantizer not in ("vq", "fsq", "patch_kmeans"):
      raise ValueError(
        f"quantizer={quantizer!r}; use 'vq' (learned codebook), 'fsq' (fixed grid) or 'patch_kmeans' (anchored)"
      )
    self.fsq = quantizer == "fsq"
    self.anchored = quantizer == "patch_kmeans"
    if config.get("train", "all") not in ("all", "decoder"):
      raise ValueError(f"train={config.train!r}; use 'all' or 'decoder' (with init_from, a trained VQ directory)")
    self.decoder_only = config.get("train", "all") == "decoder"
    if self.decoder_only:
      if not config.get("init_from"):
        raise ValueError("train='decoder' needs init_from: the trained VQ directory whose encoder stays fixed")
      self.trainable = nnx.All(nnx.Param, nnx.Any(nnx.PathContains("decoder"), nnx.PathContains("post_quant_conv")))
      self.fsq = self.anchored = False  # the loaded codebook is used as it is: no grid, no k-means fit
      return
    if self.anchored:
      self.patch = self.vq_config.downscale
      if config.crop % self.patch:
        raise ValueError(f"crop={config.crop} must be a multiple of the tokenizer's downscale {self.patch}")
      if self.vq_config.embed_dim != 3 * self.patch**2:
        raise ValueError(
          f"quantizer 'patch_kmeans' keeps the codes in pixel-patch space: vq_embed_dim must be "
          f"3 x {self.patch} x {self.patch} = {3 * self.patch**2}, not {self.vq_config.embed_dim}"
        )
      # Continuing an anchored VQ (init_from): its codebook is the anchor, so each patch's target is its nearest
      # code there; a fresh VQ fits k-means to the pictures.
      init = config.get("init_from")
      fixed = weights.load_vqvae(Path(init)).quantize.embedding.embedding[...] if init else None
      self.patch_ids = self._patch_ids(None if fixed is None else np.asarray(fixed, np.float32))
    if self.fsq:
      levels = tuple(config.fsq_levels)
      if int(np.prod(levels)) != self.codes or len(levels) != self.vq_config.embed_dim:
        raise ValueError(
          f"fsq_levels={levels} give {int(np.prod(levels))} codes of dimension {len(levels)}, but vq has "
          f"num_vq_embeddings={self.codes} and vq_embed_dim={self.vq_config.embed_dim}; make them agree"
        )

  def _patch_ids(self, centres: np.ndarray | None = None):
    """The anchored code of every patch of every training picture, cached: the nearest of `centres`, or of k-means
    centres fitted to the pictures when None."""
    cache = self.workdir / "patch_codes.npz"
    if cache.is_file():
      with np.load(cache) as f:
        want = (self.codes, 3 * self.patch**2)
        if f["centres"].shape != want or f["ids"].shape[0] != len(self.images):
          raise ValueError(
            f"{cache} holds {f['centres'].shape[0]} codes of {f['centres'].shape[1]} values for "
            f"{f['ids'].shape[0]} pictures, but this config needs {want[0]} of {want[1]} for {len(self.images)}; "
            "use another workdir or delete the file"
          )
        if centres is not None and not np.array_equal(f["centres"], centres):
          raise ValueError(f"{cache} was made for another codebook than init_from's; use another workdir")
        return f["ids"]
    if centres is None:
      n = min(len(self.images), self.c.kmeans_pictures)
      centres, _ = patch_codes.patch_kmeans(self.images[:n], self.patch, codes=self.codes, iters=self.c.kmeans_iters)
    ids = np.concatenate(
      [patch_codes.encode(self.images[i : i + 2048], centres, self.patch) for i in range(0, len(self.images), 2048)]
    ).astype(np.int16)
    self.workdir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, centres=centres, ids=ids)
    tmp.replace(cache)
    return ids

  def build(self, rngs):
    if self.c.get("init_from"):
      model = weights.load_vqvae(Path(self.c.init_from))
      # exports widen narrow codes to latent_channels with zeros (padded_codes), so the code width is not compared
      if dataclasses.replace(model.config, vq_embed_dim=None) != dataclasses.replace(self.vq_config, vq_embed_dim=None):
        raise ValueError(
          f"init_from={self.c.init_from} holds a VQ with {model.config}, but config.vq asks for {self.vq_config}; "
          "make config.vq match the directory"
        )
      return model
    model = VQModel(self.vq_config, rngs=rngs)
    if self.fsq:
      model.quantize.embedding.embedding.set_value(jnp.asarray(fsq_grid(self.c.fsq_levels)))
    if self.anchored:  # the codebook IS the k-means centres, in pixel-patch space: it stays fixed
      with np.load(self.workdir / "patch_codes.npz") as f:
        model.quantize.embedding.embedding.set_value(jnp.asarray(f["centres"], jnp.float32))
    return model

  def init_extra(self):
    return {"usage": jnp.zeros((self.codes,), jnp.float32)}  # 'vq': all "dead", the first step fills the codebook

  def host_batches(self, rng, steps):
    idx = self.pick(rng, steps, len(self.images))
    crop = self.c.crop
    side = self.images.shape[1]
    if self.anchored:  # crops on the token grid, so each token's patch is one of the anchored ones
      p = self.patch
      offsets = rng.integers(0, (side - crop) // p + 1, (*idx.shape, 2)) * p
    else:
      offsets = rng.integers(0, side - crop + 1, (*idx.shape, 2))
    out = np.empty((*idx.shape, crop, crop, 3), np.uint8)
    for s, b in np.ndindex(idx.shape):
      y, x = offsets[s, b]
      out[s, b] = self.images[idx[s, b], y : y + crop, x : x + crop]
    if not self.anchored:
      return {"images": out}
    ids = np.empty((*idx.shape, crop // p, crop // p), np.int32)
    for s, b in np.ndindex(idx.shape):
      y, x = offsets[s, b] // p
      ids[s, b] = self.patch_ids[idx[s, b], y : y + crop // p, x : x + crop // p]
    return {"images": out, "ids": ids}

  def loss(self, model, batch, extra, frozen, rng):
    if self.decoder_only:
      return self.decoder_loss(model, batch)
    if self.anchored:
      return self.anchored_loss(model, batch)
    x = batch["images"].astype(jnp.float32) / 255.0
    z = model.quant_conv(model.encoder(x))
    ids = model.quantize.nearest(z)
    q = model.quantize.lookup(ids)
    if self.fsq:
      q = jax.lax.stop_gradient(q)  # the grid is fixed
    rec = model.decoder(model.post_quant_conv(z + jax.lax.stop_gradient(q - z)))  # straight-through
    l1, l2 = jnp.mean(jnp.abs(rec - x)), jnp.mean((rec - x) ** 2)
    codebook = 0.0 if self.fsq else jnp.mean((jax.lax.stop_gradient(z) - q) ** 2)
    commit = jnp.mean((z - jax.lax.stop_gradient(q)) ** 2)
    loss = l1 + l2 + codebook + self.c.commitment * commit
    return loss, {"ids": ids, "z": jax.lax.stop_gradient(z), "metrics": {"l1": l1, "psnr": -10 * jnp.log10(l2)}}

  def anchored_loss(self, model, batch):
    """Reconstruction from the anchored codes + cross-entropy making each anchored code the nearest entry."""
    x = batch["images"].astype(jnp.float32) / 255.0
    target = batch["ids"]
    z = model.quant_conv(model.encoder(x)).astype(jnp.float32)
    codes_KD = jax.lax.stop_gradient(model.quantize.embedding.embedding[...].astype(jnp.float32))  # fixed centres
    # Pixel-patch centres are close (the shipped 2x2 codes: a median squared distance of 0.08 to the nearest other),
    # so at temperature 1 the softmax over them is nearly flat; a small temperature makes the cross-entropy tell them
    # apart.
    logits = -squared_distances(z, codes_KD) / self.c.get("code_temperature", 1.0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()
    q = codes_KD[target]
    commit = jnp.mean((z - q) ** 2)  # the encoder's output onto its anchored code (its patch's centre)
    rec = model.decoder(model.post_quant_conv(q))
    l1, l2 = jnp.mean(jnp.abs(rec - x)), jnp.mean((rec - x) ** 2)
    ids = jnp.argmax(logits, -1)
    metrics = {"l1": l1, "psnr": -10 * jnp.log10(l2), "code_ce": ce, "code_accuracy": jnp.mean(ids == target)}
    loss = l1 + l2 + self.c.code_weight * ce + self.c.commitment * commit
    return loss, {"ids": ids, "z": jax.lax.stop_gradient(z), "metrics": metrics}

  def decoder_loss(self, model, batch):
    """Reconstruction from the fixed encoder's own codes: the decoder learns to draw what the tokens say."""
    x = batch["images"].astype(jnp.float32) / 255.0
    ids = model.quantize.nearest(model.quant_conv(model.encoder(x)))
    q = model.quantize.lookup(ids)
    rec = model.decoder(model.post_quant_conv(q))
    l1, l2 = jnp.mean(jnp.abs(rec - x)), jnp.mean((rec - x) ** 2)
    return l1 + l2, {"ids": ids, "z": q, "metrics": {"l1": l1, "psnr": -10 * jnp.log10(l2)}}

  def after_update(self, params, extra, aux, rng):
    """Codes unused for a while (usage EMA below a fraction of uniform) restart at random encoder outputs."""
    k = self.codes
    ids = aux["ids"].reshape(-1)
    z = aux["z"].reshape(-1, aux["z"].shape[-1])
    usage = self.c.usage_decay * extra["usage"] + (1 - self.c.usage_decay) * jnp.bincount(ids, length=k) / ids.size
    probs = usage / jnp.maximum(usage.sum(), 1e-10)
    perplexity = jnp.exp(-jnp.sum(probs * jnp.log(probs + 1e-10)))
    if self.fsq or self.anchored or self.decoder_only:  # a fixed grid, anchored codes, or a fixed encoder
      return params, {"usage": usage}, {"perplexity": perplexity}
    dead = usage < self.c.dead_fraction / k
    fresh = z[jax.random.randint(rng, (k,), 0, z.shape[0])]

    def restart(path, x):
      return jnp.where(dead[:, None], fresh, x) if _key(path).startswith("quantize/embedding/embedding") else x

    params = jax.tree_util.tree_map_with_path(restart, params)
    return params, {"usage": jnp.where(dead, 1.0 / k, usage)}, {"restarted": dead.sum(), "perplexity": perplexity}

  def export(self, model, out: Path) -> Path:
    weights.save_vqvae(padded_codes(model), out / "vqvae")
    return out / "vqvae"

  def evaluate(self, model) -> dict:
    test = dataset.load(Path(self.c.data.test))
    grader = grading.grader_or_none(self.c.oracle)
    quality = grading.vq_quality(model, test, grader)
    if self.anchored:  # the codes it learned to pick, pasted back: its encoder's ceiling
      with np.load(self.workdir / "patch_codes.npz") as f:
        quality["patch_codes"] = grading.patch_code_quality(f["centres"], self.patch, test, grader)
    return quality


def padded_codes(vq: VQModel) -> VQModel:
  """The same tokenizer with vq_embed_dim = latent_channels, which diffusers' AmusedPipeline needs.

  Its decode reshapes codebook vectors to latent_channels, so codes narrower than the latents (ours train in 8
  dimensions: low-dimensional codes are used more evenly) break it. Padding codes, quant_conv's outputs and
  post_quant_conv's inputs with zeros changes no distance and no output: the ids and pictures are exactly the same.
  """
  c = vq.config
  if c.embed_dim == c.latent_channels:
    return vq
  wide = VQModel(dataclasses.replace(c, vq_embed_dim=None), rngs=nnx.Rngs(0))
  nnx.update(wide, nnx.state(vq))  # everything but the three resized tensors is unchanged
  pad = c.latent_channels - c.embed_dim
  q_kernel = vq.quant_conv.kernel[...]  # (1, 1, latent, embed)
  wide.quant_conv.kernel.set_value(jnp.pad(q_kernel, ((0, 0), (0, 0), (0, 0), (0, pad))))
  wide.quant_conv.bias.set_value(jnp.pad(vq.quant_conv.bias[...], (0, pad)))
  wide.quantize.embedding.embedding.set_value(jnp.pad(vq.quantize.embedding.embedding[...], ((0, 0), (0, pad))))
  p_kernel = vq.post_quant_conv.kernel[...]  # (1, 1, embed, latent)
  wide.post_quant_conv.kernel.set_value(jnp.pad(p_kernel, ((0, 0), (0, 0), (0, pad), (0, 0))))
  return wide


# ----------------------------------------------------------------------------
# CLIP: contrastive text and image towers, with a tokenizer built for the world
# ----------------------------------------------------------------------------


def world_words(captions) -> list[str]:
  words = {w for c in captions for w in re.findall(r"[a-z0-9]+", str(c).lower())}
  words |= {w for p in STYLES.values() for w in re.findall(r"[a-z0-9]+", p)}
  return sorted(words)


class CLIPObjective(Objective):
  def __init__(self, config, workdir):
    super().__init__(config, workdir)
    arrays = dataset.load(Path(config.data.train))
    self.images = arrays["images"]
    if config.get("hard_negatives", 0):  # the file's shape groups (shapes.dataset --group): only the shape differs
      if "group" not in arrays:
        raise ValueError(
          f"hard_negatives needs a file of shape groups; {config.data.train} has none "
          "(render one with python -m muse_styledrop.shapes.dataset --group=G)"
        )
      self.groups = np.unique(arrays["group"], return_inverse=True)[1]
    tok_dir = self.workdir / "tokenizer"
    if not (tok_dir / "vocab.json").is_file():
      build_clip_tokenizer(world_words(arrays["caption"]), tok_dir, max_length=config.max_length)
    self.tokenizer = Tokenizer(tok_dir)
    self.ids = np.concatenate(
      [self.tokenizer(list(arrays["caption"][i : i + 4096])) for i in range(0, len(self.images), 4096)]
    )
    eos = self.tokenizer._tok.eos_token_id
    if not (self.ids == eos).any(axis=1).all():
      raise ValueError(f"config.max_length={config.max_length} truncates some captions; raise it")
    c = config.clip
    self.clip_config = CLIPConfig(
      text=TowerConfig(
        **c.text.to_dict(),
        vocab_size=self.tokenizer.vocab_size,
        max_position_embeddings=config.max_length,
        eos_token_id=eos,
      ),
      vision=TowerConfig(**c.vision.to_dict(), image_size=self.images.shape[1]),
      projection_dim=c.projection_dim,
      with_logit_scale=True,
    )

  def build(self, rngs):
    return CLIPModel(self.clip_config, rngs=rngs)

  def pick(self, rng, steps, n):
    """Random pictures; with config.hard_negatives = g, each batch is whole shape groups of g pictures that differ
    only in shape, so that the towers must tell shapes apart (and the other groups of the batch, the rest)."""
    g = self.c.get("hard_negatives", 0)
    if not g:
      return super().pick(rng, steps, n)
    sizes = np.bincount(self.groups)
    if self.c.batch_size % g or (sizes != g).any():
      raise ValueError(
        f"hard_negatives={g}: batch_size={self.c.batch_size} must be a multiple of it and every group of "
        f"{self.c.data.train} must hold {g} pictures (they hold {sorted(set(sizes.tolist()))})"
      )
    order = np.argsort(self.groups, kind="stable").reshape(-1, g)  # row i: group i's pictures
    picked = rng.integers(0, len(order), (steps, self.c.batch_size // g))
    return order[picked].reshape(steps, self.c.batch_size)

  def host_batches(self, rng, steps):
    idx = self.pick(rng, steps, len(self.images))
    return {"images": self.images[idx], "ids": self.ids[idx]}

  def loss(self, model, batch, extra, frozen, rng):
    image = model.encode_image(clip_pixels(batch["images"]))
    _, text = model.encode_text(batch["ids"])
    image = image / jnp.linalg.norm(image, axis=-1, keepdims=True)
    text = text / jnp.linalg.norm(text, axis=-1, keepdims=True)
    logits = jnp.exp(jnp.minimum(model.logit_scale[...], np.log(100.0))) * image @ text.T
    labels = jnp.arange(logits.shape[0])
    loss = (
      optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      + optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()
    ) / 2
    return loss, {"metrics": {"batch_accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}}

  def export(self, model, out: Path) -> Path:
    """out/clip: the whole CLIPModel (+ tokenizer); out/text_encoder: CLIPTextModelWithProjection; out/tokenizer."""
    weights.save_clip(model, out / "clip")
    text_only = CLIPModel(
      CLIPConfig(text=self.clip_config.text, projection_dim=self.clip_config.projection_dim), rngs=nnx.Rngs(0)
    )
    tensors = {k: (v, out / "clip") for k, v in weights.state_dict(model).items() if k.startswith("text_")}
    weights.load_params(text_only, tensors, "text encoder")
    weights.save_clip(text_only, out / "text_encoder")
    for d in (out / "tokenizer", out / "clip"):
      self.tokenizer.save(d)
    return out

  def evaluate(self, model) -> dict:
    test = dataset.load(Path(self.c.data.test))
    return grading.clip_zero_shot(model, self.tokenizer, test)


# ----------------------------------------------------------------------------
# U-ViT: the masked-token objective of the StyleDrop trainer, conditioned on the frozen small CLIP
# ----------------------------------------------------------------------------


def encoder_fingerprint(vq_dir: Path) -> str:
  """A hash of what a VQ directory's tokens depend on: its encoder, quant_conv and codebook (not its decoder, which
  train='decoder' may change under a transformer trained on the same tokens)."""
  tensors = weights.read_tensors(weights.weight_files(vq_dir, weights.DIFFUSERS_WEIGHTS))
  h = hashlib.sha256()
  for k in sorted(k for k in tensors if k.startswith(("encoder.", "quant_conv.", "quantize."))):
    h.update(k.encode() + np.asarray(tensors[k][0]).tobytes())
  return h.hexdigest()


def select(arrays: dict, which: str, style: str = "") -> np.ndarray:
  """Indices of the training pictures to use: 'all', or 'single_large' (one medium or large object: the shape
  fills more of the picture, so less of the masked-token loss is background and texture); `style`, when given,
  keeps that style's pictures only."""
  if which == "all":
    keep = np.ones(len(arrays["objects"]), bool)
  elif which == "single_large":
    small = np.char.find(arrays["caption"].astype(str), "a small ") >= 0
    keep = (arrays["objects"] == 1) & ~small
  else:
    raise ValueError(f"data.select={which!r}; use 'all' or 'single_large'")
  if style:
    if style not in STYLES:
      raise ValueError(f"data.style={style!r} is not a style of the world; use one of {', '.join(STYLES)}")
    keep &= arrays["style"] == list(STYLES).index(style)
  return np.flatnonzero(keep)


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
    from muse_styledrop.pipeline import Pipeline  # noqa: PLC0415

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
    keep = select(arrays, config.data.get("select", "all"), config.data.get("style", ""))
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
    self._pipeline = Pipeline

  def _token_data(self, train: Path, vq_dir: Path) -> dict:
    """The training set as VQ tokens + captions + labels, made from the pictures once and cached in the workdir
    (workdir/tokens.npz). Once it exists the pictures are never opened, so a run can go on where only the
    workdir travels (a GPU machine: 60,000 pictures' tokens are 6-12 MB compressed, their pixels 740 MB)."""
    cache = self.workdir / "tokens.npz"
    fingerprint = encoder_fingerprint(vq_dir)
    if cache.is_file():
      arrays = dataset.load(cache)
      if str(arrays.pop("encoder_fingerprint")) != fingerprint:
        raise ValueError(
          f"{cache} holds tokens of another VQ encoder than {vq_dir}'s; use another workdir or delete the file"
        )
      return arrays
    if not train.is_file():
      raise FileNotFoundError(
        f"data.train={train} does not exist and {cache} is not there yet; render the pictures with "
        "python -m muse_styledrop.shapes.dataset (the config's docstring has the command)"
      )
    arrays = dataset.load(train)
    images = arrays.pop("images")
    graphdef, state = nnx.split(self.vq)
    encode = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode(x.astype(jnp.float32) / 255.0))
    chunks = range(0, len(images), 512)
    tokens = np.concatenate([np.asarray(encode(state, images[i : i + 512])) for i in tqdm(chunks, desc="VQ tokens")])
    arrays["tokens"] = tokens.astype(np.int16)
    dataset.save({**arrays, "encoder_fingerprint": np.asarray(fingerprint)}, cache, compressed=True)
    return arrays

  def build(self, rngs):
    model = UVit2DModel(self.uvit_config, rngs=rngs)
    if self.c.get("init_from"):
      warm_start(model, Path(self.c.init_from), fresh=tuple(self.c.get("init_fresh", ())))
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
    from muse_styledrop.train import masked_loss  # noqa: PLC0415

    out, pooled = nnx.merge(self.text_graphdef, frozen).encode_text(batch["ids"])
    side = self.tokens.shape[1] * self.vq.config.downscale
    micro = jnp.tile(jnp.asarray([[side, side, 0, 0, 6.0]], jnp.float32), (batch["ids"].shape[0], 1))
    mask_id = self.uvit_config.mask_token_id
    return masked_loss(model, batch["tokens"], out.penultimate_BTD, pooled, micro, None, rng, mask_id), {}

  def export(self, model, out: Path) -> Path:
    """out/shapes_base: the whole base directory in the diffusers layout, half precision."""
    pipe = self._pipeline(model, self.vq, self.text_encoder, self.tokenizer, mask_token_id=self.codes)
    target = out / "shapes_base"
    tmp = out / "shapes_base.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, dtype=jnp.float16)
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    return target

  def evaluate(self, model) -> dict:
    from muse_styledrop.pipeline import Pipeline  # noqa: PLC0415

    pipe = Pipeline.from_pretrained(self.workdir / "export" / "shapes_base")
    return grading.base_quality(pipe, grading.grader_or_none(self.c.oracle), count=self.c.eval_prompts)
