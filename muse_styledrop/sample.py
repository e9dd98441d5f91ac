r"""Draw pictures from a base model, alone or with StyleDrop adapters.

  python -m muse_styledrop.sample --base_model=/path/to/amused-256 \
      --prompt="a watercolor painting of a house" --num_images=4 --out=runs/samples
  python -m muse_styledrop.sample --adapter=runs/style_one_shot --prompt="a blue circle in mosaic style"
  # my content in my style: the style adapter on the prompt, the content adapter on it without the style phrase
  python -m muse_styledrop.sample --adapter=STYLE --content_adapter=CONTENT --gamma=0.6 \
      --prompt="sks dog in watercolor painting style"
  # two styles blended, w of the second
  python -m muse_styledrop.sample --adapter=STYLE_A --blend_adapter=STYLE_B --blend=0.5 --prompt="..."
  # many styles in one batch: each line of the file is 'name: prompt' (or a bare prompt: the base alone)
  python -m muse_styledrop.sample --adapters=a=DIR1,b=DIR2 --prompts_file=prompts.txt

With an adapter (a file or a finished training workdir), the sampling settings
it was trained and graded with (adapter.json's "sampling") are the defaults,
so the same prompt and seed give the picture the training run drew; any flag
given on the command line overrides its setting. Without one, aMUSEd's
defaults apply. Writes image_000.png, ... and, for several images, grid.png
into --out.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from absl import app, flags

from muse_styledrop import files, images
from muse_styledrop import prompts as prompt_sets
from muse_styledrop.pipeline import Pipeline, resolve_base_model, resolve_dtype
from muse_styledrop.requests import Request, Term
from muse_styledrop.sampling import SamplingSettings

FLAGS = flags.FLAGS
# The flags that are sampling settings: with an adapter, only those given on the command line override its own.
SETTING_FLAGS = (
  "steps",
  "temperature",
  "token_temperature",
  "guidance_scale",
  "lambda_a",
  "lambda_a_end",
  "lambda_b",
  "negative_prompt",
)


def define_flags() -> None:
  """The command's flags, defined when it runs (importing this module defines none)."""
  flags.DEFINE_string("base_model", "", "aMUSEd-layout model directory; empty = the embedded base model.")
  flags.DEFINE_multi_string("prompt", ["a red circle"], "Prompt; repeat the flag for several prompts.")
  flags.DEFINE_integer("num_images", 1, "Images per prompt.")
  flags.DEFINE_integer("seed", 0, "Random seed; the same prompt, seed and settings give the same picture.")
  flags.DEFINE_integer("resolution", 0, "Image side in pixels; 0 = the model's native size.")
  flags.DEFINE_string("out", "runs/samples", "Output directory.")
  flags.DEFINE_string("init_image", "", "Image-to-image: a picture to redraw (its layout is kept).")
  flags.DEFINE_float("strength", 0.5, "Image-to-image: share of the decoding steps that redraw the picture, in (0, 1].")
  flags.DEFINE_string("adapter", "", "An exported adapter (adapter.safetensors) or a finished training workdir.")
  flags.DEFINE_string("content_adapter", "", "Composition: a content adapter, mixed with --adapter's style.")
  flags.DEFINE_float("gamma", 0.5, "Composition: the content adapter's share g of the mixed logits, in [0, 1].")
  flags.DEFINE_string(
    "content_prompt",
    "",
    "Composition: the content adapter's prompt (default: --prompt without --adapter's style phrase).",
  )
  flags.DEFINE_string("blend_adapter", "", "Blending: a second style adapter, mixed with --adapter's.")
  flags.DEFINE_float("blend", 0.5, "Blending: the second style's share w of the mixed logits, in [0, 1].")
  flags.DEFINE_list("adapters", [], "Many styles in one batch: name=adapter,... for the names --prompts_file uses.")
  flags.DEFINE_string(
    "prompts_file",
    "",
    "Prompts, one a line, each 'name: prompt' for an adapter of --adapters "
    "or a bare prompt (--adapter's, or the base alone); replaces --prompt.",
  )
  # sampling settings (SETTING_FLAGS); the defaults are aMUSEd's, an adapter's recorded ones replace them
  flags.DEFINE_integer("steps", 12, "Decoding steps (aMUSEd: 12).")
  flags.DEFINE_list("temperature", ["2.0", "0.0"], "Confidence noise start,end (linear annealing).")
  flags.DEFINE_float(
    "token_temperature", 1.0, "Divides the logits tokens are drawn from: 1 is diffusers' rule, toward 0 the likeliest."
  )
  flags.DEFINE_float("guidance_scale", 9.0, "Without an adapter: s in l = c + s (c - u); diffusers' 10 is s = 9.")
  flags.DEFINE_float("lambda_a", 1.0, "With an adapter: A(t) + lambda_a (A(t) - G(t)) + ...")
  flags.DEFINE_float("lambda_a_end", None, "With an adapter: lambda_a goes linearly to this at the last step.")
  flags.DEFINE_float("lambda_b", 5.0, "With an adapter: ... + lambda_b (G(t) - G(n)).")
  flags.DEFINE_string("negative_prompt", "", "Negative prompt for guidance.")


