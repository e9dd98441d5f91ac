"""Measured quality on the shapes world, graded by the oracle: VQ, CLIP zero-shot, base and adapter samples."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from muse_styledrop import images
from muse_styledrop.frozen import frozen_jit
from muse_styledrop.pretraining import patch_codes
from muse_styledrop.sampling import SamplingSettings
from muse_styledrop.shapes import oracle as oracle_lib
from muse_styledrop.shapes.render import SIZE as SIDE
from muse_styledrop.shapes.styles import SEEN, STYLES
from muse_styledrop.shapes.world import BACKGROUNDS, COLOURS, POSITIONS, SHAPES, Obj, Scene


def grader_or_none(directory: str | Path | None) -> oracle_lib.Grader | None:
  """The oracle in `directory` ('' = the shipped one), or None when there is none to grade with."""
  directory = Path(directory) if directory else oracle_lib.ORACLE_DIR
  return oracle_lib.Grader(oracle_lib.load(directory)) if (directory / "oracle.safetensors").is_file() else None


def _per_style(right: np.ndarray, style: np.ndarray) -> dict[str, float]:
  return {STYLES_LIST[s]: round(float(right[style == s].mean()), 4) for s in np.unique(style)}


STYLES_LIST = list(STYLES)


# ----------------------------------------------------------------------------
# VQ
# ----------------------------------------------------------------------------


def vq_quality(vq, test: dict, grader) -> dict:
  """PSNR of reconstructions (all, per style), the oracle's accuracy on originals and on reconstructions, and how
  local the tokens are."""
  rebuild = frozen_jit(lambda vq, x: jnp.clip(vq.decode(vq.encode(x / 255.0)), 0, 1) * 255.0, vq)
  images = test["images"]
  rec = np.concatenate(
    [np.asarray(rebuild(jnp.asarray(images[i : i + 256], jnp.float32))) for i in range(0, len(images), 256)]
  )
  tokens = np.asarray(vq.encode(jnp.asarray(images[:256], jnp.float32) / 255.0))
  return {
    **reconstruction_quality(np.round(rec).astype(np.uint8), tokens, test, grader),
    "tokens": list(tokens.shape[1:]),
  }


def patch_code_quality(centres: np.ndarray, p: int, test: dict, grader) -> dict:
  """vq_quality's measures for k-means patch codes pasted back (the codes an anchored VQ learns to pick)."""
  ids = patch_codes.encode(test["images"], centres, p)
  return reconstruction_quality(patch_codes.decode(ids, centres, p), ids[:256], test, grader)


def reconstruction_quality(rec: np.ndarray, tokens_256: np.ndarray, test: dict, grader) -> dict:
  images = test["images"]
  mse = ((rec.astype(np.float64) - images) ** 2).reshape(len(images), -1).mean(1)
  psnr = 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))
  out = {
    "psnr": round(float(psnr.mean()), 2),
    "psnr_per_style": {
      STYLES_LIST[s]: round(float(psnr[test["style"] == s].mean()), 2) for s in np.unique(test["style"])
    },
    # how local the tokens are: a masked token filled with the commonest of its visible neighbours
    "neighbour_majority": patch_codes.neighbour_majority(np.asarray(tokens_256).astype(np.int64)),
  }
  if grader is not None:
    out["oracle_on_originals"] = label_accuracy(grader(images), test)
    out["oracle_on_reconstructions"] = label_accuracy(grader(rec), test)
  return out


def label_accuracy(pred: dict, arrays: dict) -> dict:
  """shape / colour (single-object pictures) / style accuracy, and the worst style's style accuracy."""
  single = arrays["objects"] == 1
  style_right = pred["style"] == arrays["style"]
  per_style = _per_style(style_right, arrays["style"])
  return {
    "shape": round(float((pred["shape"] == arrays["shape"])[single].mean()), 4),
    "colour": round(float((pred["colour"] == arrays["colour"])[single].mean()), 4),
    "style": round(float(style_right.mean()), 4),
    "worst_style": min((v, k) for k, v in per_style.items()),
    "per_style": per_style,
  }


# ----------------------------------------------------------------------------
# CLIP
# ----------------------------------------------------------------------------


def clip_zero_shot(model, tokenizer, test: dict) -> dict:
  """Zero-shot accuracy on single-object pictures: each class's text embedding is the mean over prompt variants."""
  from muse_styledrop.models.clip import clip_pixels  # noqa: PLC0415

  text_fn = frozen_jit(lambda clip, ids: clip.encode_text(ids)[1], model)
  image_fn = frozen_jit(lambda clip, x: clip.encode_image(clip_pixels(x)), model)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  grid = [(s, c, st) for s in SHAPES for c in COLOURS for st in STYLES]
  prompts = [f"a {c} {s} {STYLES[st]}" for s, c, st in grid]
  text = unit(
    np.concatenate([np.asarray(text_fn(tokenizer(prompts[i : i + 512]))) for i in range(0, len(prompts), 512)])
  )
  text = text.reshape(len(SHAPES), len(COLOURS), len(STYLES), -1)
  single = test["objects"] == 1
  images = test["images"][single]
  img = unit(
    np.concatenate([np.asarray(image_fn(jnp.asarray(images[i : i + 256]))) for i in range(0, len(images), 256)])
  )
  out = {}
  for name, axes, labels in (
    ("shape", (1, 2), test["shape"]),
    ("colour", (0, 2), test["colour"]),
    ("style", (0, 1), test["style"]),
  ):
    classes = unit(text.mean(axis=axes))
    out[name] = round(float(np.mean(np.argmax(img @ classes.T, -1) == labels[single])), 4)
  return out


