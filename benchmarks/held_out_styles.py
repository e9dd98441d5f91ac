r"""StyleDrop on every held-out style of the shapes world: the README's main run, once per shipped reference picture.

  python benchmarks/held_out_styles.py --out=docs/benchmarks/held_out_styles.json [--styles neon,mosaic]
  python benchmarks/held_out_styles.py --base_model=runs/X/export/shapes_base --set steps=500 --set sample.every=0

Each style trains its own adapter with configs/style_one_shot.py as shipped (only the picture and the style
phrase change) in runs/held_out/<style> (a finished one there is only regraded: use a fresh --workdir to time),
and the oracle grades 24 new prompts with the adapter and with the base given the style phrase alone; the tokens'
ceiling is the world's own pictures of the same prompts passed through the base's VQ, what a generator that put
every token right would score. Prints a markdown table (the one in docs/shapes.md) and writes the JSON.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import ml_collections

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # configs/ is a folder, not a package

from configs import style_one_shot  # noqa: E402
from muse_styledrop import shapes, weights  # noqa: E402
from muse_styledrop.train import train_and_evaluate  # noqa: E402


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--styles", default=",".join(shapes.HELD_OUT))
  p.add_argument("--workdir", default="runs/held_out")
  p.add_argument("--out", default="")
  p.add_argument("--base_model", default="", help="a shapes-world base directory; '' = the embedded base")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override, e.g. steps=500")
  args = p.parse_args()
  overrides = {}
  for item in args.set:
    key, sep, value = item.partition("=")
    if not sep:
      p.error(f"--set {item!r} is not KEY=VALUE; e.g. --set optimizer.learning_rate=3e-3")
    try:
      overrides[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[key] = value  # a bare string
  rows = {}
  for style in args.styles.split(","):
    config = style_one_shot.get_config()
    config.style_images = str(style_one_shot.SHIPPED_STYLE / f"{style}.png")
    config.style_descriptor = shapes.STYLES[style]
    config.evaluate.style = style
    config.base_model = args.base_model
    for key, value in overrides.items():
      *parents, leaf = key.split(".")
      node = config
      for name in parents:
        node = node.get(name) if isinstance(node, ml_collections.ConfigDict) else None
      if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        p.error(f"--set {key}: no such field in configs/style_one_shot.py; dotted names, e.g. optimizer.learning_rate")
      try:
        node[leaf] = value
      except TypeError as e:
        p.error(f"--set {key}={value!r}: {e}")
    start = time.perf_counter()
    summary = train_and_evaluate(config, Path(args.workdir) / style)
    rows[style] = {
      "adapter": summary["adapter"],
      "base": summary["base"],
      "ceiling": summary["ceiling"],
      "train_seconds": summary["train_seconds"],
      "wall_seconds": round(time.perf_counter() - start, 1),
    }
  print(
    "| style | adapter: style | adapter: shape+colour | base + phrase: style | base: shape+colour "
    "| tokens' ceiling: style | ceiling: shape+colour | wall s |"
  )
  print("|---|---|---|---|---|---|---|---|")
  for style, r in rows.items():
    cells = [
      f"{r[who][k]:.0%}" for who in ("adapter", "base", "ceiling") for k in ("style_accuracy", "content_accuracy")
    ]
    wall = f"{r['wall_seconds']:.0f}" if r["train_seconds"] else "resumed: not timed"  # a finished workdir regrades
    print(f"| {style} | {' | '.join(cells)} | {wall} |")
  if args.out:
    weights.write_json(rows, Path(args.out))
  print(json.dumps(rows, indent=2))


if __name__ == "__main__":
  main()
