r"""The simplest shapes-world task for the U-ViT, in minutes: can it learn to draw a shape at all?

  python benchmarks/flat_probe.py --tokens=vq [--style=flat] [--steps=600] [--set=uvit.KEY=VALUE ...] [--out=F.json]

One style, one medium or large object per picture: in the flat style such a
picture is a deterministic function of its caption (same caption, same
pixels). The 4x4 base's U-ViT recipe (`configs/pretrain_uvit.py`, the
base's text encoder) trains on these pictures' tokens for --steps
steps, then draws 100 new prompts of the style under three samplers (SAMPLERS), graded
by the oracle. Run again on a finished workdir, it only re-grades. Tokens:

  vq       the 4x4-pixel-token base's VQ (16x16 tokens; candidates/shapes_base_4px); its decoder draws the samples
  kmeans4  k-means of 4x4-pixel patches (16x16 tokens, 512 codes): every token is local to its patch
  kmeans8  k-means of 8x8-pixel patches (8x8 tokens, 512 codes; the transformer on the 8x8 grid, no down/upsampling)

For k-means tokens the samples are drawn by pasting each code's mean patch.
Also measured: masked-token loss and accuracy at several mask rates under the
true caption and with the shape word swapped, and a neighbour-majority
baseline for fill-in at 10% masked.

--shape_in_pooled=GAIN is a diagnostic of the text pathway: in this process only, the text encoder's projected
pooled embedding (which drives every adaptive norm of the U-ViT) gets GAIN x a fixed random unit vector per shape
word the prompt holds, so it carries the shape as strongly as GAIN says (the pooled norm is about 14). The export
does not carry it; only this script's training and grading see it.

Writes JSON (--out) and PNGs of samples
next to it (guidance 3, and the likeliest sampler). The pictures are rendered once into data/ (~2 min).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs import pretrain_uvit  # noqa: E402
from muse_styledrop import files, images, pretrain, sampling  # noqa: E402
from muse_styledrop.models import clip  # noqa: E402
from muse_styledrop.pipeline import Pipeline  # noqa: E402
from muse_styledrop.shapes import dataset, grading, objectives  # noqa: E402
from muse_styledrop.shapes.patch_codes import from_patches, neighbour_majority, patch_kmeans  # noqa: E402
from muse_styledrop.shapes.render import caption  # noqa: E402
from muse_styledrop.shapes.world import SHAPES  # noqa: E402
from muse_styledrop.tokenizer import Tokenizer  # noqa: E402

PATCH = {"kmeans4": 4, "kmeans8": 8}
# The 4x4-pixel-token base (shipped until session 13): its VQ and text encoder, as every measurement of this probe
BASE_4PX = Path(__file__).resolve().parents[1] / "candidates" / "shapes_base_4px"
# name: (classifier-free guidance scale, confidence temperature start/end, token temperature); see
# grading.BASE_SAMPLERS.
SAMPLERS = {
  "guidance_3": grading.BASE_SAMPLERS["default"],
  "guidance_8": (8.0, (4.5, 0.0), 1.0),
  "likeliest": grading.BASE_SAMPLERS["likeliest"],
}


def fill_in(pipe, tokens_NHW, captions, shapes) -> list[dict]:
  """Masked-token loss / accuracy (one forward) at several mask rates, true caption vs shape word swapped."""
  swapped = [c.replace(f" {SHAPES[s]} ", f" {SHAPES[(s + 3) % len(SHAPES)]} ", 1) for c, s in zip(captions, shapes)]
  tokens = jnp.asarray(tokens_NHW, jnp.int32)
  side = tokens.shape[1]
  micro = pipe.micro_conds(len(captions), side * pipe.downscale, side * pipe.downscale)
  rows = []
  for rate in (0.1, 0.5, 0.9, 1.0):
    masked = jax.random.uniform(jax.random.key(0), tokens.shape) < rate
    row = {"masked": rate}
    for name, prompts in (("true_caption", captions), ("shape_swapped", swapped)):
      text, pooled = pipe.encode_prompts(prompts)
      logits = pipe.transformer(jnp.where(masked, pipe.mask_token_id, tokens), text, pooled, micro).astype(jnp.float32)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens)
      right = jnp.argmax(logits, -1) == tokens
      row[name] = {
        "loss": round(float((ce * masked).sum() / masked.sum()), 4),
        "accuracy": round(float((right * masked).sum() / masked.sum()), 4),
      }
    rows.append(row)
  return rows


def put_shape_in_pooled(tokenizer_dir: Path, gain: float) -> None:
  """The --shape_in_pooled diagnostic: patch CLIPModel.encode_text in this process (see the module docstring)."""
  tok = Tokenizer(tokenizer_dir)
  eos = int(tok([""])[0][1])
  pieces = []  # each shape word's token ids (the shipped tokenizer cuts some words into pieces)
  for shape in SHAPES:
    row = [int(i) for i in tok([shape])[0][1:]]
    pieces.append(row[: row.index(eos)])
  table = jnp.asarray(np.random.default_rng(0).standard_normal((len(SHAPES), 128)), jnp.float32)
  table = gain * table / jnp.linalg.norm(table, axis=1, keepdims=True)
  encode_text = clip.CLIPModel.encode_text

  def with_shape(self, ids_BT, attention_mask_BT=None):
    out, pooled = encode_text(self, ids_BT, attention_mask_BT)
    t = ids_BT.shape[1]
    found = []
    for seq in pieces:  # the word's pieces in a row anywhere in the prompt
      hit = jnp.ones((ids_BT.shape[0], t - len(seq) + 1), bool)
      for j, token in enumerate(seq):
        hit &= ids_BT[:, j : t - len(seq) + 1 + j] == token
      found.append(hit.any(1))
    return out, pooled + (jnp.stack(found, 1).astype(pooled.dtype) @ table[:, : pooled.shape[-1]])

  clip.CLIPModel.encode_text = with_shape


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--tokens", choices=("vq", *PATCH), default="vq")
  p.add_argument("--style", default="flat")
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--pictures", type=int, default=6000, help="rendered in the style; ~45%% are single medium/large")
  p.add_argument(
    "--set", action="append", default=[], help="config override KEY=PYTHON_VALUE, e.g. uvit.num_res_blocks=1"
  )
  p.add_argument("--clip", default="", help="a directory with text_encoder/ and tokenizer/; default: the 4x4 base's")
  p.add_argument("--shape_in_pooled", type=float, default=0.0, help="diagnostic gain (module docstring); 0 = off")
  p.add_argument("--workdir", default="")
  p.add_argument("--out", default="")
  args = p.parse_args()

  if args.shape_in_pooled:
    put_shape_in_pooled(Path(args.clip or BASE_4PX) / "tokenizer", args.shape_in_pooled)
  data = Path("data") / f"probe_{args.style}_{args.pictures}.npz"
  if not data.is_file():
    dataset.save(dataset.render(args.pictures, first_seed=20_000_000, styles=(args.style,)), data)
  arrays = dataset.load(data)
  keep = objectives.select(arrays, "single_large", args.style)
  workdir = Path(args.workdir or f"runs/probe_{args.style}_{args.tokens}")
  workdir.mkdir(parents=True, exist_ok=True)

  grid = (8, 8) if args.tokens == "kmeans8" else (16, 16)
  tokens = np.zeros((len(arrays["images"]), *grid), np.int16)
  centres = None
  if args.tokens == "vq":
    base = Pipeline.from_pretrained(BASE_4PX)  # only its VQ; k-means tokens need no model
    tokens[keep] = np.concatenate(
      [np.asarray(base.encode_images(arrays["images"][keep[i : i + 256]] / 255.0)) for i in range(0, len(keep), 256)]
    )
  else:
    centres, ids = patch_kmeans(arrays["images"][keep], PATCH[args.tokens])
    tokens[keep] = ids
  # the U-ViT objective's token cache, under the VQ's fingerprint: it trains on these tokens, not the VQ's own
  cache = {k: v for k, v in arrays.items() if k != "images"}
  cache["encoder_fingerprint"] = np.asarray(objectives.encoder_fingerprint(BASE_4PX / "vqvae"))
  dataset.save({**cache, "tokens": tokens}, workdir / "tokens.npz", compressed=True)

  config = pretrain_uvit.get_config(None)
  config.data = dict(train=str(data), select="single_large", style=args.style)
  config.vq_dir = str(BASE_4PX / "vqvae")
  config.clip_dir = args.clip or str(BASE_4PX)
  config.steps, config.eval_prompts = args.steps, 8
  config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, args.steps // 6)
  if args.tokens == "kmeans8":
    config.uvit.downsample = config.uvit.upsample = False
  for item in args.set:
    key, value = item.split("=", 1)
    *parents, last = key.split(".")
    target = config
    for name in parents:
      target = target[name]
    target[last] = eval(value)  # noqa: S307 - a command-line override of the user's own
  start = time.perf_counter()
  summary = pretrain.pretrain(config, workdir)
  pipe = Pipeline.from_pretrained(workdir / "export" / "shapes_base")

  scenes = grading.eval_scenes(100, 0)
  styles = [args.style] * len(scenes)
  prompts = [caption(s, args.style) for s in scenes]
  text, pooled = pipe.encode_prompts(prompts)
  neg_text, neg_pooled = pipe.encode_prompts([""] * len(prompts))
  side = tokens.shape[1]
  micro = pipe.micro_conds(len(prompts), side * pipe.downscale, side * pipe.downscale)
  grader = grading.grader_or_none("")
  drawn, pictures = {}, {}
  for name, (guidance, temperature, token_temperature) in SAMPLERS.items():
    passes = sampling.classifier_free(text, pooled, neg_text, neg_pooled, micro, guidance)
    ids = pipe.sampler(
      passes,
      jax.random.key(0),
      (side, side),
      num_steps=12,
      temperature=temperature,
      token_temperature=token_temperature,
    )
    ids = np.asarray(ids)
    if centres is None:
      out = pipe.decode_tokens(ids)
    else:
      out = np.round(np.clip(from_patches(centres[ids], PATCH[args.tokens]), 0, 1) * 255).astype(np.uint8)
    drawn[name] = grading.grade(out, scenes, styles, grader)
    pictures[name] = out
  train_keep = keep[:64]
  report = {
    "tokens": args.tokens,
    "style": args.style,
    "pictures": len(keep),
    "steps": args.steps,
    "overrides": args.set,
    "shape_in_pooled": args.shape_in_pooled,
    "clip": args.clip or str(BASE_4PX),
    "final_loss": summary["last"].get("loss"),
    "seconds": round(time.perf_counter() - start, 1),
    "neighbour_majority_at_10pct": neighbour_majority(tokens[keep[:256]].astype(np.int64)),
    "fill_in_on_training_pictures": fill_in(
      pipe, tokens[train_keep], [str(c) for c in arrays["caption"][train_keep]], arrays["shape"][train_keep]
    ),
    "samples": drawn,
  }
  out = Path(args.out or workdir / "probe.json")
  files.write_json(report, out)
  images.save_png(images.grid(pictures["guidance_3"][:40], columns=8), out.with_suffix(".png"))
  images.save_png(images.grid(pictures["likeliest"][:40], columns=8), out.with_name(out.stem + "_likeliest.png"))
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
