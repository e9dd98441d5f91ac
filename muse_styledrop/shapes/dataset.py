"""Shapes-world datasets: rendered once into an .npz file (rendering is ~35 ms a picture), streamed by grain.

  python -m muse_styledrop.shapes.dataset --out=data/shapes_seen_50k.npz --count=50000 --styles=seen

Example i of a file is `shapes.example(first_seed + i, styles)`, so a file is
reproducible from its name's arguments. Labels are those of the first
object (the only one in single-object scenes); `objects` says how many.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from muse_styledrop import files
from muse_styledrop.shapes.render import HELD_OUT, SEEN, STYLES, example, shape_group
from muse_styledrop.shapes.world import COLOURS, SHAPES

STYLE_SETS = {"seen": SEEN, "held_out": HELD_OUT, "all": tuple(STYLES)}


def _render_chunk(args):
  first, count, styles, group = args
  if group:  # `count` groups of `group` pictures that differ only in their first object's shape
    rows = [r for i in range(count) for r in shape_group(first + i, group, styles)]
  else:
    rows = [example(first + i, styles) for i in range(count)]
  return {
    "images": np.stack([r.image for r in rows]),
    "shape": np.asarray([SHAPES.index(r.scene.objects[0].shape) for r in rows], np.int16),
    "colour": np.asarray([list(COLOURS).index(r.scene.objects[0].colour) for r in rows], np.int16),
    "style": np.asarray([list(STYLES).index(r.style) for r in rows], np.int16),
    "objects": np.asarray([len(r.scene.objects) for r in rows], np.int8),
    "caption": np.asarray([r.caption for r in rows]),
  }


def render(
  count: int, first_seed: int = 0, styles: tuple[str, ...] = SEEN, workers: int = 0, chunk: int = 256, group: int = 0
):
  """Arrays of `count` examples, rendered over `workers` processes (0: all cores). With `group` = g, `count` groups of
  g pictures that differ only in shape (`render.shape_group`), consecutive, with a `group` array naming each's group."""
  workers = workers or os.cpu_count() or 1
  jobs = [(first_seed + s, min(chunk, count - s), styles, group) for s in range(0, count, chunk)]
  if workers == 1:
    parts = [_render_chunk(job) for job in tqdm(jobs, desc="render", unit="chunk")]
  else:
    # spawn, not fork: forking a process that has started JAX's threads can deadlock.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
      parts = list(tqdm(pool.map(_render_chunk, jobs), total=len(jobs), desc="render", unit="chunk"))
  arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  if group:
    arrays["group"] = np.repeat(np.arange(first_seed, first_seed + count), group)
  return arrays


save, load = files.save_arrays, files.load_arrays


def batches(arrays: dict, batch_size: int, seed: int):
  """An endless, shuffled, batched grain dataset over the arrays (reshuffled every epoch, reproducible)."""
  import grain  # noqa: PLC0415 - only streaming needs it

  n = len(arrays["images"])
  ds = grain.MapDataset.range(n).shuffle(seed=seed).repeat()
  ds = ds.map(lambda i: {k: v[i] for k, v in arrays.items()})
  return ds.batch(batch_size, drop_remainder=True)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True)
  p.add_argument("--count", type=int, required=True)
  p.add_argument("--first_seed", type=int, default=0)
  p.add_argument("--styles", choices=sorted(STYLE_SETS), default="seen")
  p.add_argument("--workers", type=int, default=0)
  p.add_argument("--group", type=int, default=0, help="g > 0: --count groups of g pictures differing only in shape")
  args = p.parse_args()
  arrays = render(args.count, args.first_seed, STYLE_SETS[args.styles], args.workers, group=args.group)
  save(arrays, Path(args.out))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
