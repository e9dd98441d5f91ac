r"""Measure an adapter as StyleDrop does: CLIP text and style scores beside the base's, and its config's evaluators.

  python -m muse_styledrop.evaluate --adapter=runs/style_one_shot
  python -m muse_styledrop.evaluate --adapter=runs/my_style --base_model=/path/to/amused-256 \
      --clip_model=/path/to/clip-vit-base-patch32 --prompts=evaluation --samples_per_prompt=8

The adapter (a file or a finished training workdir) is drawn with the
sampling settings it records, on new content prompts with its style phrase,
and the base with the style phrase alone on the same prompts and seeds
(--compare_base). The evaluators its training config named run again as they
ran after training (on the embedded base, the oracle). Writes into --out,
whole or not at all: scores.json, report.html (the table, a scatter of text
against style score per picture, the pictures) and pictures/.
"""

from __future__ import annotations

import html
from pathlib import Path

from absl import flags

from muse_styledrop import data, evaluators, files, images
from muse_styledrop.evaluators import clip_scores
from muse_styledrop.pipeline import Pipeline, resolve_base_model, resolve_dtype
from muse_styledrop.sampling import SamplingSettings


class EvaluateError(ValueError):
  """An evaluation that cannot be run as asked."""


def default_out(adapter: Path) -> Path:
  """WORKDIR/evaluation for a workdir, else NAME_evaluation beside the adapter file."""
  return adapter / "evaluation" if adapter.is_dir() else adapter.with_name(adapter.stem + "_evaluation")


def default_prompts(meta: dict) -> str:
  """The shapes world's scenes for an adapter its config graded with the oracle, else the evaluation set."""
  return "shapes" if "shapes_oracle" in meta.get("config", {}).get("evals", {}) else "evaluation"


def evaluate(
  adapter: str,
  *,
  base_model: str = "",
  clip_model: str = "",
  prompts: str = "",
  samples_per_prompt: int = 1,
  reference: str = "",
  out: str = "",
  compare_base: bool = True,
  seed: int = 1234,
) -> dict:
  """Run the evaluation, write `out` (see the module's text), and return the scores."""
  adapter_path = files.path(adapter)
  if not adapter_path.exists():
    raise EvaluateError(f"--adapter={adapter} does not exist; give adapter.safetensors or a finished training workdir")
  if reference and not files.path(reference).is_file():
    raise EvaluateError(f"--reference={reference} does not exist; give the style picture to compare with")
  out_dir = files.path(out) if out else default_out(adapter_path)
  from muse_styledrop import weights  # noqa: PLC0415

  _, meta = weights.read_adapter(adapter_path)
  if "sampling" not in meta:
    raise EvaluateError(f"adapter {adapter} records no sampling settings; export it with muse_styledrop.train")
  clip = clip_scores.Evaluator(  # built first: a bad prompt file or CLIP directory fails before any loading
    prompts=prompts or default_prompts(meta),
    samples_per_prompt=samples_per_prompt,
    seed=seed,
    clip_model=clip_model,
    compare_base=compare_base,
    reference=reference,
  )
  recorded_base = meta.get("config", {}).get("base_model", "")
  pipe = Pipeline.from_pretrained(resolve_base_model(base_model or recorded_base), resolve_dtype("auto"))
  if clip.clip_dir(pipe.path) is None:
    raise EvaluateError(
      f"the base model {pipe.path} ships no clip/ folder; give --clip_model, a transformers CLIPModel directory"
    )
  pipe.load_adapter(adapter_path)
  style = data.StyleSet([files.path(p) for p in meta.get("style_images", [])], [], meta.get("style_phrase", ""))
  if not reference and not style.paths:
    raise EvaluateError(f"adapter {adapter} records no style picture; give --reference=IMAGE")
  run = evaluators.Run(pipe, SamplingSettings.from_dict(meta["sampling"]), style, adapter=0)
  evals = {}
  for name, fields in meta.get("config", {}).get("evals", {}).items():  # what ran after training, as it ran
    fields = dict(fields)
    if reference and "reference" in fields:
      fields["reference"] = reference
    evals[name] = evaluators.build(name, fields)
  evals["clip"] = clip
  results = {name: measure(run) for name, measure in evals.items()}
  scores = evaluators.merge_metrics(results.values())
  scores["about"] = {
    "adapter": str(adapter_path),
    "base_model": base_model or recorded_base or str(pipe.path),
    "base_fingerprint": pipe.fingerprint,
    "style_phrase": style.style_phrase,
    "prompts": evals["clip"].prompts,
    "samples_per_prompt": samples_per_prompt,
    "seed": seed,
    "out": str(out_dir),
  }
  write_report(out_dir, scores, results)
  return scores


