r"""The StyleDrop paper's table rebuilt on the shapes world: every method on every held-out style, one command.

  python benchmarks/paper_table.py --out=docs/benchmarks/paper_table.json --page=docs/paper_table.md \
    [--styles=mosaic,neon] [--workdir=runs/paper_table]

For each held-out style and its shipped reference picture, these rows (one training run each, in
<workdir>/<style>/<row>; a finished run is read back, a killed one resumes from its checkpoint):
  prompting      the base given the style phrase (the round-1 run's `base` pictures)
  round1         StyleDrop round 1 (configs/style_one_shot.py, the README's recipe)
  round2_random  round 2 on round 1's pool, one picture kept per prompt at random (the control)
  round2_clip    ... the picture CLIP scores best against its prompt
  round2_oracle  ... a picture the oracle reads as the prompt's shape and colour in the style (it stands in for
                 the person, who judges shape, colour and style by eye)
  full           DreamBooth-like: every transformer weight trained on the same picture (trainable=all), the same
                 steps and batch, Adam 1e-4 (a tenth of the base's pretraining rate)
  sks            round 1 with the rare phrase "in sks style" for the descriptive one
Every row is graded on the same 24 new prompts and seeds (the shapes_oracle evaluator's, content that avoids the
reference's shape and colour): CLIP text score (picture vs content prompt) and CLIP style score (picture vs the
reference) with the embedded base's CLIP, and the oracle's style and shape-and-colour accuracy. Round 2's pool is
the feedback command's (30 prompts of the world, 8 pictures each, token temperature 1, confidence noise 2 -> 0).
Writes the JSON and the markdown page with the paper's three claims checked against the numbers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from absl import flags

from muse_styledrop import cli, feedback, files, shapes
from muse_styledrop.configs import style_one_shot
from muse_styledrop.evaluators.shapes_oracle import POOL_SEED
from muse_styledrop.shapes import grading, oracle, references
from muse_styledrop.train import train_and_evaluate

flags.DEFINE_list("styles", list(shapes.HELD_OUT), "Held-out styles, comma-separated.")
flags.DEFINE_string("workdir", "runs/paper_table", "One folder per style and row; finished rows are read back.")
flags.DEFINE_string("out", "", "Write every row's numbers as JSON here.")
flags.DEFINE_string("page", "", "Write the markdown table and the claims here.")
flags.DEFINE_integer("steps", 0, "Training steps of every row (0: the recipe's); a small number checks the command.")
flags.DEFINE_integer("pool_per_prompt", 8, "Round 2's pool: pictures per prompt.")

ROWS = ("prompting", "round1", "round2_random", "round2_clip", "round2_oracle", "full", "sks")
LABELS = {
  "prompting": "prompting",
  "round1": "round 1",
  "round2_random": "round 2, random",
  "round2_clip": "round 2, CLIP",
  "round2_oracle": "round 2, oracle",
  "full": "full fine-tune",
  "sks": "round 1, sks",
}
PROMPTS, SEED = 24, 1234  # the shapes_oracle evaluator's defaults: the README run's grades
FULL_LEARNING_RATE = 1e-4


def row_config(style: str, prompts_file: Path, row: str, selected: Path | None = None):
  """The training config of one row: the README's, with the style's picture and both evaluators on one prompt set."""
  reference = references.reference_run(style)
  config = style_one_shot.get_config("round2" if selected else None)
  config.style_images = str(selected) if selected else reference["image"]
  config.content_prompts = "" if selected else reference["content"]
  config.style_descriptor = "in sks style" if row == "sks" else reference["style"]
  config.evals.shapes_oracle.update(prompts=PROMPTS, seed=SEED, style=style, reference=reference["image"])
  clip = dict(prompts=str(prompts_file), samples_per_prompt=1, seed=SEED, clip_model="", reference=reference["image"])
  with config.unlocked():
    config.evals.clip = dict(**clip, compare_base=row == "round1", batch=64)
  if flags.FLAGS.steps:
    config.steps = flags.FLAGS.steps
  if row == "full":
    config.trainable = "all"
    config.optimizer.learning_rate = FULL_LEARNING_RATE
  return config


def run_row(config, workdir: Path) -> dict:
  """Train and grade one row, or read a finished one back."""
  if (workdir / "summary.json").is_file():
    return json.loads((workdir / "summary.json").read_text())
  start = time.perf_counter()
  summary = train_and_evaluate(config, workdir)
  summary["wall_seconds"] = round(time.perf_counter() - start, 1)
  files.write_json(summary, workdir / "summary.json")
  return summary


def oracle_selection(entries: list[dict], pictures: np.ndarray, style: str, grader) -> list[str]:
  """Per prompt, one pool picture the oracle reads as the prompt's shape and colour, in the style when one is (the
  most confidently so); a prompt with none right keeps none, as a person judging by eye would."""
  scenes = {s.content(): s for s in grading.eval_scenes(len({e["content"] for e in entries}), POOL_SEED)}
  pred = grader(pictures)
  best: dict[str, tuple[tuple, str]] = {}
  for i, e in enumerate(entries):
    obj = scenes[e["content"]].objects[0]
    if (grading.SHAPES[int(pred["shape"][i])], list(grading.COLOURS)[int(pred["colour"][i])]) != (
      obj.shape,
      obj.colour,
    ):
      continue
    in_style = grading.STYLES_LIST[int(pred["style"][i])] == style
    rank = (in_style, float(pred["style_confidence"][i]) if in_style else 0.0)
    if e["content"] not in best or rank > best[e["content"]][0]:
      best[e["content"]] = (rank, e["file"])
  return [file for _, file in best.values()]


def pool_pictures(pool: Path) -> tuple[list[dict], np.ndarray]:
  from PIL import Image  # noqa: PLC0415

  entries = json.loads((pool / "pool" / "pool.json").read_text())
  return entries, np.stack([np.asarray(Image.open(pool / "pool" / e["file"]).convert("RGB")) for e in entries])


def select_from_pool(pool: Path, how: str, style: str, grader) -> Path:
  """Keep one picture a prompt of the drawn pool by CLIP's text score or by the oracle; written like the command's
  own selected/ folder, its record saying how it was chosen."""
  entries, pictures = pool_pictures(pool)
  if how == "clip":
    contents = list(dict.fromkeys(e["content"] for e in entries))
    n = len(entries) // len(contents)
    scores = feedback.clip_scores(
      shapes_base_clip(),
      pictures.reshape(len(contents), n, *pictures.shape[1:]),
      [entries[i * n]["prompt"] for i in range(len(contents))],
    )
    names = [feedback.pool_file(i, j) for i, j in feedback.choose("clip", scores, scores.shape, 1, 0)]
  else:
    names = oracle_selection(entries, pictures, style, grader)
  record = json.loads((pool / "selected_random" / "selection.json").read_text())
  record.pop("kept")
  feedback.write_selected(pool, entries, names, {**record, "select": how})
  return (pool / "selected").rename(pool / f"selected_{how}")


def round2_rows(style: str, root: Path, prompts_file: Path, grader) -> dict:
  """One pool drawn from round 1, three selections of it, a round-2 run on each."""
  pool = root / "pool"
  out = {}
  for how in ("random", "clip", "oracle"):
    row = f"round2_{how}"
    selected = pool / f"selected_{how}"
    if not (root / row / "summary.json").is_file():
      if not (selected / "captions.txt").is_file():
        if how == "random":
          per_prompt = flags.FLAGS.pool_per_prompt
          feedback.run_feedback(str(root / "round1"), pool, select_how="random", per_prompt=per_prompt)
          (pool / "selected").rename(selected)
        else:
          select_from_pool(pool, how, style, grader)
      out[row] = run_row(row_config(style, prompts_file, row, selected), root / row)
    else:
      out[row] = json.loads((root / row / "summary.json").read_text())
    out[row]["kept"] = len((selected / "captions.txt").read_text().splitlines())
  return out


def shapes_base_clip() -> Path:
  from muse_styledrop.pipeline import EMBEDDED_BASE  # noqa: PLC0415

  return Path(EMBEDDED_BASE) / "clip"


def style_rows(style: str, root: Path, grader) -> dict:
  reference = references.reference_run(style)
  seen = grading.read_reference(grader, reference["image"])
  prompts_file = root / "prompts.txt"
  if not prompts_file.is_file():
    root.mkdir(parents=True, exist_ok=True)
    scenes = grading.eval_scenes(PROMPTS, SEED, (seen["shape"], seen["colour"]))
    prompts_file.write_text("".join(f"{s.content()}\n" for s in scenes))
  summaries = {"round1": run_row(row_config(style, prompts_file, "round1"), root / "round1")}
  summaries.update(round2_rows(style, root, prompts_file, grader))
  for row in ("full", "sks"):
    summaries[row] = run_row(row_config(style, prompts_file, row), root / row)
  rows = {row: cells(s["adapter"]) | {"kept": s.get("kept")} for row, s in summaries.items()}
  rows["prompting"] = cells(summaries["round1"]["base"])
  for row, s in summaries.items():
    rows[row]["wall_seconds"] = s.get("wall_seconds")
  return {row: rows[row] for row in ROWS}


def cells(graded: dict) -> dict:
  """The table's four numbers of one row (each with its standard error and count)."""
  return {
    "clip_text": graded["clip_text"],
    "clip_style": graded["clip_style"],
    "oracle_style": {"mean": graded["style_accuracy"], "se": graded["style_accuracy_se"], "n": graded["count"]},
    "oracle_content": {"mean": graded["content_accuracy"], "se": graded["content_accuracy_se"], "n": graded["count"]},
  }


