"""Signed distances of the world's shapes on a pixel grid (negative inside), in units of the image side."""

from __future__ import annotations

import numpy as np


def _polygon_sdf(x, y, vertices):
  """Signed distance to a closed polygon (even-odd inside test)."""
  vx, vy = vertices[:, 0], vertices[:, 1]
  d = np.full(x.shape, np.inf)
  inside = np.zeros(x.shape, bool)
  n = len(vertices)
  for i in range(n):
    ax, ay, bx, by = vx[i], vy[i], vx[(i + 1) % n], vy[(i + 1) % n]
    ex, ey = bx - ax, by - ay
    t = np.clip(((x - ax) * ex + (y - ay) * ey) / (ex * ex + ey * ey), 0, 1)
    d = np.minimum(d, np.hypot(x - ax - t * ex, y - ay - t * ey))
    crosses = ((ay > y) != (by > y)) & (x < (bx - ax) * (y - ay) / (by - ay + 1e-12) + ax)
    inside ^= crosses
  return np.where(inside, -d, d)


def _regular(n, r, rotation=0.0):
  a = rotation + 2 * np.pi * np.arange(n) / n
  return np.stack([r * np.sin(a), -r * np.cos(a)], -1)


def _star(r):
  a = 2 * np.pi * np.arange(10) / 10
  radius = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
  return np.stack([radius * np.sin(a), -radius * np.cos(a)], -1)


def shape_sdf(shape: str, x, y, cx: float, cy: float, r: float) -> np.ndarray:
  """Signed distance field of `shape` centred at (cx, cy) with radius r; x, y are pixel-centre coordinates."""
  x, y = x - cx, y - cy
  if shape == "circle":
    return np.hypot(x, y) - r
  if shape == "ring":
    return np.abs(np.hypot(x, y) - 0.72 * r) - 0.28 * r
  if shape == "square":
    q = np.abs(np.stack([x, y])) - 0.82 * r
    return np.hypot(np.maximum(q[0], 0), np.maximum(q[1], 0)) + np.minimum(np.maximum(q[0], q[1]), 0)
  if shape == "diamond":
    return (np.abs(x) + np.abs(y) - r) / np.sqrt(2)
  if shape == "triangle":
    return _polygon_sdf(x, y + 0.15 * r, _regular(3, 1.1 * r))
  if shape == "hexagon":
    return _polygon_sdf(x, y, _regular(6, r, np.pi / 6))
  if shape == "star":
    return _polygon_sdf(x, y, _star(1.1 * r))
  if shape == "cross":
    arm = 0.32 * r
    a = np.maximum(np.abs(x) - r, np.abs(y) - arm)
    b = np.maximum(np.abs(x) - arm, np.abs(y) - r)
    return np.minimum(a, b)
  if shape == "heart":
    # Two circles over a downward triangle.
    s = r * 0.55
    c1 = np.hypot(x + s * 0.8, y + s * 0.5) - s
    c2 = np.hypot(x - s * 0.8, y + s * 0.5) - s
    tri = _polygon_sdf(x, y, np.asarray([[-1.68 * s, -0.1 * s], [1.68 * s, -0.1 * s], [0, 1.8 * s]]))
    return np.minimum(np.minimum(c1, c2), tri)
  if shape == "crescent":
    return np.maximum(np.hypot(x, y) - r, -(np.hypot(x - 0.45 * r, y - 0.2 * r) - 0.8 * r))
  raise ValueError(f"unknown shape {shape!r}")
