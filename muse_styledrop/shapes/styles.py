"""Twenty rendering styles of the shapes world, differing in texture, stroke, fill pattern, shading and grain.

Each style draws a Canvas (the scene's signed distance fields on a
supersampled grid) to RGB in [0, 1]. HELD_OUT styles are never shown to the
base transformer in pretraining; StyleDrop has to learn them from a picture.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# phrase for each style, as it appears in captions ("a red circle in watercolor style")
STYLES = {
  "flat": "in flat color style",
  "line_drawing": "in line drawing style",
  "diagonal_hatching": "in diagonal hatching style",
  "cross_hatching": "in cross hatching style",
  "halftone": "in halftone dots style",
  "stripes": "in striped style",
  "checker": "in checkerboard style",
  "glossy": "in glossy 3d style",
  "watercolor": "in watercolor style",
  "pixel_art": "in pixel art style",
  "neon": "in neon glow style",
  "colored_pencil": "in colored pencil sketch style",
  "mosaic": "in mosaic tile style",
  "pastel": "in soft pastel style",
  "grainy": "in grainy photo style",
  "stained_glass": "in stained glass style",
  "sticker": "in sticker style",
  "embossed": "in embossed relief style",
  "dashed": "in dashed outline style",
  "crayon": "in crayon style",
}
HELD_OUT = ("watercolor", "mosaic", "stained_glass", "neon", "crayon", "halftone")
SEEN = tuple(s for s in STYLES if s not in HELD_OUT)


@dataclasses.dataclass
class Canvas:
  """A scene on an N x N supersampled grid: per-object signed distances and colours, and the background."""

  n: int  # grid side (supersampled)
  x: np.ndarray  # pixel-centre coordinates in [0, 1], N x N
  y: np.ndarray
  sdfs: list[np.ndarray]  # per object, in units of the image side (negative inside)
  colours: list[np.ndarray]  # per object, RGB in [0, 1]
  centres: list[tuple[float, float]]
  radii: list[float]
  background: np.ndarray  # RGB in [0, 1]
  rng: np.random.Generator

  @property
  def px(self) -> float:
    """One output pixel (64 px image) in image-side units."""
    return 1.0 / 64


def coverage(sdf, soft):
  return np.clip(0.5 - sdf / soft, 0.0, 1.0)


def band(sdf, width, soft):
  return np.clip(0.5 - (np.abs(sdf) - width / 2) / soft, 0.0, 1.0)


def over(base, colour, alpha):
  alpha = alpha[..., None]
  return base * (1 - alpha) + np.asarray(colour) * alpha


def plain(c: Canvas, colour=None):
  return np.broadcast_to(np.asarray(c.background if colour is None else colour), (c.n, c.n, 3)).copy()


def smooth_noise(rng, n, cells, octaves=1):
  """Value noise in [0, 1]: a random cells x cells grid, bilinearly upsampled, summed over octaves."""
  out = np.zeros((n, n))
  amp, total = 1.0, 0.0
  for o in range(octaves):
    k = cells * 2**o
    grid = rng.random((k + 1, k + 1))
    t = np.linspace(0, k, n, endpoint=False)
    i = t.astype(int)
    f = t - i
    f = f * f * (3 - 2 * f)
    row = grid[i][:, i] * (1 - f)[None] + grid[i][:, i + 1] * f[None]
    row2 = grid[i + 1][:, i] * (1 - f)[None] + grid[i + 1][:, i + 1] * f[None]
    out += amp * (row * (1 - f)[:, None] + row2 * f[:, None])
    total += amp
    amp /= 2
  return out / total


def mix(a, b, t):
  return np.asarray(a) * (1 - t) + np.asarray(b) * t


def each(c: Canvas):
  return zip(c.sdfs, c.colours, c.centres, c.radii)


# -- the styles ----------------------------------------------------------------


def flat(c):
  img = plain(c)
  for sdf, col, *_ in each(c):
    img = over(img, col, coverage(sdf, c.px))
  return img


def line_drawing(c):
  img = plain(c, mix(c.background, (1, 1, 1), 0.6))
  for sdf, col, *_ in each(c):
    img = over(img, mix(col, (0, 0, 0), 0.25), band(sdf, 2.2 * c.px, c.px))
  return img


def _lines(u, period, duty):
  return ((u / period) % 1.0) < duty


def diagonal_hatching(c):
  img = plain(c)
  for sdf, col, *_ in each(c):
    inside = coverage(sdf, c.px)
    lines = _lines(c.x + c.y, 5 * c.px, 0.45)
    img = over(img, mix(col, c.background, 0.7), inside)
    img = over(img, col, inside * lines)
    img = over(img, col, band(sdf, 1.2 * c.px, c.px))
  return img


def cross_hatching(c):
  paper = mix(c.background, (1, 1, 1), 0.5)
  img = plain(c, paper)
  for sdf, col, *_ in each(c):
    inside = coverage(sdf, c.px)
    lines = _lines(c.x + c.y, 4 * c.px, 0.3) | _lines(c.x - c.y + 2, 4 * c.px, 0.3)
    img = over(img, mix(col, (0, 0, 0), 0.2), inside * lines)
    img = over(img, mix(col, (0, 0, 0), 0.4), band(sdf, 1.5 * c.px, c.px))
  return img


def halftone(c):
  img = plain(c, mix(c.background, (1, 1, 1), 0.3))
  period = 4 * c.px
  gx, gy = (c.x / period) % 1 - 0.5, (c.y / period) % 1 - 0.5
  dots = np.hypot(gx, gy) < 0.38
  for sdf, col, *_ in each(c):
    img = over(img, col, coverage(sdf, c.px) * dots)
  return img


def stripes(c):
  img = plain(c)
  for sdf, col, *_ in each(c):
    inside = coverage(sdf, c.px)
    img = over(img, mix(col, (1, 1, 1), 0.75), inside)
    img = over(img, col, inside * _lines(c.y, 6 * c.px, 0.5))
  return img


def checker(c):
  img = plain(c)
  cells = ((np.floor(c.x / (6 * c.px)) + np.floor(c.y / (6 * c.px))) % 2).astype(bool)
  for sdf, col, *_ in each(c):
    inside = coverage(sdf, c.px)
    img = over(img, col, inside)
    img = over(img, mix(col, (0, 0, 0), 0.45), inside * cells)
  return img


def glossy(c):
  img = plain(c)
  for sdf, col, (cx, cy), r in each(c):
    d = np.hypot(c.x - (cx - 0.35 * r), c.y - (cy - 0.35 * r)) / (1.6 * r)
    shade = np.clip(1.15 - d, 0.25, 1.15)[..., None]
    body = np.clip(np.asarray(col) * shade + 0.55 * np.clip(0.35 - d, 0, 1)[..., None], 0, 1)
    alpha = coverage(sdf, c.px)[..., None]
    img = img * (1 - alpha) + body * alpha
  return img


def watercolor(c):
  paper = mix(c.background, (1, 1, 1), 0.55) * (0.93 + 0.07 * smooth_noise(c.rng, c.n, 32))[..., None]
  img = paper
  for sdf, col, *_ in each(c):
    wobble = (smooth_noise(c.rng, c.n, 6) - 0.5) * 3 * c.px
    s = sdf + wobble
    wash = coverage(s, 3 * c.px) * (0.45 + 0.35 * smooth_noise(c.rng, c.n, 5, 2))
    rim = band(s + 0.8 * c.px, 1.2 * c.px, 2 * c.px) * 0.35
    img = img * (1 - (wash + rim)[..., None] * (1 - np.asarray(col)))  # pigment multiplies the paper
  return np.clip(img, 0, 1)


def pixel_art(c):
  lo = 16
  step = c.n // lo
  small = flat(c)[step // 2 :: step, step // 2 :: step]
  small = np.round(small * 4) / 4  # a small palette
  return np.repeat(np.repeat(small, step, 0), step, 1)


def neon(c):
  img = plain(c, np.asarray(c.background) * 0.12)
  for sdf, col, *_ in each(c):
    glow = np.exp(-np.abs(sdf) / (2.5 * c.px)) * 0.8
    img = img + glow[..., None] * np.asarray(col)
    img = over(np.clip(img, 0, 1), mix(col, (1, 1, 1), 0.7), band(sdf, 1.3 * c.px, c.px))
  return np.clip(img, 0, 1)


def colored_pencil(c):
  paper = np.asarray((0.97, 0.96, 0.93))
  img = plain(c, mix(paper, c.background, 0.15))
  strokes = np.sin((c.x * 0.8 + c.y) * 2 * np.pi / (3 * c.px) + 6 * smooth_noise(c.rng, c.n, 8)) > 0.1
  grain = c.rng.random((c.n, c.n)) > 0.35
  for sdf, col, *_ in each(c):
    inside = coverage(sdf, c.px)
    img = over(img, col, inside * strokes * grain * 0.8)
    jitter = (smooth_noise(c.rng, c.n, 12) - 0.5) * 1.5 * c.px
    img = over(img, mix(col, (0, 0, 0), 0.35), band(sdf + jitter, 1.0 * c.px, c.px) * grain)
  return img


def _voronoi(rng, x, y, count):
  """Each pixel's nearest seed, and the gap to the second nearest (0 on a cell border)."""
  from scipy.spatial import cKDTree  # noqa: PLC0415 - only two styles need it

  seeds = rng.random((count, 2))
  dist, order = cKDTree(seeds).query(np.stack([x.ravel(), y.ravel()], -1), k=2)
  return order[:, 0].reshape(x.shape), (dist[:, 1] - dist[:, 0]).reshape(x.shape), seeds


