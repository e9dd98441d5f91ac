r"""Where an anchored VQ loses style: its encoder's codes or its decoder's drawing.

  python benchmarks/vq_ceiling.py --out=docs/benchmarks/vq_ceiling.json [--base_model=DIR] [--count=4000]

Renders `count` fresh pictures of all styles (the oracle's test seeds, 9,000,000 on: the same pictures as
data/shapes_test_4k.npz) and grades with the oracle three ways of drawing them back through the base's codes:
the VQ encoder's codes drawn by the VQ decoder (the tokens the base learned), the k-means code of each patch
(what an anchored encoder is taught to pick; its codebook is those centres) drawn by the decoder, and the same
codes with each code's mean patch pasted in. Then a field of one code, decoded: aMUSEd's decoder (nearest
upsampling, 3x3 convolutions) draws it flat whatever the code's patch holds (docs/shapes_log.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from muse_styledrop import files, shapes  # noqa: E402
from muse_styledrop.pipeline import Pipeline, resolve_base_model  # noqa: E402
from muse_styledrop.shapes import dataset, grading, patch_codes  # noqa: E402


def batched(fn, x, size=256):
  return np.concatenate([np.asarray(fn(x[i : i + size])) for i in range(0, len(x), size)])


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--base_model", default="")
  p.add_argument("--count", type=int, default=4000)
  p.add_argument("--out", default="")
  args = p.parse_args()
  pipe = Pipeline.from_pretrained(resolve_base_model(args.base_model))
  centres = np.asarray(pipe.vqvae.quantize.embedding.embedding[...], np.float32)
  side = pipe.downscale
  if centres.shape[1] != side * side * 3:
    raise SystemExit(
      f"the base's codes are {centres.shape[1]}-dimensional, not {side}x{side} pixel patches: not anchored"
    )
  grader = grading.grader_or_none("")
  test = dataset.render(args.count, first_seed=9_000_000, styles=tuple(shapes.STYLES))
  ids_vq = batched(lambda x: pipe.encode_images(x / 255.0), test["images"])
  ids_km = patch_codes.encode(test["images"], centres, side)
  seen = np.isin(test["style"], [grading.STYLES_LIST.index(s) for s in shapes.SEEN])
  ways = {
    "encoder codes, decoder": batched(pipe.decode_tokens, ids_vq),
    "k-means codes, decoder": batched(pipe.decode_tokens, ids_km),
    "k-means codes, patches pasted": patch_codes.decode(ids_km, centres, side),
  }
  report = {"count": args.count, "encoder_picks_the_kmeans_code": round(float(np.mean(ids_vq == ids_km)), 4)}
  for name, pictures in ways.items():
    pred = grader(pictures)
    right = pred["style"] == test["style"]
    report[name] = {**grading.label_accuracy(pred, test), "style_seen": round(float(right[seen].mean()), 4)}
  # a field of one code: the 8 codes with the most texture inside their patch, each tiled over the token grid
  h = w = pipe.transformer.config.sample_size
  spread = centres.reshape(len(centres), -1, 3).std(1).mean(1)
  textured = np.argsort(-spread)[:8]
  fields = pipe.decode_tokens(jnp.asarray(np.broadcast_to(textured[:, None, None], (8, h, w)))) / 255.0
  border = 3 * side  # away from the zero-padded edges
  report["one_code_fields"] = {
    "patch_spread": [round(float(v), 4) for v in spread[textured]],
    "decoded_interior_spread": [
      round(float(v), 4) for v in fields[:, border:-border, border:-border].std((1, 2)).mean(-1)
    ],
  }
  print("| codes, drawn by | style, all | style, seen | shape | colour |")
  print("|---|---|---|---|---|")
  for name in ways:
    r = report[name]
    print(f"| {name} | {r['style']:.1%} | {r['style_seen']:.1%} | {r['shape']:.1%} | {r['colour']:.1%} |")
  if args.out:
    files.write_json(report, Path(args.out))
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  main()
