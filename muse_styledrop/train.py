r"""The trainer: StyleDrop adapters on a frozen base, or every weight (pretraining, full fine-tune).

  python -m muse_styledrop.train --config=configs/style_one_shot.py [--workdir=DIR] [--config.key=value ...]

The entry point parses flags and calls `train_and_evaluate(config, workdir)`,
which tests call directly. A workdir ends with checkpoints/, adapter.safetensors
(+ .json), samples.png, metrics.jsonl, tensorboard/ and summary.json. Running
the same command again resumes from the latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from tqdm import tqdm

from muse_styledrop import checkpointing, data, images, sampling, sharding, weights
from muse_styledrop.metrics import MetricWriter
from muse_styledrop.models.adapters import AdapterConfig, AdapterParam
from muse_styledrop.pipeline import Pipeline, check_model_dir, resolve_base_model


class TrainingDiverged(RuntimeError):
  """The loss or gradients became NaN/Inf."""


# ----------------------------------------------------------------------------
# The loss and the step
# ----------------------------------------------------------------------------


def mask_tokens(rng, tokens_BHW, mask_id: int):
  """Mask a cosine-scheduled random fraction of each example's tokens (Muse): rate cos(pi/2 u), u ~ U(0, 1)."""
  b = tokens_BHW.shape[0]
  flat = tokens_BHW.reshape(b, -1)
  rate_rng, order_rng = jax.random.split(rng)
  rate_B = jnp.cos(math.pi / 2 * jax.random.uniform(rate_rng, (b,)))
  count_B = jnp.maximum(1, jnp.round(rate_B * flat.shape[1])).astype(jnp.int32)
  rank_BL = jnp.argsort(jnp.argsort(jax.random.uniform(order_rng, flat.shape), axis=-1), axis=-1)
  mask_BL = rank_BL < count_B[:, None]
  return jnp.where(mask_BL, mask_id, flat).reshape(tokens_BHW.shape), mask_BL.reshape(tokens_BHW.shape)


def masked_loss(model, tokens_BHW, text_BTD, pooled_BD, micro_BM, adapter_ids_B, rng, mask_id: int):
  """Cross-entropy of the true tokens at the masked positions only (the base model's own objective)."""
  masked, mask = mask_tokens(rng, tokens_BHW, mask_id)
  logits = model(masked, text_BTD, pooled_BD, micro_BM, adapter_ids_B).astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens_BHW)
  return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class StyleData:
  """Everything a step draws from, on device: tokenised image versions and their prompts' embeddings."""

  tokens_NHW: jax.Array  # every augmented version of every image
  image_N: jax.Array  # which image (and so which prompt) each version shows
  text_ITD: jax.Array  # prompt embeddings per image
  pooled_ID: jax.Array
  empty_text_TD: jax.Array  # the empty prompt, for text dropout
  empty_pooled_D: jax.Array
  micro_M: jax.Array


def draw_batch(rng, d: StyleData, batch_size: int, text_dropout: float):
  pick_rng, drop_rng = jax.random.split(rng)
  n = jax.random.randint(pick_rng, (batch_size,), 0, d.tokens_NHW.shape[0])
  image = d.image_N[n]
  drop = jax.random.uniform(drop_rng, (batch_size,)) < text_dropout
  text = jnp.where(drop[:, None, None], d.empty_text_TD, d.text_ITD[image])
  pooled = jnp.where(drop[:, None], d.empty_pooled_D, d.pooled_ID[image])
  return d.tokens_NHW[n], text, pooled, jnp.tile(d.micro_M[None], (batch_size, 1))