def flag_settings(recorded: dict | None) -> SamplingSettings:
  """The adapter's recorded settings (or the flags' defaults when there are none), with every flag given on the
  command line in place of its setting."""
  given = {name: FLAGS[name].value for name in SETTING_FLAGS if recorded is None or FLAGS[name].present}
  if "temperature" in given:
    given["temperature"] = tuple(float(t) for t in given["temperature"])
  return SamplingSettings.from_dict({**(recorded or {}), **given})


def recorded_settings(recorded: dict | None) -> SamplingSettings:
  if recorded is None:
    raise ValueError("this adapter records no sampling settings; give them")
  return SamplingSettings.from_dict(recorded)


def named_adapters(items: list[str]) -> dict[str, str]:
  """--adapters' name=adapter items as {name: adapter}."""
  named: dict[str, str] = {}
  for item in items:
    name, sep, path = (x.strip() for x in item.partition("="))
    if not sep or not re.fullmatch(r"[\w.-]+", name) or not path:
      raise ValueError(f"--adapters item {item!r}: write name=adapter, a name of letters, digits, '.', '-' or '_'")
    if name in named or name == "none":
      raise ValueError(f"--adapters names {name!r} twice or uses the reserved name 'none'; give each adapter its own")
    named[name] = path
  return named


def read_lines(path: str, names) -> list[tuple[str | None, str]]:
  """(adapter name, prompt) of each line of a prompts file: 'name: prompt' names an adapter, 'none: prompt' the base
  alone, and a bare prompt ('') --adapter's (or the base's when none is given)."""
  found = []
  for line in prompt_sets.read_file(path):
    head, sep, rest = (x.strip() for x in line.partition(":"))
    if sep and (head in names or head == "none"):
      found.append((None if head == "none" else head, rest))
    elif sep and re.fullmatch(r"[\w.-]+", head):
      known = ", ".join([*names, "none"])
      raise ValueError(f"{path}: the line {line!r} names {head!r}, which is not one of {known}; add it to --adapters")
    else:
      found.append(("", line))
  if any(not prompt for _, prompt in found):
    raise ValueError(f"{path}: a line names an adapter but holds no prompt; write 'name: prompt'")
  return found


def without_phrase(prompt: str, phrase: str) -> str:
  """The prompt with the style phrase taken out: the content adapter's prompt in a composition."""
  if not phrase or phrase not in prompt:
    raise ValueError(
      f"the prompt {prompt!r} does not hold the style adapter's phrase {phrase!r}, so the content adapter's prompt "
      "cannot be made from it; write the phrase into --prompt or give --content_prompt"
    )
  return " ".join(prompt.replace(phrase, " ").split())


