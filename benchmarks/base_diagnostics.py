r"""Why does a shapes-world base draw blobs? Two measurements of a base directory, graded by the oracle.

  python benchmarks/base_diagnostics.py [--base=muse_styledrop/assets/shapes_base] [--count=64]

1. Sampling settings: the same prompts (seen styles, single medium/large objects) drawn with several
   (steps, temperature, guidance); shape, colour and style accuracy for each. If no setting draws shapes, the
   sampler is not what is wrong.
2. Teacher forcing: the true tokens of real renders with a share of them masked, filled in by one forward pass
   (argmax), once under the true caption and once with its shape word swapped for another. A transformer that
   uses the shape word fills in the asked shape better under the true caption.
3. Text conditioning: how far one word of a prompt (its shape, colour or style) moves the text encoder's projected
   pooled embedding, which drives every adaptive norm of the U-ViT, and its penultimate hidden states, which the
   U-ViT cross-attends to (relative L2 change, mean over prompts). `--text_only` measures just this, in seconds.
Prints JSON (--out writes it too).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from muse_styledrop import files  # noqa: E402
from muse_styledrop.pipeline import EMBEDDED_BASE, Pipeline  # noqa: E402
from muse_styledrop.shapes import dataset, grading  # noqa: E402
from muse_styledrop.shapes.render import caption  # noqa: E402
from muse_styledrop.shapes.styles import SEEN, STYLES  # noqa: E402
from muse_styledrop.shapes.world import COLOURS, SHAPES  # noqa: E402

SETTINGS = [  # (steps, temperature start, guidance)
  (12, 4.5, 3.0),
  (12, 1.0, 3.0),
  (24, 4.5, 3.0),
  (32, 2.0, 5.0),
  (12, 4.5, 8.0),
  (12, 4.5, 0.0),
]


def sampling_sweep(pipe, grader, count: int) -> list[dict]:
  scenes = grading.eval_scenes(count, 0)
  styles = [SEEN[i % len(SEEN)] for i in range(count)]
  prompts = [caption(s, st) for s, st in zip(scenes, styles, strict=True)]
  rows = []
  for steps, temperature, guidance in SETTINGS:
    pictures = grading.sample(pipe, prompts, seed=0, guidance=guidance, steps=steps, temperature=(temperature, 0.0))
    report = grading.grade(pictures, scenes, styles, grader)
    rows.append({"steps": steps, "temperature": temperature, "guidance": guidance, **report})
    print(json.dumps(rows[-1]), flush=True)
  return rows


def teacher_forcing(pipe, grader, test: dict, count: int) -> list[dict]:
  seen = [list(STYLES).index(s) for s in SEEN]
  pick = np.flatnonzero((test["objects"] == 1) & np.isin(test["style"], seen))[:count]
  tokens = np.asarray(pipe.encode_images(test["images"][pick] / 255.0))
  truth = test["shape"][pick]
  captions = [str(c) for c in test["caption"][pick]]
  swapped = [c.replace(SHAPES[s], SHAPES[(s + 3) % len(SHAPES)]) for c, s in zip(captions, truth, strict=True)]
  side = tokens.shape[1]
  micro = pipe.micro_conds(len(pick), side * pipe.downscale, side * pipe.downscale)
  rows = [
    {
      "masked": 0.0,
      "oracle_shape_on_reconstructions": float(np.mean(grader(pipe.decode_tokens(tokens))["shape"] == truth)),
    }
  ]
  for rate in (0.5, 0.8, 1.0):
    masked = np.random.default_rng(0).random(tokens.shape) < rate
    row = {"masked": rate}
    for name, prompts in (("true_caption", captions), ("shape_swapped", swapped)):
      text, pooled = pipe.encode_prompts(prompts)
      logits = pipe.transformer(jnp.where(masked, pipe.mask_token_id, tokens), text, pooled, micro, None)
      filled = np.where(masked, np.asarray(jnp.argmax(logits, -1)), tokens)
      row[name] = {
        "oracle_shape": round(float(np.mean(grader(pipe.decode_tokens(filled))["shape"] == truth)), 4),
        "token_accuracy": round(float(np.mean((filled == tokens)[masked])), 4),
      }
    rows.append(row)
    print(json.dumps(row), flush=True)
  return rows


def text_sensitivity(pipe, count: int) -> dict:
  """Relative change of the pooled embedding and the hidden states when one word of the prompt changes."""
  rng = np.random.default_rng(0)
  words = {"shape": list(SHAPES), "colour": list(COLOURS), "style": list(SEEN)}
  prompt = lambda w: f"a large {w['colour']} {w['shape']} in the center {STYLES[w['style']]}"
  change = {k: {"pooled": [], "hidden": []} for k in words}
  for _ in range(count):
    w = {k: str(rng.choice(v)) for k, v in words.items()}
    for k, options in words.items():
      other = dict(w, **{k: str(rng.choice([o for o in options if o != w[k]]))})
      (h0, h1), (p0, p1) = (np.asarray(a) for a in pipe.encode_prompts([prompt(w), prompt(other)]))
      change[k]["pooled"].append(np.linalg.norm(p0 - p1) / np.linalg.norm(p0))
      change[k]["hidden"].append(np.linalg.norm(h0 - h1) / np.linalg.norm(h0))
  out = {k: {part: round(float(np.mean(v)), 4) for part, v in parts.items()} for k, parts in change.items()}
  print(json.dumps({"text_sensitivity": out}), flush=True)
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--base", default=str(EMBEDDED_BASE))
  p.add_argument("--test", default="data/shapes_test_4k.npz", help="renders for teacher forcing (shapes.dataset)")
  p.add_argument("--count", type=int, default=64)
  p.add_argument("--out", default="")
  p.add_argument("--text_only", action="store_true", help="only the text-conditioning measurement")
  args = p.parse_args()
  pipe = Pipeline.from_pretrained(args.base)
  if args.text_only:
    print(json.dumps({"base": args.base, "text_sensitivity": text_sensitivity(pipe, args.count)}, indent=1))
    return
  grader = grading.grader_or_none("")
  test = dataset.load(Path(args.test))
  out = {
    "base": args.base,
    "sampling": sampling_sweep(pipe, grader, args.count),
    "teacher_forcing": teacher_forcing(pipe, grader, test, args.count),
    "text_sensitivity": text_sensitivity(pipe, args.count),
  }
  if args.out:
    files.write_json(out, Path(args.out))
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
