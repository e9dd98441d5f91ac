"""Sample grids a person looks at: the pictures land where they should, under readable titles."""

import numpy as np

from muse_styledrop import images


def test_grid_places_every_picture_in_order_with_a_white_gutter():
  pictures = np.stack([np.full((4, 4, 3), 10 * i, np.uint8) for i in range(5)])
  g = images.grid(pictures, columns=3, pad=2)
  assert g.shape == (2 * 6 + 2, 3 * 6 + 2, 3)
  for i in range(5):
    r, k = divmod(i, 3)
    assert (g[2 + 6 * r : 6 + 6 * r, 2 + 6 * k : 6 + 6 * k] == 10 * i).all()
  assert (g[:2] == 255).all() and (g[8:14, 14:18] == 255).all()  # gutter and the empty sixth cell


def test_titled_bands_put_a_written_title_above_each_upscaled_grid():
  one, row = np.zeros((1, 8, 8, 3), np.uint8), np.zeros((3, 8, 8, 3), np.uint8)
  out = images.titled_bands([("reference", one), ("with adapter", row)], columns=3, scale=2)
  band = 2 * (8 + 2) + 2 * 2  # one row of 8px pictures with 2px gutters, upscaled twice
  assert out.shape == (18 + band + 18 + band, 2 * (3 * 10 + 2), 3)
  first_title, second_title = out[:18], out[18 + band : 18 + band + 18]
  assert (first_title < 128).any() and (second_title < 128).any()  # text was drawn in each strip
  assert (out[18 + 4 : 18 + 20, 4:20] == 0).all()  # the reference picture, scaled 2x, under its title


def test_sample_grid_has_a_row_per_prompt_only_when_each_has_several_images():
  assert images.grid_columns(2, 3) == 3  # a row of three per prompt
  assert images.grid_columns(24, 1) is None  # near-square, not one column
  assert images.grid_columns(1, 4) is None
