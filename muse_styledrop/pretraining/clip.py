"""CLIP's objective: contrastive text and image towers, with a tokenizer built for the training captions."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from muse_styledrop import distributed, files, weights
from muse_styledrop.models.clip import CLIPConfig, CLIPModel, TowerConfig, clip_pixels
from muse_styledrop.pretraining.objective import Objective
from muse_styledrop.prompts import prompt_set
from muse_styledrop.tokenizer import Tokenizer, build_clip_tokenizer


def caption_words(captions, phrases=()) -> list[str]:
  """Every word of the captions and of `phrases` (text the model must know that no caption holds, e.g. the style
  phrases of styles held out of the pictures), lower-cased and sorted."""
  words = {w for text in (*captions, *phrases) for w in re.findall(r"[a-z0-9]+", str(text).lower())}
  return sorted(words)


LOCKED_TEXT = ("text_model", "text_projection")  # the weights config.locked_text keeps


class CLIPObjective(Objective):
  def __init__(self, config, workdir):
    super().__init__(config, workdir)
    arrays = files.load_arrays(Path(config.data.train))
    self.images = arrays["images"]
    if config.hard_negatives:  # the file's shape groups (shapes.dataset --group): only the shape differs
      if "group" not in arrays:
        raise ValueError(
          f"hard_negatives needs a file of shape groups; {config.data.train} has none "
          "(render one with python -m muse_styledrop.shapes.dataset --group=G)"
        )
      self.groups = np.unique(arrays["group"], return_inverse=True)[1]
    c = config.clip
    vision = TowerConfig(**c.vision.to_dict(), image_size=self.images.shape[1])
    self.locked = {}
    if config.locked_text:  # a base's text tower and tokenizer, kept as they are: the image tower learns to meet them
      base = Path(config.locked_text)
      self.tokenizer = Tokenizer(base / "tokenizer")
      text = weights.load_clip(base / "text_encoder")
      self.locked = {k: (np.asarray(v), base / "text_encoder") for k, v in weights.state_dict(text).items()}
      self.clip_config = CLIPConfig(
        text=text.config.text, vision=vision, projection_dim=text.config.projection_dim, with_logit_scale=True
      )
      self.trainable = nnx.All(nnx.Param, *(nnx.Not(nnx.PathContains(t)) for t in LOCKED_TEXT))
    else:
      tok_dir = self.workdir / "tokenizer"
      if (tok_dir / "vocab.json").is_file():
        self.tokenizer = Tokenizer(tok_dir)
      else:  # every process builds the same tokenizer; one writes it into the workdir
        words = caption_words(
          arrays["caption"], prompt_set(config.vocabulary_prompts) if config.vocabulary_prompts else ()
        )
        kept = files.atomic_folder(tok_dir) if distributed.is_writer() else tempfile.TemporaryDirectory()
        with kept as folder:
          build_clip_tokenizer(words, Path(folder), max_length=config.max_length)
          self.tokenizer = Tokenizer(Path(folder))
    self.ids = np.concatenate(
      [self.tokenizer(list(arrays["caption"][i : i + 4096])) for i in range(0, len(self.images), 4096)]
    )
    eos = self.tokenizer._tok.eos_token_id
    if not (self.ids == eos).any(axis=1).all():
      raise ValueError(f"the tokenizer's length {self.tokenizer.max_length} truncates some captions; raise it")
    if not self.locked:
      text = TowerConfig(
        **c.text.to_dict(),
        vocab_size=self.tokenizer.vocab_size,
        max_position_embeddings=config.max_length,
        eos_token_id=eos,
        bos_token_id=self.tokenizer._tok.bos_token_id,
        pad_token_id=self.tokenizer._tok.pad_token_id,
      )
      self.clip_config = CLIPConfig(text=text, vision=vision, projection_dim=c.projection_dim, with_logit_scale=True)

  def build(self, rngs):
    model = CLIPModel(self.clip_config, rngs=rngs)
    if self.locked:
      weights.load_params(
        model, self.locked, "locked text tower", keep_missing=("vision_model", "visual_projection", "logit_scale")
      )
    return model

  def pick(self, rng, steps, n):
    """Random pictures; with config.hard_negatives = g, each batch is whole shape groups of g pictures that differ
    only in shape, so that the towers must tell shapes apart (and the other groups of the batch, the rest)."""
    g = self.c.hard_negatives
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