METRICS = {
  "clip_text": "CLIP text",
  "clip_style": "CLIP style",
  "oracle_style": "oracle style",
  "oracle_content": "oracle shape+colour",
}


def table(results: dict) -> str:
  """One table per measure: a row per method, a column per style (mean±standard error) and their mean."""
  out = []
  for key, title in METRICS.items():
    pct = key.startswith("oracle")
    fmt = (lambda m: f"{m:.0%}") if pct else (lambda m: f"{m:.3f}")
    out.append(f"**{title}**\n\n| method | {' | '.join(results)} | mean |\n|---|{'---|' * (len(results) + 1)}")
    for row in ROWS:
      cells = [f"{fmt(rows[row][key]['mean'])}±{fmt(rows[row][key]['se'])}" for rows in results.values()]
      out.append(f"| {LABELS[row]} | {' | '.join(cells)} | {fmt(mean(results, row, key))} |")
    out.append("")
  return "\n".join(out)


def mean(results: dict, row: str, key: str) -> float:
  return float(np.mean([rows[row][key]["mean"] for rows in results.values()]))


def gap(results: dict, a: str, b: str, key: str) -> tuple[float, float]:
  """Row a minus row b, averaged over the styles, and the standard error of that difference."""
  rows = list(results.values())
  diff = float(np.mean([r[a][key]["mean"] - r[b][key]["mean"] for r in rows]))
  return diff, float(np.sqrt(sum(r[a][key]["se"] ** 2 + r[b][key]["se"] ** 2 for r in rows)) / len(rows))