# ----------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------

ROWS = {"adapter": "StyleDrop adapter", "base": "base + style phrase", "ceiling": "the world's own pictures (VQ)"}
COLUMNS = {
  "clip_text": "CLIP text",
  "clip_style": "CLIP style",
  "style_accuracy": "oracle style",
  "content_accuracy": "oracle shape+colour",
}


def cell(entry: dict, key: str) -> str:
  """A table cell: 'mean ± se' of a score, or of an accuracy with its standard error; '' when not measured."""
  if key not in entry:
    return ""
  value = entry[key]
  if isinstance(value, dict):
    return f"{value['mean']:.3f} ± {value['se']:.3f}"
  return f"{value:.0%} ± {entry.get(key + '_se', 0):.0%}"


def table_rows(scores: dict) -> list[tuple[str, list[str]]]:
  return [(label, [cell(scores[who], k) for k in COLUMNS]) for who, label in ROWS.items() if who in scores]


def scatter_svg(record: dict, width: int = 560, height: int = 380) -> str:
  """Text score (x) against style score (y), one dot per picture, adapter and base in two colours."""
  colours = {"adapter": "#d6604d", "base": "#4393c3"}
  points = {who: list(zip(record[who]["clip_text"], record[who]["clip_style"])) for who in colours if who in record}
  every = [p for pts in points.values() for p in pts]
  x0, x1 = min(p[0] for p in every), max(p[0] for p in every)
  y0, y1 = min(p[1] for p in every), max(p[1] for p in every)
  left, right, top, bottom = 56, 16, 34, 44  # the legend sits in the top margin, clear of the dots
  span = lambda a, b: (b - a) or 1.0
  sx = lambda x: left + (x - x0) / span(x0, x1) * (width - left - right)
  sy = lambda y: height - bottom - (y - y0) / span(y0, y1) * (height - top - bottom)
  dots = "".join(
    f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{colours[who]}" fill-opacity="0.65"/>'
    for who, pts in points.items()
    for x, y in pts
  )
  legend = "".join(
    f'<circle cx="{left + 8 + 190 * i}" cy="14" r="5" fill="{colours[who]}"/>'
    f'<text x="{left + 18 + 190 * i}" y="18" font-size="13">{ROWS[who]}</text>'
    for i, who in enumerate(points)
  )
  base_y, end_x = height - bottom, width - right
  axes = (
    f'<rect x="{left}" y="{top}" width="{end_x - left}" height="{base_y - top}" fill="none" stroke="#999"/>'
    f'<text x="{(left + end_x) / 2}" y="{height - 8}" font-size="13" text-anchor="middle">CLIP text score</text>'
    f'<text x="14" y="{(top + base_y) / 2}" font-size="13" text-anchor="middle" '
    f'transform="rotate(-90 14 {(top + base_y) / 2})">CLIP style score</text>'
    f'<text x="{left}" y="{base_y + 16}" font-size="11">{x0:.3f}</text>'
    f'<text x="{end_x}" y="{base_y + 16}" font-size="11" text-anchor="end">{x1:.3f}</text>'
    f'<text x="{left - 4}" y="{base_y}" font-size="11" text-anchor="end">{y0:.3f}</text>'
    f'<text x="{left - 4}" y="{top + 10}" font-size="11" text-anchor="end">{y1:.3f}</text>'
  )
  return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">{axes}{dots}{legend}</svg>'