def make_train_steps(
  graphdef,
  tx,
  *,
  steps: int,
  batch_size: int,
  mask_id: int,
  text_dropout: float,
  use_adapter: bool,
  batch_sharding=None,
):
  """`steps` optimizer steps as one pure function (a lax.scan): (trainable, frozen, opt, rng, data) -> ..."""

  def one_step(carry, _, frozen, d):
    trainable, opt_state, rng = carry
    rng, batch_rng, mask_rng = jax.random.split(rng, 3)
    tokens, text, pooled, micro = draw_batch(batch_rng, d, batch_size, text_dropout)
    if batch_sharding is not None:
      tokens, text, pooled, micro = (
        jax.lax.with_sharding_constraint(x, batch_sharding) for x in (tokens, text, pooled, micro)
      )
    ids = jnp.zeros((batch_size,), jnp.int32) if use_adapter else None

    def loss_fn(trainable):
      model = nnx.merge(graphdef, trainable, frozen)
      return masked_loss(model, tokens, text, pooled, micro, ids, mask_rng, mask_id)

    loss, grads = jax.value_and_grad(loss_fn)(trainable)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    return (trainable, opt_state, rng), {"loss": loss, "grad_norm": optax.global_norm(grads)}

  def train_steps(trainable, frozen, opt_state, rng, d):
    (trainable, opt_state, rng), m = jax.lax.scan(
      functools.partial(one_step, frozen=frozen, d=d), (trainable, opt_state, rng), length=steps
    )
    finite = jnp.isfinite(m["loss"]).all() & jnp.isfinite(m["grad_norm"]).all()
    return (
      trainable,
      opt_state,
      rng,
      {"loss": m["loss"].mean(), "last_loss": m["loss"][-1], "grad_norm": m["grad_norm"].mean(), "finite": finite},
    )

  return train_steps


def record_metrics(step_done: int, metrics, *, workdir: Path, bar, writer: MetricWriter) -> dict:
  """Fetch one call's metrics, stop on NaN/Inf (the last good checkpoint stays), show and write them."""
  metrics = jax.device_get(metrics)
  if not metrics.pop("finite"):
    raise TrainingDiverged(
      f"loss or gradients became NaN/Inf in the steps up to {step_done}; the last good "
      f"checkpoint is kept in {workdir / 'checkpoints'}; lower config.optimizer.learning_rate"
    )
  metrics = {k: float(v) for k, v in metrics.items()}
  bar.set_postfix(loss=f"{metrics['loss']:.4f}")
  writer.write(step_done, metrics)
  return metrics


def make_optimizer(c: ml_collections.ConfigDict, total_steps: int = 0) -> optax.GradientTransformation:
  """Adam (AdamW when weight_decay > 0), optional global-norm clipping, a linear warmup, then a constant rate
  (schedule 'constant', the paper's) or a cosine decay to 5% over `total_steps` (schedule 'cosine', pretraining)."""
  warmup = max(c.warmup_steps, 1)
  if c.get("schedule", "constant") == "cosine":
    schedule = optax.warmup_cosine_decay_schedule(
      0.0, c.learning_rate, warmup, max(total_steps, warmup + 1), c.learning_rate * 0.05
    )
  elif c.warmup_steps == 0:
    schedule = optax.constant_schedule(c.learning_rate)
  else:
    schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, c.learning_rate, warmup), optax.constant_schedule(c.learning_rate)], [warmup]
    )
  adam = (
    optax.adamw(schedule, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay)
    if c.weight_decay
    else optax.adam(schedule, b1=c.b1, b2=c.b2, eps=c.eps)
  )
  return optax.chain(optax.clip_by_global_norm(c.grad_clip), adam) if c.grad_clip else adam


# ----------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------


def adapter_config(config) -> AdapterConfig:
  return AdapterConfig(**config.adapter.to_dict())


def encode_style(pipe: Pipeline, style: data.StyleSet, config) -> StyleData:
  side = pipe.transformer.config.sample_size * pipe.downscale
  a = config.augment
  pictures, image_index = data.augmented_images(
    style, side, a.enabled, a.crops, config.seed, hues=a.get("hues", 0), hue_caption=a.get("hue_caption", "phrase")
  )
  tokens = jnp.concatenate([pipe.encode_images(pictures[i : i + 8]) for i in range(0, len(pictures), 8)])
  phrase_alone = image_index.max() == len(style.paths)  # hue copies captioned with the phrase index one more prompt
  text, pooled = pipe.encode_prompts(style.prompts + ([style.style_phrase] if phrase_alone else []))
  empty_text, empty_pooled = pipe.encode_prompts([""])
  return StyleData(
    tokens, jnp.asarray(image_index), text, pooled, empty_text[0], empty_pooled[0], pipe.micro_conds(1, side, side)[0]
  )


