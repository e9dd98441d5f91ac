"""Render shapes-world pictures: deterministic per (scene, style, seed), 64x64 RGB, with captions and labels."""

from __future__ import annotations

import dataclasses

import numpy as np

from muse_styledrop.shapes.geometry import shape_sdf
from muse_styledrop.shapes.styles import HELD_OUT, RENDERERS, SEEN, STYLES, Canvas
from muse_styledrop.shapes.world import BACKGROUNDS, COLOURS, POSITIONS, SHAPES, SIZES, Scene, random_scene

SIZE = 64
SUPERSAMPLE = 4


def render(scene: Scene, style: str, seed: int, size: int = SIZE) -> np.ndarray:
  """The scene drawn in `style`: uint8 (size, size, 3). The same arguments give the same pixels."""
  if style not in RENDERERS:
    raise ValueError(f"unknown style {style!r}; the world has {', '.join(STYLES)}")
  n = size * SUPERSAMPLE
  t = (np.arange(n) + 0.5) / n
  x, y = np.meshgrid(t, t)
  rng = np.random.default_rng(seed)
  sdfs, colours, centres, radii = [], [], [], []
  for o in scene.objects:
    cx, cy = POSITIONS[o.position]
    r = SIZES[o.size]
    sdfs.append(shape_sdf(o.shape, x, y, cx, cy, r))
    colours.append(np.asarray(COLOURS[o.colour], np.float64) / 255)
    centres.append((cx, cy))
    radii.append(r)
  canvas = Canvas(n, x, y, sdfs, colours, centres, radii, np.asarray(BACKGROUNDS[scene.background]) / 255, rng)
  image = RENDERERS[style](canvas)
  image = image.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))
  return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def caption(scene: Scene, style: str | None) -> str:
  """The scene's content, followed by the style phrase when given."""
  return scene.content() + (f" {STYLES[style]}" if style else "")


@dataclasses.dataclass(frozen=True)
class Example:
  image: np.ndarray
  scene: Scene
  style: str
  caption: str


def example(seed: int, styles: tuple[str, ...] = SEEN, style_in_caption_p: float = 0.85) -> Example:
  """A random picture of one of `styles`, its scene, and a caption that names the style most of the time."""
  rng = np.random.default_rng(seed)
  scene = random_scene(rng)
  style = str(rng.choice(styles))
  named = rng.random() < style_in_caption_p
  return Example(render(scene, style, seed), scene, style, caption(scene, style if named else None))


def shape_group(seed: int, size: int, styles: tuple[str, ...] = SEEN) -> list[Example]:
  """`example(seed)`'s picture redrawn with `size` different shapes for its first object: the same style, texture
  seed, colours, places and background, so only the shape tells the pictures (and their captions) apart. CLIP's
  hard negatives."""
  base = example(seed, styles)
  first = base.scene.objects[0]
  others = [s for s in SHAPES if s != first.shape]
  picked = np.random.default_rng([seed, 1]).choice(others, size - 1, replace=False)
  group = [base]
  named = base.caption.endswith(STYLES[base.style])
  for shape in picked:
    scene = dataclasses.replace(
      base.scene, objects=(dataclasses.replace(first, shape=str(shape)), *base.scene.objects[1:])
    )
    group.append(
      Example(render(scene, base.style, seed), scene, base.style, caption(scene, base.style if named else None))
    )
  return group


__all__ = ["HELD_OUT", "SEEN", "STYLES", "Example", "caption", "example", "render", "shape_group"]
