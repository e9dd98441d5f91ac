r"""Adapters drawn together on the shapes world, graded by the oracle: composition, blending, image-to-image.

  python benchmarks/composition.py --out=docs/benchmarks/composition.json --page=docs/composition.md

- Composition: the content adapter (style_one_shot:content, the shipped green heart called 'sks heart', shown in a
  seen style) with each held-out style's round-1 adapter, content share g from 0 (the style adapter alone) to 1 (the
  content adapter alone), on prompts 'a <size> sks heart <where> <style phrase>'. Right: the oracle reads a green heart
  and the style.
- Blending: two styles' adapters on the same content, the second's share w from 0 to 1; the share of pictures the
  oracle reads in each style.
- Image-to-image: the world's pictures of new scenes in a seen style, redrawn with each style's adapter at strengths
  0.3-0.9; the shape and colour kept, the style taken on.

Missing adapters are trained into --workdir (a finished run there is reused): <style>/ with the style's shipped
picture, content/ with style_one_shot:content. Writes the JSON, and with --page a markdown page and SVG plots
beside it.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from muse_styledrop import files, images
from muse_styledrop.configs import style_one_shot
from muse_styledrop.pipeline import EMBEDDED_BASE, Pipeline
from muse_styledrop.requests import Request, Term
from muse_styledrop.sampling import SamplingSettings
from muse_styledrop.shapes import COLOURS, SHAPES, STYLES, grading, oracle, references, render
from muse_styledrop.shapes.world import POSITIONS, Obj, Scene

GAMMAS = (0.0, 0.25, 0.5, 0.75, 1.0)
STRENGTHS = (0.3, 0.5, 0.7, 0.9)
STYLE_NAMES = list(STYLES)


def adapter_dir(workdir: Path, name: str) -> Path:
  """A finished run's workdir, trained first when missing."""
  from muse_styledrop.train import train_and_evaluate  # noqa: PLC0415

  out = workdir / name
  if not (out / "adapter.safetensors").is_file():
    if name == "content":
      config = style_one_shot.get_config("content")
    else:
      config = style_one_shot.get_config()
      reference = references.reference_run(name)
      config.style_images, config.content_prompts = reference["image"], reference["content"]
      config.style_descriptor = reference["style"]
      config.evals.shapes_oracle.style = name
    train_and_evaluate(config, out)
  return out