def sample_grid(pipe: Pipeline, sampler: sampling.Sampler, state, style: data.StyleSet, config, use_adapter: bool):
  """uint8 pictures of the sample prompts drawn with the current weights (StyleDrop guidance with an adapter)."""
  c = config.sample
  prompts = [data.join_prompt(p, style.style_phrase) for p in c.prompts] * c.per_prompt
  text, pooled = pipe.encode_prompts(prompts)
  neg_text, neg_pooled = pipe.encode_prompts([c.negative_prompt] * len(prompts))
  side = pipe.transformer.config.sample_size * pipe.downscale
  micro = pipe.micro_conds(len(prompts), side, side)
  if use_adapter:
    passes = sampling.styledrop_from_config(c, text, pooled, neg_text, neg_pooled, micro)
  else:
    passes = sampling.classifier_free(text, pooled, neg_text, neg_pooled, micro, c.lambda_b)
  grid_hw = (pipe.transformer.config.sample_size,) * 2
  tokens = sampler(
    passes,
    jax.random.key(c.seed),
    grid_hw,
    num_steps=c.steps,
    temperature=tuple(c.temperature),
    token_temperature=c.token_temperature,
    state=state,
  )
  return pipe.decode_tokens(tokens)


def run_metadata(pipe: Pipeline, style: data.StyleSet, config, use_adapter: bool) -> dict:
  return {
    "base_fingerprint": pipe.fingerprint,
    "adapter": dataclasses.asdict(adapter_config(config)),
    "trainable": "adapter" if use_adapter else "all",
    "style_phrase": style.style_phrase,
    "training_prompts": style.prompts,
    "style_images": [str(p) for p in style.paths],
    "config": json.loads(config.to_json_best_effort()),
  }


