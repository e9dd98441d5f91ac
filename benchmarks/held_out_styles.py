r"""StyleDrop on every held-out style of the shapes world: the README's main run, once per shipped reference picture.

  python benchmarks/held_out_styles.py --config=configs/style_one_shot.py \
    --out=docs/benchmarks/held_out_styles.json [--styles=neon,mosaic]
  python benchmarks/held_out_styles.py --config=configs/style_one_shot.py \
    --config.base_model=runs/X/export/shapes_base --config.steps=500   # a candidate base and recipe
  python benchmarks/held_out_styles.py --config=configs/style_one_shot.py --round2=clip \
    --clip_model=DIR [--pool_lambda_a=0]                                 # then round 2 (docs/feedback.md)

Each style trains its own adapter with the given config and overrides (the picture, its content text, the style
phrase and the graded style are the style's) in runs/held_out/<style> (a finished one there is only regraded: use a
fresh --workdir to time), and the oracle grades 24 new prompts with the adapter and with the base given the
style phrase alone; the tokens' ceiling is the world's own pictures of the same prompts passed through the
base's VQ, what a generator that put every token right would score. Prints a markdown table (the one in
docs/shapes.md) and writes the JSON.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from absl import flags

from muse_styledrop import cli, files, shapes
from muse_styledrop.configs import style_one_shot
from muse_styledrop.shapes import references
from muse_styledrop.train import train_and_evaluate

flags.DEFINE_list("styles", list(shapes.HELD_OUT), "Held-out styles to run, comma-separated.")
flags.DEFINE_string("out", "", "Write the rows as JSON here too.")
flags.DEFINE_enum("round2", "", ["", "random", "clip"], "Then round 2: a pool of each round-1 adapter, selected so.")
flags.DEFINE_string("clip_model", "", "--round2=clip: the CLIPModel directory that judges the pool.")
flags.DEFINE_float("pool_lambda_a", None, "--round2: the pool's lambda_a (default: the round-1 adapter's).")


def round2(style: str, round1: Path, args) -> dict:
  """feedback's pool and selection on the round-1 adapter, then `style_one_shot:round2` on the kept pictures."""
  from muse_styledrop import feedback  # noqa: PLC0415

  out = round1.with_name(f"{round1.name}_feedback_{args.round2}")
  if not (out / "selected" / "captions.txt").is_file():
    feedback.run_feedback(
      str(round1),
      out,
      select_how=args.round2,
      base_model=args.config.base_model,
      clip_model=args.clip_model,
      lambda_a=args.pool_lambda_a,
    )
  config = style_one_shot.get_config("round2")  # the round-1 config's overrides other than its base stay behind
  config.base_model = args.config.base_model
  config.style_images = str(out / "selected")
  config.style_descriptor = shapes.STYLES[style]
  config.evals.shapes_oracle.reference = references.reference_run(style)["image"]
  config.evals.shapes_oracle.style = style
  summary = train_and_evaluate(config, round1.with_name(f"{round1.name}_round2_{args.round2}"))
  return {"adapter": summary["adapter"], "train_seconds": summary["train_seconds"]}


def main(argv):
  del argv
  args = flags.FLAGS
  rows = {}
  for style in args.styles:
    config = args.config.copy_and_resolve_references()
    reference = references.reference_run(style)
    config.style_images, config.content_prompts = reference["image"], reference["content"]
    config.style_descriptor = reference["style"]
    config.evals.shapes_oracle.style = style
    start = time.perf_counter()
    summary = train_and_evaluate(config, Path(args.workdir or "runs/held_out") / style)
    rows[style] = {
      "adapter": summary["adapter"],
      "base": summary["base"],
      "ceiling": summary["ceiling"],
      "train_seconds": summary["train_seconds"],
      "wall_seconds": round(time.perf_counter() - start, 1),
    }
    if args.round2:
      rows[style]["round2"] = round2(style, Path(args.workdir or "runs/held_out") / style, args)
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
  if args.round2:
    print(f"\nround 2 ({args.round2} selection): adapter style / shape+colour")
    for style, r in rows.items():
      a = r["round2"]["adapter"]
      print(f"| {style} | {a['style_accuracy']:.0%} | {a['content_accuracy']:.0%} |")
  if args.out:
    files.write_json(rows, Path(args.out))
  print(json.dumps(rows, indent=2))


if __name__ == "__main__":
  cli.run_config_main(main, "configs/style_one_shot.py (the README's run); --config.KEY=VALUE overrides it.")