# ----------------------------------------------------------------------------
# Samples
# ----------------------------------------------------------------------------


def eval_scenes(count: int, seed: int, avoid: tuple[str, str] | None = None) -> list[Scene]:
  """`count` single-object scenes, medium or large, drawn reproducibly; with `avoid` = (shape, colour), none has that
  shape or that colour (the new content a style is judged on)."""
  rng = np.random.default_rng(seed)
  shapes = [s for s in SHAPES if not avoid or s != avoid[0]]
  colours = [c for c in COLOURS if not avoid or c != avoid[1]]
  scenes = []
  for i in range(count):
    shape, colour = shapes[i % len(shapes)], colours[rng.integers(len(colours))]
    size = ("medium", "large")[rng.integers(2)]
    position = list(POSITIONS)[rng.integers(len(POSITIONS))] if size == "medium" else "center"
    scenes.append(Scene((Obj(shape, colour, size, position),), list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]))
  return scenes


def oracle_reads(pictures: np.ndarray, grader) -> list[str]:
  """What the oracle sees in each picture, 'shape colour style' (evaluation.json lists one per prompt)."""
  pred = grader(pictures)
  names = {"shape": SHAPES, "colour": list(COLOURS), "style": STYLES_LIST}  # read_reference splits in this order
  return [" ".join(names[k][int(pred[k][i])] for k in names) for i in range(len(pictures))]


def grade(pictures: np.ndarray, scenes: list[Scene], styles: list[str] | None, grader) -> dict:
  """Accuracy of generated pictures against what their prompts asked for (content = shape and colour both right),
  each with its binomial standard error; style only where `styles` names the world's styles to find."""
  pred = grader(pictures)
  shape = pred["shape"] == np.asarray([SHAPES.index(s.objects[0].shape) for s in scenes])
  colour = pred["colour"] == np.asarray([list(COLOURS).index(s.objects[0].colour) for s in scenes])
  se = lambda right: round(float(np.sqrt(right.mean() * (1 - right.mean()) / len(right))), 4)
  out = {
    "content_accuracy": round(float((shape & colour).mean()), 4),
    "content_accuracy_se": se(shape & colour),
    "shape_accuracy": round(float(shape.mean()), 4),
    "colour_accuracy": round(float(colour.mean()), 4),
    "count": len(scenes),
  }
  if styles is not None:
    style = pred["style"] == np.asarray([STYLES_LIST.index(s) for s in styles])
    out.update(style_accuracy=round(float(style.mean()), 4), style_accuracy_se=se(style))
  return out


# name: sampling settings of the base alone. aMUSEd's defaults, and drawing conditionally without confidence noise
# near the likeliest token, which small bases need to draw clean pictures (docs/research/blob_bases.md).
BASE_SAMPLERS = {
  "default": SamplingSettings(
    steps=12, temperature=(4.5, 0.0), token_temperature=1.0, guidance_scale=3.0, lambda_a=0.0, lambda_b=0.0
  ),
  "likeliest": SamplingSettings(
    steps=12, temperature=(0.0, 0.0), token_temperature=0.1, guidance_scale=0.0, lambda_a=0.0, lambda_b=0.0
  ),
}


def base_quality(pipe, grader, count: int = 200, seed: int = 0, steps: int = 12, samplers=None) -> dict:
  """The base's own samples for `count` prompts of seen styles, graded by the oracle, under each sampler
  (BASE_SAMPLERS by default): the default sampler's grades at the top level, every sampler's under 'samplers'."""
  if grader is None:
    return {"oracle": "missing: train one with python -m muse_styledrop.shapes.oracle"}
  from muse_styledrop.shapes.render import caption  # noqa: PLC0415

  scenes = eval_scenes(count, seed)
  styles = [SEEN[i % len(SEEN)] for i in range(count)]
  prompts = [caption(s, st) for s, st in zip(scenes, styles, strict=True)]
  out = {}
  for name, settings in (samplers or BASE_SAMPLERS).items():
    settings = settings.replace(steps=steps)
    pictures = pipe.draw(prompts, settings, seed=seed)
    out[name] = {**grade(pictures, scenes, styles, grader), "settings": settings.to_dict()}
  first = next(iter(out.values()))
  return {**first, "steps": steps, "samplers": out}


def read_reference(grader, path) -> dict:
  """What the oracle sees in a reference picture: {'shape', 'colour', 'style'} names, and 'style_confidence', the
  oracle's probability for that style averaged over the picture's eight rotations and mirror images."""
  picture = images.load_image(path, SIDE)
  (read,) = oracle_reads(picture[None], grader)
  views = [np.rot90(picture, k)[:, ::flip] for k in range(4) for flip in (1, -1)]
  confidence = float(grader(np.stack(views))["style_confidence"].mean())
  names = dict(zip(("shape", "colour", "style"), read.split(), strict=True))
  return {**names, "style_confidence": round(confidence, 4)}