def report_html(scores: dict, clip_record: dict, grids: list[tuple[str, str]]) -> str:
  about = scores["about"]
  head = "".join(f"<th>{html.escape(c)}</th>" for c in ["", *COLUMNS.values()])
  body = "".join(
    "<tr>" + f"<th>{html.escape(label)}</th>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
    for label, cells in table_rows(scores)
  )
  style_note = scores.get("evaluated_style", "")
  figures = "".join(
    f'<figure><img src="{html.escape(src)}" alt="{html.escape(title)}"><figcaption>{html.escape(title)}'
    "</figcaption></figure>"
    for title, src in grids
  )
  return (
    "<!doctype html><html lang=en><meta charset=utf-8>"
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    f"<title>StyleDrop evaluation: {html.escape(about['style_phrase'])}</title>"
    "<style>body{font-family:sans-serif;margin:1.5em;max-width:1100px} table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right} th:first-child{text-align:left}"
    "img,svg{max-width:100%} img{image-rendering:pixelated} figure{margin:1em 0} .muted{color:#666}</style>"
    f"<h1>StyleDrop evaluation: “{html.escape(about['style_phrase'])}”</h1>"
    f"<p class=muted>adapter {html.escape(about['adapter'])} · base {html.escape(about['base_model'])} "
    f"(fingerprint {html.escape(about['base_fingerprint'])}) · prompts {html.escape(about['prompts'])}, "
    f"{about['samples_per_prompt']} per prompt, seed {about['seed']}</p>"
    f"<table><tr>{head}</tr>{body}</table>"
    "<p class=muted>Mean ± standard error. CLIP text: picture against its content prompt; CLIP style: picture "
    "against the style reference. A model that copies its reference scores high on style and low on text."
    + (f" Oracle: {html.escape(style_note)}." if style_note else "")
    + "</p><h2>Text against style, one dot per picture</h2>"
    + scatter_svg(clip_record)
    + f"<h2>Pictures</h2>{figures}</html>"
  )


def write_report(out: Path, scores: dict, results: dict) -> None:
  """Write scores.json, report.html, its grids and pictures/ into `out`, swapped in whole."""
  with files.atomic_folder(out) as tmp:
    write_report_files(tmp, scores, results)


def write_report_files(tmp: Path, scores: dict, results: dict) -> None:
  grids = []
  for name, result in results.items():
    if result.bands:
      columns = min(8, max(len(p) for _, p in result.bands))
      images.save_png(images.titled_bands(result.bands, columns=columns), tmp / f"{name}.png")
      grids.append((f"{name}: what it drew", f"{name}.png"))
    for who, pictures in result.pictures.items():
      for i, picture in enumerate(pictures):
        images.save_png(picture, tmp / "pictures" / name / who / f"{i:04d}.png")
  files.write_json(scores, tmp / "scores.json")
  files.write_json({name: r.record for name, r in results.items()}, tmp / "record.json")
  (tmp / "report.html").write_text(report_html(scores, results["clip"].record, grids))


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("adapter", "", "The adapter: an exported adapter.safetensors or a finished training workdir.")
  flags.DEFINE_string("base_model", "", "aMUSEd-layout base directory; empty = the one the adapter was trained on.")
  flags.DEFINE_string("clip_model", "", "A transformers CLIPModel directory; empty = the base's clip/ folder.")
  flags.DEFINE_string(
    "prompts", "", "A prompt set (evaluation, paper, shapes) or a file, one content prompt a line; empty = the world's."
  )
  flags.DEFINE_integer(
    "samples_per_prompt", 1, "Pictures per prompt (the paper: 8; each is one more draw of every prompt)."
  )
  flags.DEFINE_string("reference", "", "The style picture for the style score; empty = the adapter's own.")
  flags.DEFINE_string("out", "", "Output directory; empty = WORKDIR/evaluation (or NAME_evaluation beside a file).")
  flags.DEFINE_bool("compare_base", True, "Also draw and score the base with the style phrase alone.")
  flags.DEFINE_integer("seed", 1234, "Seed of the pictures (the same for the adapter and the base).")


def main(argv):
  del argv
  if not FLAGS.adapter:
    raise EvaluateError("--adapter is required: an adapter.safetensors or a finished training workdir")
  scores = evaluate(
    FLAGS.adapter,
    base_model=FLAGS.base_model,
    clip_model=FLAGS.clip_model,
    prompts=FLAGS.prompts,
    samples_per_prompt=FLAGS.samples_per_prompt,
    reference=FLAGS.reference,
    out=FLAGS.out,
    compare_base=FLAGS.compare_base,
    seed=FLAGS.seed,
  )
  out = files.path(scores["about"]["out"])
  for label, cells in table_rows(scores):
    print(f"{label:30s} " + "  ".join(f"{c:>16s}" for c in cells))
  print(f"wrote {out / 'scores.json'} and {out / 'report.html'}")


def entry():
  from muse_styledrop.cli import run_main  # noqa: PLC0415

  define_flags()
  run_main(main)


if __name__ == "__main__":
  entry()
