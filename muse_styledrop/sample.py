r"""Draw pictures from a base model, alone or with a StyleDrop adapter.

  python -m muse_styledrop.sample --base_model=/path/to/amused-256 \
      --prompt="a watercolor painting of a house" --num_images=4 --out=runs/samples
  python -m muse_styledrop.sample --adapter=runs/style_one_shot --prompt="a blue circle in mosaic style"

With an adapter (a file or a finished training workdir), the sampling settings
it was trained and graded with (adapter.json's "sampling") are the defaults,
so the same prompt and seed give the picture the training run drew; any flag
given on the command line overrides its setting. Without one, aMUSEd's
defaults apply. Writes image_000.png, ... and, for several images, grid.png
into --out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from absl import app, flags

from muse_styledrop import files, images
from muse_styledrop.pipeline import Pipeline, resolve_base_model, resolve_dtype
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
) -> list[Path]:
  """Draw `num_images` of each prompt and write them, with the settings `settings_for` makes of the adapter's
  recorded ones (None without an adapter, or when it records none)."""
  pipe = Pipeline.from_pretrained(resolve_base_model(base_model), resolve_dtype("auto"))
  recorded = pipe.load_adapter(adapter).get("sampling") if adapter else None
  settings = settings_for(recorded)
  side = resolution or pipe.grid_hw[0] * pipe.downscale
  all_prompts = [p for p in prompts for _ in range(num_images)]
  init = None
  if init_image:
    picture = images.load_image(init_image, side)
    init = pipe.encode_images(picture[None]).repeat(len(all_prompts), axis=0)
  start = time.perf_counter()
  pictures = pipe.draw(
    all_prompts,
    settings,
    seed=seed,
    adapter=0 if adapter else None,
    init_tokens_BHW=init,
    strength=strength,
    side=side,
  )
  print(f"{len(all_prompts)} image(s), {settings.steps} steps, {time.perf_counter() - start:.1f}s (compile included)")
  paths = [images.save_png(p, out / f"image_{i:03d}.png") for i, p in enumerate(pictures)]
  if len(pictures) > 1:
    paths.append(
      images.save_png(images.grid(pictures, columns=images.grid_columns(len(prompts), num_images)), out / "grid.png")
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
  )
  print("wrote", ", ".join(str(p) for p in paths))


def entry():
  from muse_styledrop.cli import run_main  # noqa: PLC0415

  define_flags()
  run_main(main)


if __name__ == "__main__":
  entry()