def subject_scenes(count: int) -> list[Scene]:
  """`count` scenes of the subject, over sizes, positions and backgrounds (a fixed order)."""
  shape_colour = references.SUBJECT
  backgrounds = ("white", "beige", "sky", "grey")
  combos = itertools.product(("medium", "large", "small"), POSITIONS, backgrounds)
  scenes = [
    Scene((Obj(shape_colour[1], shape_colour[0], size, pos),), bg)
    for size, pos, bg in combos
    if size != "large" or pos == "center"
  ]
  return [scenes[i * len(scenes) // count] for i in range(count)]


def reads(grader, pictures) -> dict[str, np.ndarray]:
  pred = grader(pictures)
  return {k: pred[k] for k in ("shape", "colour", "style")}


def share(right: np.ndarray) -> dict:
  return {
    "mean": round(float(right.mean()), 4),
    "se": round(float(np.sqrt(right.mean() * (1 - right.mean()) / len(right))), 4),
  }


def composition(pipe, grader, styles, settings, count) -> dict:
  scenes = subject_scenes(count)
  contents = [references.subject_caption(s) for s in scenes]
  heart = SHAPES.index(references.SUBJECT[1])
  green = list(COLOURS).index(references.SUBJECT[0])
  rows = {}
  for i, style in enumerate(styles):
    style_id, content_id = i, len(styles)
    rows[style] = {}
    for g in GAMMAS:
      wanted = [
        Request((Term(f"{c} {STYLES[style]}", style_id, 1 - g), Term(c, content_id, g)), settings[style])
        for c in contents
      ]
      pictures = decode(pipe, pipe.draw_requests(wanted, seed=0))
      r = reads(grader, pictures)
      subject = (r["shape"] == heart) & (r["colour"] == green)
      styled = r["style"] == STYLE_NAMES.index(style)
      rows[style][str(g)] = {"subject": share(subject), "style": share(styled), "both": share(subject & styled)}
      if g == 0.5:
        rows[style]["grid"] = pictures[:8]
      print(
        f"composition {style} g={g}: subject {subject.mean():.0%} style {styled.mean():.0%} both "
        f"{(subject & styled).mean():.0%}"
      )
  return rows


def blending(pipe, grader, pairs, ids, settings, count) -> dict:
  scenes = grading.eval_scenes(count, 99)
  rows = {}
  for a, b in pairs:
    key = f"{a}+{b}"
    rows[key] = {}
    for w in GAMMAS:
      wanted = [
        Request(
          (Term(f"{s.content()} {STYLES[a]}", ids[a], 1 - w), Term(f"{s.content()} {STYLES[b]}", ids[b], w)),
          settings[a],
        )
        for s in scenes
      ]
      pictures = decode(pipe, pipe.draw_requests(wanted, seed=0))
      r = reads(grader, pictures)
      content = grading.grade(pictures, scenes, None, grader)["content_accuracy"]
      rows[key][str(w)] = {
        "style_a": share(r["style"] == STYLE_NAMES.index(a)),
        "style_b": share(r["style"] == STYLE_NAMES.index(b)),
        "shape_colour": content,
      }
      print(
        f"blend {key} w={w}: {a} {rows[key][str(w)]['style_a']['mean']:.0%} "
        f"{b} {rows[key][str(w)]['style_b']['mean']:.0%} shape+colour {content:.0%}"
      )
  return rows


def image_to_image(pipe, grader, styles, ids, settings, count) -> dict:
  scenes = grading.eval_scenes(count, 77)
  seen = [s for s in STYLE_NAMES if s in ("flat", "glossy", "sticker", "pastel")]
  sources = np.stack([render(s, seen[i % len(seen)], i) for i, s in enumerate(scenes)])
  init = pipe.encode_images(sources.astype(np.float32) / 255.0)
  rows = {}
  for style in styles:
    rows[style] = {}
    for strength in STRENGTHS:
      wanted = [Request((Term(f"{s.content()} {STYLES[style]}", ids[style]),), settings[style]) for s in scenes]
      pictures = decode(pipe, pipe.draw_requests(wanted, seed=0, init_tokens_BHW=init, strength=strength))
      graded = grading.grade(pictures, scenes, [style] * len(scenes), grader)
      rows[style][str(strength)] = {"shape_colour": graded["content_accuracy"], "style": graded["style_accuracy"]}
      print(
        f"image-to-image {style} strength {strength}: shape+colour {graded['content_accuracy']:.0%} "
        f"style {graded['style_accuracy']:.0%}"
      )
  return rows


def decode(pipe, tokens) -> np.ndarray:
  return np.concatenate([pipe.decode_tokens(tokens[i : i + 64]) for i in range(0, len(tokens), 64)])


# -- the page -------------------------------------------------------------------


def lines_svg(series: dict[str, list[float]], xs, xlabel: str, ylabel: str, width=460, height=260) -> str:
  """A small line plot: one line a series, x and y in [0, 1]."""
  left, bottom, right, top = 50, 40, 130, 15
  w, h = width - left - right, height - top - bottom
  px = lambda x: left + x * w
  py = lambda y: top + (1 - y) * h
  colours = ["#1b6ac9", "#d1495b", "#edae49", "#00798c", "#66a182", "#8d5fd3"]
  grid = "".join(
    f'<line x1="{left}" x2="{left + w}" y1="{py(t)}" y2="{py(t)}" stroke="#ddd"/>'
    f'<text x="{left - 6}" y="{py(t) + 4}" text-anchor="end" font-size="11">{t:.0%}</text>'
    for t in (0, 0.25, 0.5, 0.75, 1)
  )
  ticks = "".join(f'<text x="{px(x)}" y="{top + h + 16}" text-anchor="middle" font-size="11">{x:g}</text>' for x in xs)
  body = ""
  for n, (name, ys) in enumerate(series.items()):
    c = colours[n % len(colours)]
    points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
    body += f'<polyline points="{points}" fill="none" stroke="{c}" stroke-width="2"/>'
    body += "".join(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{c}"/>' for x, y in zip(xs, ys))
    body += f'<text x="{left + w + 10}" y="{top + 14 + 16 * n}" font-size="12" fill="{c}">{name}</text>'
  labels = (
    f'<text x="{left + w / 2}" y="{height - 6}" text-anchor="middle" font-size="12">{xlabel}</text>'
    f'<text x="14" y="{top + h / 2}" text-anchor="middle" font-size="12" '
    f'transform="rotate(-90 14 {top + h / 2})">{ylabel}</text>'
  )
  return (
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">'
    f'<rect width="{width}" height="{height}" fill="white"/>{grid}{ticks}{body}{labels}</svg>'
  )


def pct(cell) -> str:
  return f"{cell['mean']:.0%}" if isinstance(cell, dict) else f"{cell:.0%}"


def write_page(results: dict, page: Path) -> None:
  comp, blend, i2i = results["composition"], results["blending"], results["image_to_image"]
  stem = page.with_suffix("")
  gs = [float(g) for g in GAMMAS]
  files.write_text(
    lines_svg(
      {s: [comp[s][str(g)]["both"]["mean"] for g in GAMMAS] for s in comp},
      gs,
      "content share g",
      "green heart in the style",
    ),
    Path(f"{stem}_composition.svg"),
  )
  first = next(iter(blend))
  a, b = first.split("+")
  files.write_text(
    lines_svg(
      {
        f"reads {a}": [blend[first][str(w)]["style_a"]["mean"] for w in GAMMAS],
        f"reads {b}": [blend[first][str(w)]["style_b"]["mean"] for w in GAMMAS],
      },
      gs,
      f"share w of {b}",
      "pictures",
    ),
    Path(f"{stem}_blending.svg"),
  )
  out = [PAGE_INTRO.format(count=results["pictures"]), "## Composition", ""]
  out.append("| style | " + " | ".join(f"g = {g}" for g in GAMMAS) + " |")
  out.append("|---" * (len(GAMMAS) + 1) + "|")
  for s in comp:
    out.append(f"| {s} | " + " | ".join(pct(comp[s][str(g)]["both"]) for g in GAMMAS) + " |")
  mean = {g: np.mean([comp[s][str(g)]["both"]["mean"] for s in comp]) for g in GAMMAS}
  out.append("| mean | " + " | ".join(f"{mean[g]:.0%}" for g in GAMMAS) + " |")
  out += ["", "Green heart and style right, by each reading alone (mean over styles):", ""]
  out.append("| reading | " + " | ".join(f"g = {g}" for g in GAMMAS) + " |")
  out.append("|---" * (len(GAMMAS) + 1) + "|")
  for k, name in (("subject", "green heart"), ("style", "the style")):
    out.append(
      f"| {name} | " + " | ".join(f"{np.mean([comp[s][str(g)][k]['mean'] for s in comp]):.0%}" for g in GAMMAS) + " |"
    )
  out += ["", f"![composition]({stem.name}_composition.svg) ![composed pictures]({stem.name}_composition.png)", ""]
  out += [COMPOSITION_READING, ""]
  out += [
    "## Blending",
    "",
    "| styles | reading | " + " | ".join(f"w = {w}" for w in GAMMAS) + " |",
    "|---|---" + "|---" * len(GAMMAS) + "|",
  ]
  for key, row in blend.items():
    a, b = key.split("+")
    for k, name in (("style_a", a), ("style_b", b)):
      out.append(f"| {key} | {name} | " + " | ".join(pct(row[str(w)][k]) for w in GAMMAS) + " |")
    out.append(f"| {key} | shape+colour | " + " | ".join(pct(row[str(w)]["shape_colour"]) for w in GAMMAS) + " |")
  out += ["", f"![blending]({stem.name}_blending.svg)", ""]
  out += [
    "## Image-to-image with an adapter",
    "",
    "| style | reading | " + " | ".join(f"strength {s}" for s in STRENGTHS) + " |",
    "|---|---" + "|---" * len(STRENGTHS) + "|",
  ]
  for style, row in i2i.items():
    for k, name in (("shape_colour", "shape+colour kept"), ("style", "style taken")):
      out.append(f"| {style} | {name} | " + " | ".join(pct(row[str(s)][k]) for s in STRENGTHS) + " |")
  files.write_text("\n".join(out) + "\n", page)


PAGE_INTRO = """# Adapters drawn together: measured

Composition, blending and image-to-image with adapters on the shapes world, graded by the oracle; {count}
pictures a cell (a standard error of up to 9 points; every one is in the JSON), seed 0, each adapter's recorded
settings. Reproduce:

    python benchmarks/composition.py --out=docs/benchmarks/composition.json --page=docs/composition.md

How to draw them: [sampling.md](sampling.md). Composition: the content adapter learned a green heart called
"sks heart" from five pictures in a seen style; each held-out style's round-1 adapter is composed with it on
"a <size> sks heart <where> <style phrase>", content share g (g = 0: the style adapter alone, g = 1: the content adapter
alone). A cell is the share of pictures the oracle reads as a green heart in that style.
"""


COMPOSITION_READING = """The grid: the first eight pictures of each style at g = 0.5, a row a style in the table's
order. Every row draws hearts in the style's texture; what the oracle refuses is mostly the colour: the style
adapters carry their reference's palette (mosaic's orange, neon's blue) into the heart. The content adapter alone
draws the green heart 72% of the time, in its own seen style."""


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--styles", default="mosaic,stained_glass,neon,crayon")
  p.add_argument("--pairs", default="mosaic+neon,stained_glass+crayon")
  p.add_argument("--pictures", type=int, default=32)
  p.add_argument("--workdir", default="runs/composition")
  p.add_argument("--out", default="")
  p.add_argument("--page", default="")
  args = p.parse_args()
  styles = args.styles.split(",")
  pairs = [tuple(x.split("+")) for x in args.pairs.split(",")]
  workdir = Path(args.workdir)
  dirs = [adapter_dir(workdir, s) for s in styles] + [adapter_dir(workdir, "content")]
  pipe = Pipeline.from_pretrained(EMBEDDED_BASE)
  metas = pipe.load_adapters(dirs)
  settings = {s: SamplingSettings.from_dict(m["sampling"]) for s, m in zip(styles, metas)}
  ids = {s: i for i, s in enumerate(styles)}
  grader = oracle.Grader()
  results = {"pictures": args.pictures}
  results["composition"] = composition(pipe, grader, styles, settings, args.pictures)
  grids = [results["composition"][s].pop("grid") for s in styles]
  results["blending"] = blending(pipe, grader, pairs, ids, settings, args.pictures)
  results["image_to_image"] = image_to_image(pipe, grader, styles, ids, settings, args.pictures)
  if args.out:
    files.write_json(results, Path(args.out))
  if args.page:
    page = Path(args.page)
    write_page(results, page)
    images.save_png(images.grid(np.concatenate(grids), columns=8), Path(f"{page.with_suffix('')}_composition.png"))
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