def run(
  base_model: str,
  prompts: list[str],
  num_images: int,
  seed: int,
  out: Path,
  adapter: str = "",
  settings_for: Callable[[dict | None], SamplingSettings] = recorded_settings,
  resolution: int = 0,
  init_image: str = "",
  strength: float = 0.5,
  *,
  content_adapter: str = "",
  gamma: float = 0.5,
  content_prompt: str = "",
  blend_adapter: str = "",
  blend: float = 0.5,
  adapters: dict[str, str] | None = None,
  prompts_file: str = "",
) -> list[Path]:
  """Draw `num_images` of each prompt and write them, with the settings `settings_for` makes of an adapter's
  recorded ones (None for pictures of the base alone, or when it records none).

  With `content_adapter`, each picture mixes --adapter's guided logits on the prompt with the content adapter's on
  the prompt without the style phrase, share `gamma`; with `blend_adapter`, --adapter's with the second style's on
  the prompt with the second style's phrase, share `blend`. A picture takes --adapter's settings. With `adapters`
  (name -> adapter), the lines of `prompts_file` name theirs, each drawn with its own settings, all in one batch.
  """
  adapters = dict(adapters or {})
  if sum(bool(x) for x in (content_adapter, blend_adapter, adapters)) > 1:
    raise ValueError("give one of --content_adapter, --blend_adapter and --adapters")
  if (content_adapter or blend_adapter) and not adapter:
    raise ValueError("--content_adapter and --blend_adapter mix with a style adapter: give --adapter too")
  for name, share in (("gamma", gamma), ("blend", blend)):
    if not 0 <= share <= 1:
      raise ValueError(f"--{name}={share} is a share of the mixed logits: give a number in [0, 1]")
  lines = read_lines(prompts_file, adapters) if prompts_file else [("", p) for p in prompts]
  if any(not p.strip() for _, p in lines):
    raise ValueError("a --prompt is empty; write what to draw (with the adapter's style phrase for its style)")
  pipe = Pipeline.from_pretrained(resolve_base_model(base_model), resolve_dtype("auto"))
  paths = [p for p in (adapter, content_adapter, blend_adapter) if p] + list(adapters.values())
  metas = pipe.load_adapters(paths) if paths else []
  settings = [settings_for(m.get("sampling")) for m in metas]
  entry = {name: i for i, name in enumerate(adapters, start=len(paths) - len(adapters))}
  phrase = lambda i: metas[i].get("style_phrase", "")
  wanted = []
  for name, prompt in lines:
    if name is None or (name == "" and not adapter):
      terms, s = (Term(prompt),), settings_for(None)
    elif name:
      terms, s = (Term(prompt, entry[name]),), settings[entry[name]]
    elif content_adapter:
      content = content_prompt or without_phrase(prompt, phrase(0))
      terms, s = (Term(prompt, 0, 1 - gamma), Term(content, 1, gamma)), settings[0]
    elif blend_adapter:
      other = prompt.replace(phrase(0), phrase(1)) if phrase(0) else prompt
      terms, s = (Term(prompt, 0, 1 - blend), Term(other, 1, blend)), settings[0]
    else:
      terms, s = (Term(prompt, 0),), settings[0]
    wanted += [Request(terms, s)] * num_images
  side = resolution or pipe.grid_hw[0] * pipe.downscale
  init = None
  if init_image:
    picture = images.load_image(init_image, side)
    init = pipe.encode_images(picture[None]).repeat(len(wanted), axis=0)
  start = time.perf_counter()
  tokens = pipe.draw_requests(wanted, seed=seed, init_tokens_BHW=init, strength=strength, side=side)
  pictures = np.concatenate([pipe.decode_tokens(tokens[i : i + 64]) for i in range(0, len(tokens), 64)])
  steps = sorted({r.settings.steps for r in wanted})
  print(
    f"{len(wanted)} image(s), {'/'.join(map(str, steps))} steps, {time.perf_counter() - start:.1f}s (compile included)"
  )
  paths = [images.save_png(p, out / f"image_{i:03d}.png") for i, p in enumerate(pictures)]
  if len(pictures) > 1:
    paths.append(
      images.save_png(images.grid(pictures, columns=images.grid_columns(len(lines), num_images)), out / "grid.png")
    )
  return paths


def main(argv):
  del argv
  if len(FLAGS.temperature) != 2:
    raise app.UsageError("--temperature takes two numbers: start,end")
  paths = run(
    FLAGS.base_model,
    FLAGS.prompt,
    FLAGS.num_images,
    FLAGS.seed,
    files.path(FLAGS.out),
    FLAGS.adapter,
    flag_settings,
    FLAGS.resolution,
    FLAGS.init_image,
    FLAGS.strength,
    content_adapter=FLAGS.content_adapter,
    gamma=FLAGS.gamma,
    content_prompt=FLAGS.content_prompt,
    blend_adapter=FLAGS.blend_adapter,
    blend=FLAGS.blend,
    adapters=named_adapters(FLAGS.adapters),
    prompts_file=FLAGS.prompts_file,
  )
  print("wrote", ", ".join(str(p) for p in paths))


def entry():
  from muse_styledrop.cli import run_main  # noqa: PLC0415

  define_flags()
  run_main(main)


if __name__ == "__main__":
  entry()
