r"""Draw images from a base model with MaskGIT decoding and classifier-free guidance.

  python -m muse_styledrop.sample --base_model=/path/to/amused-256 \
      --prompt="a watercolor painting of a house" --num_images=4 --out=runs/samples

Writes image_000.png, ... and, for several images, grid.png into --out.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
from absl import app, flags

from muse_styledrop import images, sampling
from muse_styledrop.pipeline import Pipeline, resolve_base_model

FLAGS = flags.FLAGS
flags.DEFINE_string("base_model", "", "aMUSEd-layout model directory; empty = the embedded base model.")
flags.DEFINE_multi_string("prompt", ["a red circle"], "Prompt; repeat the flag for several prompts.")
flags.DEFINE_string("negative_prompt", "", "Negative prompt for guidance.")
flags.DEFINE_integer("num_images", 1, "Images per prompt.")
flags.DEFINE_integer("seed", 0, "Random seed; the same seed and flags give the same images.")
flags.DEFINE_integer("steps", 12, "Decoding steps (aMUSEd: 12).")
flags.DEFINE_float("guidance_scale", 9.0, "s in l = c + s (c - u); diffusers' aMUSEd default 10 equals s = 9.")
flags.DEFINE_list("temperature", ["2.0", "0.0"], "Confidence temperature start,end (linear annealing).")
flags.DEFINE_float(
  "token_temperature", 1.0, "Divides the logits tokens are drawn from: 1 is diffusers' rule, toward 0 the likeliest."
)
flags.DEFINE_integer("resolution", 0, "Image side in pixels; 0 = the model's native size.")
flags.DEFINE_string("out", "runs/samples", "Output directory.")
flags.DEFINE_string("init_image", "", "Image-to-image: a picture to redraw (its layout is kept).")
flags.DEFINE_float("strength", 0.5, "Image-to-image: share of the decoding steps that redraw the picture, in (0, 1].")
flags.DEFINE_string("adapter", "", "An exported adapter (adapter.safetensors) or a finished training workdir.")
flags.DEFINE_float("lambda_a", 1.0, "StyleDrop adapter guidance: A(t) + lambda_a (A(t) - G(t)) + ...")
flags.DEFINE_float(
  "lambda_a_end", None, "With an adapter: lambda_a goes linearly from --lambda_a at the first step to this at the last."
)
flags.DEFINE_float("lambda_b", 5.0, "StyleDrop text guidance: ... + lambda_b (G(t) - G(n)); with an adapter only.")


def run(
  base_model: str,
  prompts: list[str],
  negative_prompt: str,
  num_images: int,
  seed: int,
  steps: int,
  guidance_scale: float,
  temperature: tuple[float, float],
  resolution: int,
  out: Path,
  adapter: str = "",
  lambda_a: float = 1.0,
  lambda_b: float = 5.0,
  init_image: str = "",
  strength: float = 0.5,
  token_temperature: float = 1.0,
  lambda_a_end: float | None = None,
) -> list[Path]:
  pipe = Pipeline.from_pretrained(resolve_base_model(base_model))
  if adapter:
    pipe.load_adapter(adapter)
  side = resolution or pipe.transformer.config.sample_size * pipe.downscale
  if side % pipe.downscale:
    raise ValueError(f"--resolution={side} is not a multiple of the tokenizer's downscale {pipe.downscale}")
  grid_hw = (side // pipe.downscale,) * 2
  all_prompts = [p for p in prompts for _ in range(num_images)]
  text, pooled = pipe.encode_prompts(all_prompts)
  neg_text, neg_pooled = pipe.encode_prompts([negative_prompt] * len(all_prompts))
  micro = pipe.micro_conds(len(all_prompts), side, side)
  if adapter:
    passes = sampling.styledrop(
      text, pooled, neg_text, neg_pooled, micro, lambda_a, lambda_b, lambda_a_end=lambda_a_end
    )
  else:
    passes = sampling.classifier_free(text, pooled, neg_text, neg_pooled, micro, guidance_scale)
  init, first = None, 0
  if init_image:
    picture = images.load_image(init_image, side)
    tokens = pipe.encode_images(picture[None]).repeat(len(all_prompts), axis=0)
    init, first = sampling.image_to_image_start(jax.random.key(seed + 1), tokens, steps, strength, pipe.mask_token_id)
  start = time.perf_counter()
  tokens = pipe.sampler(
    passes,
    jax.random.key(seed),
    grid_hw,
    num_steps=steps,
    temperature=temperature,
    token_temperature=token_temperature,
    init_tokens_BHW=init,
    start_step=first,
  )
  pictures = pipe.decode_tokens(tokens)
  print(f"{len(all_prompts)} image(s), {steps} steps, {time.perf_counter() - start:.1f}s (compile included)")
  paths = [images.save_png(p, out / f"image_{i:03d}.png") for i, p in enumerate(pictures)]
  if len(pictures) > 1:
    paths.append(
      images.save_png(images.grid(pictures, columns=images.grid_columns(len(prompts), num_images)), out / "grid.png")
    )
  return paths


def main(argv):
  del argv
  temperature = tuple(float(t) for t in FLAGS.temperature)
  if len(temperature) != 2:
    raise app.UsageError("--temperature takes two numbers: start,end")
  if FLAGS.token_temperature <= 0:
    raise app.UsageError(
      f"--token_temperature={FLAGS.token_temperature} must be > 0 (small values: the likeliest token)"
    )
  paths = run(
    FLAGS.base_model,
    FLAGS.prompt,
    FLAGS.negative_prompt,
    FLAGS.num_images,
    FLAGS.seed,
    FLAGS.steps,
    FLAGS.guidance_scale,
    temperature,
    FLAGS.resolution,
    Path(FLAGS.out),
    FLAGS.adapter,
    FLAGS.lambda_a,
    FLAGS.lambda_b,
    FLAGS.init_image,
    FLAGS.strength,
    FLAGS.token_temperature,
    FLAGS.lambda_a_end,
  )
  print("wrote", ", ".join(str(p) for p in paths))


def entry():
  from muse_styledrop.cli import run_main  # noqa: PLC0415

  run_main(main)


if __name__ == "__main__":
  entry()
