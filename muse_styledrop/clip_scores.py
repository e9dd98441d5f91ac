"""CLIP text and style scores: how well a picture shows its prompt, and how close it is to a style reference.

StyleDrop measures a style-tuned model with two cosines in CLIP's embedding
space (docs/method.md, "Evaluation"): the text score between a picture and
the prompt it was drawn from (its content phrase, without the style phrase),
and the style score between a picture and the style reference picture. A
collapsed model that redraws its reference scores high on style and low on
text; prompting the base scores the other way round.

Pictures go through CLIP's own preprocessing (transformers'
CLIPImageProcessor): the shorter side resized to the tower's size (bicubic),
a centre crop, then OpenAI's pixel normalisation.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from muse_styledrop import files, weights
from muse_styledrop.frozen import frozen_jit
from muse_styledrop.models.clip import clip_pixels
from muse_styledrop.tokenizer import Tokenizer


class CLIPModelError(ValueError):
  """A directory that is not a CLIP model with both towers."""


def preprocess(pictures_NHWC: np.ndarray, side: int) -> np.ndarray:
  """uint8 pictures -> uint8 [N, side, side, 3]: shorter side to `side` (PIL bicubic), centre crop."""
  out = []
  for x in np.asarray(pictures_NHWC):
    h, w = x.shape[:2]
    if (h, w) != (side, side):
      # transformers' rule: the shorter side to `side`, the longer scaled and truncated
      size = (side, int(side * h / w)) if w <= h else (int(side * w / h), side)
      picture = Image.fromarray(x).resize(size, Image.Resampling.BICUBIC)
      left, top = (size[0] - side) // 2, (size[1] - side) // 2
      x = np.asarray(picture.crop((left, top, left + side, top + side)))
    out.append(x)
  return np.stack(out)


def summary(values) -> dict:
  """{'mean', 'se' (the standard error of the mean), 'n'} of a list of numbers."""
  v = np.asarray(values, np.float64)
  se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
  return {"mean": round(float(v.mean()), 5), "se": round(se, 5), "n": len(v)}


class CLIPScorer:
  """A CLIPModel directory (both towers and its tokenizer files) turned into text and style scores."""

  def __init__(self, clip_dir: str | Path, batch_size: int = 64):
    clip_dir = files.path(clip_dir)
    if not (clip_dir / "config.json").is_file():
      raise CLIPModelError(
        f"{clip_dir} is not a CLIP model directory (no config.json); give a transformers CLIPModel directory with "
        "both towers and its tokenizer files"
      )
    clip_dir = files.local_copy(clip_dir)
    self.model = weights.load_clip(clip_dir)
    if self.model.vision_model is None or self.model.text_model is None:
      raise CLIPModelError(f"{clip_dir} lacks a text or vision tower; CLIP scores need both (a CLIPModel directory)")
    self.tokenizer = Tokenizer(clip_dir)
    self.side = self.model.config.vision.image_size
    self.batch_size = batch_size
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    self._image = frozen_jit(lambda m, x: unit(m.encode_image(clip_pixels(x))), self.model)
    self._text = frozen_jit(lambda m, ids: unit(m.encode_text(ids)[1]), self.model)

  def embed_images(self, pictures_NHWC: np.ndarray) -> np.ndarray:
    """Unit-length image embeddings [N, D] of uint8 pictures of any size."""
    x = preprocess(pictures_NHWC, self.side)
    b = self.batch_size
    chunks = []
    for i in range(0, len(x), b):  # whole batches only: one compiled shape
      chunk = x[i : i + b]
      padded = np.concatenate([chunk, np.zeros((b - len(chunk), *chunk.shape[1:]), np.uint8)])
      chunks.append(np.asarray(jax.device_get(self._image(padded)))[: len(chunk)])
    return np.concatenate(chunks)

  def embed_texts(self, texts: list[str]) -> np.ndarray:
    """Unit-length text embeddings [N, D]."""
    return np.asarray(jax.device_get(self._text(jnp.asarray(self.tokenizer(list(texts))))))

  def text_scores(self, pictures_NHWC: np.ndarray, prompts: list[str]) -> np.ndarray:
    """[N] cosine between each picture and its own prompt."""
    if len(pictures_NHWC) != len(prompts):
      raise ValueError(f"{len(pictures_NHWC)} pictures but {len(prompts)} prompts; give one prompt per picture")
    return np.sum(self.embed_images(pictures_NHWC) * self.embed_texts(prompts), axis=-1)

  def style_scores(self, pictures_NHWC: np.ndarray, references_NHWC: np.ndarray) -> np.ndarray:
    """[N] cosine between each picture and the style reference (with several, the mean over them)."""
    references = self.embed_images(references_NHWC)
    return (self.embed_images(pictures_NHWC) @ references.T).mean(axis=-1)