def verdict(ahead: bool, behind: bool) -> str:
  return "holds" if ahead else "does not hold" if behind else "within the noise"


def claims(results: dict) -> list[str]:
  """The paper's three claims, each decided by differences of means over the styles run, against twice their
  standard error (24 prompts a style: about ±10% a cell on the oracle's accuracies)."""
  m = lambda row, k: mean(results, row, k)
  ahead = lambda a, b, k: gap(results, a, b, k)[0] > 2 * gap(results, a, b, k)[1]
  behind = lambda a, b, k: gap(results, a, b, k)[0] < -2 * gap(results, a, b, k)[1]
  r1, base = m("round1", "oracle_style"), m("prompting", "oracle_style")
  wide = r1 - base >= 0.3 and ahead("round1", "prompting", "oracle_style")
  out = [
    f"- **Round 1 wins on style by a wide margin over prompting: {'holds' if wide else 'does not hold'}.** Oracle "
    f"style {r1:.0%} against {base:.0%}; CLIP style {m('round1', 'clip_style'):.3f} against "
    f"{m('prompting', 'clip_style'):.3f}."
  ]
  text = {row: m(row, "clip_text") for row in ("round1", "round2_random", "round2_clip", "round2_oracle")}
  content = {row: m(row, "oracle_content") for row in text}
  picked = ("round2_clip", "round2_oracle")
  recovers = verdict(
    all(ahead(r, "round1", "oracle_content") for r in picked),
    any(behind(r, "round1", "oracle_content") for r in picked),
  )
  out.append(
    f"- **Feedback recovers text fidelity: {recovers}.** Shape+colour (the oracle's text fidelity) round 1 / "
    "random / CLIP / oracle selection: "
    + " / ".join(f"{content[r]:.0%}" for r in text)
    + "; CLIP text: "
    + " / ".join(f"{text[r]:.3f}" for r in text)
    + "."
  )
  style_gap, style_se = gap(results, "round1", "full", "oracle_style")
  content_gap, content_se = gap(results, "round1", "full", "oracle_content")
  beats = verdict(
    ahead("round1", "full", "oracle_style") and not behind("round1", "full", "oracle_content"),
    behind("round1", "full", "oracle_style") or behind("round1", "full", "oracle_content"),
  )
  out.append(
    f"- **Adapters beat full fine-tuning from one image: {beats}.** Round 1 minus full fine-tune: style "
    f"{style_gap:+.0%}±{style_se:.0%}, shape+colour {content_gap:+.0%}±{content_se:.0%} "
    f"(round 1 {r1:.0%} / {m('round1', 'oracle_content'):.0%}, full {m('full', 'oracle_style'):.0%} / "
    f"{m('full', 'oracle_content'):.0%})."
  )
  return out