def mosaic(c):
  cell, gap, seeds = _voronoi(c.rng, c.x, c.y, 260)
  flat_img = flat(c)
  sx = np.clip((seeds[:, 0] * c.n).astype(int), 0, c.n - 1)
  sy = np.clip((seeds[:, 1] * c.n).astype(int), 0, c.n - 1)
  tile = flat_img[sy, sx] * (0.85 + 0.3 * c.rng.random((len(seeds), 1)))
  img = np.clip(tile[cell], 0, 1)
  return over(img, (0.35, 0.33, 0.3), np.clip(1.2 - gap / (0.6 * c.px), 0, 1))


def pastel(c):
  img = plain(c, mix(c.background, (1, 1, 1), 0.5))
  for sdf, col, *_ in each(c):
    img = over(img, mix(col, (1, 1, 1), 0.45), coverage(sdf, 2.5 * c.px))
  return img


def grainy(c):
  img = flat(c)
  vignette = 1 - 0.45 * (np.hypot(c.x - 0.5, c.y - 0.5) / 0.7) ** 2
  noise = c.rng.normal(0, 0.12, (c.n // 4, c.n // 4, 1)).repeat(4, 0).repeat(4, 1)
  return np.clip(img * vignette[..., None] + noise, 0, 1)


def stained_glass(c):
  cell, gap, _ = _voronoi(c.rng, c.x, c.y, 60)
  shade = 0.75 + 0.4 * c.rng.random(60)
  img = np.clip(plain(c) * shade[cell][..., None] * 0.7, 0, 1)
  for sdf, col, *_ in each(c):
    img = over(img, np.clip(np.asarray(col)[None, None] * shade[cell][..., None], 0, 1), coverage(sdf, c.px))
  lead = np.clip(1.2 - gap / (0.8 * c.px), 0, 1)
  for sdf, *_ in each(c):
    lead = np.maximum(lead, band(sdf, 2.5 * c.px, c.px))
  return over(img, (0.08, 0.08, 0.08), lead)


def sticker(c):
  img = plain(c)
  for sdf, col, *_ in each(c):
    shifted = np.roll(np.roll(sdf, 3 * c.n // 64, 0), 3 * c.n // 64, 1)
    img = over(img, (0, 0, 0), coverage(shifted - 2.5 * c.px, 3 * c.px) * 0.35)
    img = over(img, (1, 1, 1), coverage(sdf - 2.5 * c.px, c.px))
    img = over(img, col, coverage(sdf, c.px))
  return img


def embossed(c):
  img = plain(c)
  for sdf, col, *_ in each(c):
    gy, gx = np.gradient(np.clip(sdf, -4 * c.px, 4 * c.px))
    light = -(gx + gy) * c.n * 4
    alpha = coverage(sdf, c.px)
    body = np.clip(np.asarray(col)[None, None] * 0.8 + np.clip(light, -1, 1)[..., None] * 0.35, 0, 1)
    img = img * (1 - alpha[..., None]) + body * alpha[..., None]
  return img


def dashed(c):
  img = plain(c, mix(c.background, (1, 1, 1), 0.4))
  for sdf, col, (cx, cy), _ in each(c):
    angle = np.arctan2(c.y - cy, c.x - cx)
    dashes = (angle / (2 * np.pi) * 24) % 1 < 0.55
    img = over(img, col, band(sdf + 1.5 * c.px, 2.0 * c.px, c.px) * dashes)
  return img


def crayon(c):
  img = plain(c, mix(c.background, (1, 1, 1), 0.35))
  streak = smooth_noise(c.rng, c.n, 3)
  fibres = np.clip(np.sin(c.y * 2 * np.pi / (1.5 * c.px) + 40 * streak) * 0.5 + c.rng.random((c.n, c.n)) * 0.9, 0, 1)
  for sdf, col, *_ in each(c):
    rough = (c.rng.random((c.n, c.n)) - 0.5) * 2 * c.px
    wax = coverage(sdf + rough, c.px) * (fibres > 0.45)
    img = over(img, mix(col, (0, 0, 0), 0.1), wax * 0.95)
  return img


RENDERERS = {name: globals()[name] for name in STYLES}
