"""Local codes of pixel patches: k-means of p x p patches, the tokens a VQ tokenizer can be anchored to.

Each patch's code depends on that patch alone, so equal patches get equal codes wherever they are; the
transformer learns shapes from such tokens two to four times as fast as from a VQ's (docs/research/blob_bases.md).
`neighbour_majority` measures how local any token map is.
"""

from __future__ import annotations

import numpy as np


def to_patches(pictures_NHWC: np.ndarray, p: int) -> np.ndarray:
  """(N, H, W, C) -> (N, H/p, W/p, p*p*C), each patch row-major."""
  n, h, w, c = pictures_NHWC.shape
  x = pictures_NHWC.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h // p, w // p, p * p * c)


def from_patches(patches_NhwD: np.ndarray, p: int) -> np.ndarray:
  n, h, w, _ = patches_NhwD.shape
  x = patches_NhwD.reshape(n, h, w, p, p, -1).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h * p, w * p, -1)


def nearest(x_ND: np.ndarray, centres_KD: np.ndarray) -> np.ndarray:
  """Index of the nearest centre of every row, in chunks."""
  out = np.empty(len(x_ND), np.int64)
  c2 = (centres_KD**2).sum(1)
  for i in range(0, len(x_ND), 16384):
    chunk = x_ND[i : i + 16384]
    out[i : i + 16384] = np.argmin(c2[None] - 2 * chunk @ centres_KD.T, axis=1)
  return out


def patch_kmeans(pictures_uint8: np.ndarray, p: int, codes: int = 512, iters: int = 25, seed: int = 0):
  """k-means of the pictures' p x p patches in [0, 1] (weighted over distinct patches): (centres (codes, p*p*3),
  ids (N, H/p, W/p))."""
  x = to_patches(pictures_uint8.astype(np.float32) / 255.0, p)
  flat = x.reshape(-1, x.shape[-1])
  distinct, counts = np.unique(np.round(flat, 3), axis=0, return_counts=True)
  if len(distinct) < codes:
    raise ValueError(f"only {len(distinct)} distinct {p}x{p} patches for {codes} codes; use fewer codes")
  rng = np.random.default_rng(seed)
  centres = distinct[rng.choice(len(distinct), codes, replace=False, p=counts / counts.sum())].copy()
  for _ in range(iters):
    assign = nearest(distinct, centres)
    sums = np.zeros_like(centres)
    np.add.at(sums, assign, distinct * counts[:, None])
    mass = np.bincount(assign, counts, codes)
    centres[mass > 0] = sums[mass > 0] / mass[mass > 0, None]
    empty = mass == 0
    centres[empty] = distinct[rng.choice(len(distinct), int(empty.sum()))]
  return centres, encode(pictures_uint8, centres, p)


def encode(pictures_uint8: np.ndarray, centres: np.ndarray, p: int) -> np.ndarray:
  """The code of every p x p patch: (N, H/p, W/p) int64."""
  x = to_patches(pictures_uint8.astype(np.float32) / 255.0, p)
  return nearest(x.reshape(-1, x.shape[-1]), centres).reshape(x.shape[:3])


def decode(ids_NHW: np.ndarray, centres: np.ndarray, p: int) -> np.ndarray:
  """uint8 pictures with each code's mean patch pasted in."""
  return np.round(np.clip(from_patches(centres[ids_NHW], p), 0, 1) * 255).astype(np.uint8)


def neighbour_majority(tokens_NHW: np.ndarray, rate: float = 0.1, seed: int = 0) -> float:
  """Accuracy of filling each masked token with the commonest visible token among its 8 neighbours."""
  rng = np.random.default_rng(seed)
  right = total = 0
  n, h, w = tokens_NHW.shape
  for t in tokens_NHW:
    masked = rng.random((h, w)) < rate
    for y, x in zip(*np.nonzero(masked), strict=True):
      window = t[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2][~masked[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2]]
      if window.size:
        right += int(np.bincount(window).argmax() == t[y, x])
        total += 1
  return round(right / max(total, 1), 4)