def main(argv):
  del argv
  args = flags.FLAGS
  grader = oracle.Grader(oracle.load())
  results = {}
  for style in args.styles:
    results[style] = style_rows(style, Path(args.workdir) / style, grader)
    # after every style: a stop loses at most the style in progress, whose runs resume
    if args.out:
      files.write_json(results, Path(args.out))
    if args.page:
      files.write_text(page(results, args), Path(args.page))
  print(table(results))
  print("\n".join(claims(results)))


def page(results: dict, args) -> str:
  return (
    "# The paper's table on the shapes world\n\n"
    + PAGE_INTRO
    + f"\n    python benchmarks/paper_table.py --styles={','.join(results)} --out={args.out} --page={args.page}\n\n"
    + table(results)
    + "\n## The paper's claims here\n\n"
    + "\n".join(claims(results))
    + "\n"
  )


PAGE_INTRO = """The StyleDrop paper's comparison on the shapes world's held-out styles. Rows: the base given the style
phrase (prompting); round 1; round 2 on round 1's pool, one picture a prompt kept at random, by CLIP, or by the
oracle in the person's place; a full fine-tune on the same picture (DreamBooth-like); round 1 with "in sks style".
Each row draws the same 24 new prompts and seeds per style: mean±standard error of CLIP text (picture vs content
prompt) and CLIP style (vs the reference; docs/research/clip_scores.md) scores and the oracle's
accuracies. A claim holds when the difference of means over styles exceeds twice its standard error. Recipes:
`benchmarks/paper_table.py`.
"""

if __name__ == "__main__":
  cli.run_main(main)
