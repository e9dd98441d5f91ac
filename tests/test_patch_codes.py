"""Patch codes (pretraining/patch_codes.py, the anchored VQ's tokens): round trips, a local code."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from muse_styledrop.pretraining.patch_codes import from_patches, neighbour_majority, patch_kmeans, to_patches  # noqa: E402


def test_patches_round_trip():
  x = np.random.default_rng(0).random((3, 16, 16, 3)).astype(np.float32)
  for p in (4, 8):
    patches = to_patches(x, p)
    assert patches.shape == (3, 16 // p, 16 // p, p * p * 3)
    np.testing.assert_array_equal(from_patches(patches, p), x)
    np.testing.assert_array_equal(patches[1, 1, 0], x[1, p : 2 * p, 0:p].reshape(-1))  # row-major within a patch


def test_patch_kmeans_is_exact_when_codes_cover_the_distinct_patches():
  # three flat colours in quadrants: 4x4 patches take exactly three values, so three codes reconstruct exactly
  pictures = np.zeros((4, 16, 16, 3), np.uint8)
  pictures[:, :8] = (200, 30, 30)
  pictures[1:, :, 8:] = (20, 20, 220)
  centres, ids = patch_kmeans(pictures, 4, codes=3, iters=5)
  assert ids.shape == (4, 4, 4)
  rebuilt = np.round(from_patches(centres[ids], 4) * 255).astype(np.uint8)
  np.testing.assert_array_equal(rebuilt, pictures)
  assert len(np.unique(ids[0])) == 2 and ids[0, 0, 0] != ids[0, 3, 0]


def test_neighbour_majority_baseline():
  assert neighbour_majority(np.zeros((4, 8, 8), np.int64), rate=0.3) == 1.0
  checker = (np.indices((8, 8)).sum(0) % 2)[None].repeat(4, 0)  # every neighbour in a row or column differs
  assert neighbour_majority(checker, rate=0.1) < 0.7