def evaluate_style(pipe, sampler, state, style: data.StyleSet, config, base: Path, workdir: Path) -> dict | None:
  """On the shapes world, grade the adapter and the base (style phrase only) on new prompts with the oracle.

  The reference is config.evaluate.reference (round 2: round 1's picture), else the first style picture; the
  target style is config.evaluate.style, or, on the embedded base, what the oracle reads in the reference. The
  new prompts avoid the reference's shape and colour. Writes evaluation.json and replaces samples.png with
  reference / adapter / base rows.
  """
  from muse_styledrop.pipeline import EMBEDDED_BASE  # noqa: PLC0415
  from muse_styledrop.shapes import grading  # noqa: PLC0415

  grader = grading.grader_or_none(config.evaluate.oracle)
  if grader is None or not (config.evaluate.style or base.resolve() == EMBEDDED_BASE.resolve()):
    return None  # not a shapes-world run: nothing knows the truth
  reference = Path(config.evaluate.get("reference") or style.paths[0])
  seen = grading.read_reference(grader, reference)
  target = config.evaluate.style or seen["style"]
  if target not in grading.STYLES_LIST:
    raise ValueError(f"config.evaluate.style={target!r} is not a shapes-world style; use one of {grading.STYLES_LIST}")
  report, pictures = grading.style_eval(
    pipe,
    sampler,
    state,
    grader,
    style=target,
    style_phrase=style.style_phrase,
    avoid=(seen["shape"], seen["colour"]),
    count=config.evaluate.prompts,
    seed=config.evaluate.seed,
    sample_config=config.sample,
  )
  weights.write_json(
    {**report, "reference": {"path": str(reference), "oracle_reads": seen}}, workdir / "evaluation.json"
  )
  side = pictures["adapter"].shape[1]
  picture = (images.load_image(reference, side) * 255).round().astype("uint8")
  columns = min(8, len(pictures["adapter"]))
  grades = lambda who: f"{report[who]['style_accuracy']:.0%} style, {report[who]['content_accuracy']:.0%} shape+colour"
  bands = [
    (f"reference: {reference.name}", picture[None]),
    (f"StyleDrop adapter: {grades('adapter')} ({target})", pictures["adapter"]),
    (f"base + style phrase: {grades('base')}", pictures["base"]),
    (
      f"the world's own pictures of these prompts through the VQ (the tokens' ceiling): {grades('ceiling')}",
      pictures["ceiling"],
    ),
  ]
  images.save_png(images.titled_bands(bands, columns), workdir / "samples.png")
  return report


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
  """Train as `config` says, in `workdir` (resuming from its latest checkpoint); return the summary."""
  workdir = Path(workdir)
  use_adapter = config.trainable == "adapter"
  if config.trainable not in ("adapter", "all"):
    raise ValueError(f"config.trainable={config.trainable!r}; use 'adapter' (StyleDrop) or 'all' (pretraining)")
  if config.steps % config.steps_per_call:
    raise ValueError(f"config.steps={config.steps} is not a multiple of config.steps_per_call={config.steps_per_call}")

  # -- Init -------------------------------------------------------------------
  base = check_model_dir(resolve_base_model(config.base_model))  # cheap checks first, heavy loading last
  style = data.resolve_style_set(config.style_images, config.content_prompts, config.style_descriptor)
  if (reference := config.get("evaluate", {}).get("reference")) and not Path(reference).is_file():
    raise FileNotFoundError(f"config.evaluate.reference={reference} does not exist; give round 1's style picture")
  pipe = Pipeline.from_pretrained(base)
  style_data = encode_style(pipe, style, config)
  model = pipe.transformer
  if use_adapter:
    model.attach_adapters(adapter_config(config), nnx.Rngs(config.seed))
  trainable_filter = AdapterParam if use_adapter else nnx.Param
  graphdef, trainable, frozen = nnx.split(model, trainable_filter, ...)
  tx = make_optimizer(config.optimizer)
  opt_state = tx.init(trainable)
  rng = jax.random.key(config.seed)
  meta = run_metadata(pipe, style, config, use_adapter)

  # -- Shard & transfer -------------------------------------------------------
  mesh = sharding.make_mesh(config.mesh.to_dict())
  sharding.check_batch_size(mesh, config.batch_size)
  frozen_sh = sharding.frozen_shardings(mesh, frozen)
  trainable_sh = (
    sharding.replicated_shardings(mesh, trainable) if use_adapter else sharding.frozen_shardings(mesh, trainable)
  )
  opt_sh = jax.tree.map(
    lambda x: sharding.fsdp(mesh, x.shape) if not use_adapter and x.ndim else sharding.replicated(mesh), opt_state
  )
  rep = sharding.replicated(mesh)
  frozen = jax.device_put(frozen, frozen_sh)
  trainable = jax.device_put(trainable, trainable_sh)
  nnx.update(model, trainable, frozen)  # the model holds the placed arrays, so the unplaced ones can be freed
  opt_state = jax.device_put(opt_state, opt_sh)
  style_data = jax.device_put(style_data, rep)
  train_steps = jax.jit(
    make_train_steps(
      graphdef,
      tx,
      steps=config.steps_per_call,
      batch_size=config.batch_size,
      mask_id=pipe.mask_token_id,
      text_dropout=config.text_dropout,
      use_adapter=use_adapter,
      batch_sharding=sharding.batch(mesh),
    ),
    in_shardings=(trainable_sh, frozen_sh, opt_sh, rep, rep),
    out_shardings=(trainable_sh, opt_sh, rep, rep),
    donate_argnums=(0, 2),
  )

  # -- Restore ----------------------------------------------------------------
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints", use_async=config.checkpoint.use_async)
  step = 0
  if (latest := ckpt.latest_step()) is not None:
    old = ckpt.meta(latest)
    if old.get("base_fingerprint") != pipe.fingerprint:
      raise checkpointing.CheckpointMismatch(
        f"{workdir} holds checkpoints of a run on another base model (fingerprint {old.get('base_fingerprint')}, "
        f"this base is {pipe.fingerprint}); use a new --workdir"
      )
    like = {"trainable": trainable, "opt_state": opt_state, "rng": jax.random.key_data(rng)}
    restored, _ = ckpt.restore(latest, like)
    trainable, opt_state = restored["trainable"], restored["opt_state"]
    rng = jax.random.wrap_key_data(restored["rng"])
    step = latest
    print(f"resumed from {workdir / 'checkpoints' / str(latest)}")

  # -- Train loop -------------------------------------------------------------
  writer = MetricWriter(workdir)
  sampler = sampling.Sampler(model, pipe.mask_token_id)
  full_state = lambda: nnx.merge_state(trainable, frozen)
  start, pending = time.perf_counter(), None
  bar = tqdm(
    total=config.steps, initial=step, desc="train", unit="step", dynamic_ncols=True, disable=jax.process_index() != 0
  )

  log = functools.partial(record_metrics, workdir=workdir, bar=bar, writer=writer)

  last = {}
  try:
    while step < config.steps:
      trainable, opt_state, rng, metrics = train_steps(trainable, frozen, opt_state, rng, style_data)
      step += config.steps_per_call
      if pending is not None:  # read one call late, so the device never waits for the host
        last = log(*pending)
      pending = (step, metrics)
      bar.update(config.steps_per_call)
      at = lambda every, step=step: every and step % every == 0
      if at(config.checkpoint.every) or step == config.steps:
        last = log(*pending)  # never checkpoint unchecked weights
        pending = None
        ckpt.save(step, {"trainable": trainable, "opt_state": opt_state, "rng": jax.random.key_data(rng)}, meta)
      if at(config.sample.every) and step < config.steps:
        pictures = sample_grid(pipe, sampler, full_state(), style, config, use_adapter)
        images.save_png(
          images.grid(pictures, columns=len(config.sample.prompts)), workdir / "samples" / f"step_{step:06d}.png"
        )
    if pending is not None:
      last = log(*pending)
  finally:
    bar.close()
    ckpt.close()
    writer.close()
  train_seconds = time.perf_counter() - start

  # -- Export -----------------------------------------------------------------
  pictures = sample_grid(pipe, sampler, full_state(), style, config, use_adapter)
  images.save_png(images.grid(pictures, columns=len(config.sample.prompts)), workdir / "samples.png")
  summary = {
    "steps": step,
    "train_seconds": round(train_seconds, 1),
    **last,
    "base_fingerprint": pipe.fingerprint,
    "style_phrase": style.style_phrase,
  }
  if use_adapter and config.get("evaluate") and config.evaluate.prompts:
    evaluation = evaluate_style(pipe, sampler, full_state(), style, config, base, workdir)
    if evaluation is not None:
      summary.update(
        adapter=evaluation["adapter"],
        base=evaluation["base"],
        ceiling=evaluation["ceiling"],
        evaluated_style=evaluation["style"],
      )
  if use_adapter:
    final = nnx.state(nnx.merge(graphdef, trainable, frozen), AdapterParam)
    st, _ = weights.write_adapter(final, {**meta, "step": step}, workdir / "adapter")
    summary.update(adapter_parameters=int(sum(x.size for x in jax.tree.leaves(final))), adapter_bytes=st.stat().st_size)
  weights.write_json(summary, workdir / "summary.json")
  return summary


def main(argv):
  from absl import flags  # noqa: PLC0415

  del argv
  config = flags.FLAGS.config
  if config.get("distributed", False):
    jax.distributed.initialize()  # multi-host (TPU pod, multi-node GPU): each process sees the global mesh
  workdir = flags.FLAGS.workdir or str(Path("runs") / config.get("name", "run"))
  summary = train_and_evaluate(config, workdir)
  print(json.dumps(summary, indent=2))


def entry():
  from muse_styledrop.cli import run_config_main  # noqa: PLC0415

  run_config_main(main, "A configs/*.py file, optionally with ':variant'.")


if __name__ == "__main__":
  entry()
