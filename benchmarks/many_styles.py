r"""Many styles in one batch against one call per style: pictures per second on the embedded base.

  python benchmarks/many_styles.py --adapters=runs/composition/mosaic,runs/composition/neon \
      --out=docs/benchmarks/many_styles.json

A bank of 16 entries holds the given adapters over and over (the cost does not depend on the weights). For 1, 4 and
16 styles, the same --pictures pictures (an equal share of each style) are drawn as one mixed batch, and as one call
per style with that style's pictures; every shape is compiled before it is timed, and the best of --repeats counts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

from muse_styledrop import files
from muse_styledrop.pipeline import EMBEDDED_BASE, Pipeline
from muse_styledrop.requests import Request, Term
from muse_styledrop.sampling import SamplingSettings

BANK = 16


def timed(pipe, wanted, repeats: int) -> float:
  """Seconds for the best of `repeats` draws, after one that compiles."""
  jax.block_until_ready(pipe.draw_requests(wanted, seed=0, batch=len(wanted)))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(pipe.draw_requests(wanted, seed=0, batch=len(wanted)))
    best = min(best, time.perf_counter() - start)
  return best


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--adapters", required=True, help="Comma-separated adapters (files or finished workdirs).")
  p.add_argument("--pictures", type=int, default=32)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--out", default="")
  args = p.parse_args()
  given = args.adapters.split(",")
  pipe = Pipeline.from_pretrained(EMBEDDED_BASE)
  metas = pipe.load_adapters([given[i % len(given)] for i in range(BANK)])
  settings = [SamplingSettings.from_dict(m["sampling"]) for m in metas]
  prompts = ["a red circle", "a blue star on the left", "a large green heart in the center", "a pink ring"]
  rows = []
  for styles in (1, 4, 16):
    each = args.pictures // styles
    per_style = [
      [Request((Term(f"{prompts[i % len(prompts)]} {metas[s]['style_phrase']}", s),), settings[s]) for i in range(each)]
      for s in range(styles)
    ]
    mixed = timed(pipe, [r for group in per_style for r in group], args.repeats)
    separate = sum(timed(pipe, group, args.repeats) for group in per_style)
    rows.append(
      {
        "styles": styles,
        "pictures": each * styles,
        "one_batch_pictures_per_s": round(each * styles / mixed, 2),
        "one_call_per_style_pictures_per_s": round(each * styles / separate, 2),
        "speedup": round(separate / mixed, 2),
      }
    )
    print(rows[-1])
  record = {"device": jax.devices()[0].device_kind, "bank": BANK, "rows": rows}
  if args.out:
    files.write_json(record, Path(args.out))
  print(json.dumps(record, indent=2))


if __name__ == "__main__":
  main()
