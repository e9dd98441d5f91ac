"""The VQ tokenizer's objective: L1 + L2 reconstruction, codebook and commitment losses, dead-code restarts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from muse_styledrop import distributed, files, weights
from muse_styledrop.models.vq import VQConfig, VQModel, squared_distances
from muse_styledrop.pretraining import patch_codes
from muse_styledrop.pretraining.objective import Objective


def _key(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


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
    self.images = files.load_arrays(Path(config.data.train))["images"]
    self.vq_config = VQConfig(**{**config.vq.to_dict(), "block_out_channels": tuple(config.vq.block_out_channels)})
    self.codes = self.vq_config.num_vq_embeddings
    quantizer = config.quantizer
    if quantizer not in ("vq", "fsq", "patch_kmeans"):
      raise ValueError(
        f"quantizer={quantizer!r}; use 'vq' (learned codebook), 'fsq' (fixed grid) or 'patch_kmeans' (anchored)"
      )
    self.fsq = quantizer == "fsq"
    self.anchored = quantizer == "patch_kmeans"
    if config.train not in ("all", "decoder"):
      raise ValueError(f"train={config.train!r}; use 'all' or 'decoder' (with init_from, a trained VQ directory)")
    self.decoder_only = config.train == "decoder"
    if self.decoder_only:
      if not config.init_from:
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
      init = config.init_from
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
    if distributed.is_writer():  # every process computed the same codes; one writes them
      files.save_arrays({"centres": centres, "ids": ids}, cache)
    return ids

  def build(self, rngs):
    if self.c.init_from:
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
    logits = -squared_distances(z, codes_KD) / self.c.code_temperature
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
