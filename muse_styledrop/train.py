r"""The trainer: StyleDrop adapters on a frozen base, or every weight (full fine-tune).

  python -m muse_styledrop.train --config=configs/style_one_shot.py [--workdir=DIR] [--config.key=value ...]

The entry point parses flags and calls `train_and_evaluate(config, workdir)`,
which tests call directly. A workdir ends with checkpoints/, adapter.safetensors
(+ .json, which records the sampling settings the run drew with), samples.png,
metrics.jsonl, tensorboard/, summary.json and, when config.evals names
evaluators, evaluation.json. Running the same command again resumes from the
latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from muse_styledrop import checkpointing, data, distributed, evaluators, faults, files, images, loop, sharding, weights
from muse_styledrop.losses import masked_loss
from muse_styledrop.models.adapters import AdapterConfig, AdapterParam
from muse_styledrop.optim import check_run_lengths, make_optimizer
from muse_styledrop.pipeline import Pipeline, check_model_dir, resolve_base_model, resolve_dtype
from muse_styledrop.sampling import SamplingSettings

# ----------------------------------------------------------------------------
# The step
# ----------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class EncodedStyle:
  """A style set as a step draws from it, on device: tokenised image versions and their prompts' embeddings."""

  tokens_NHW: jax.Array  # every augmented version of every image
  image_N: jax.Array  # which image (and so which prompt) each version shows
  text_ITD: jax.Array  # prompt embeddings per image
  pooled_ID: jax.Array
  empty_text_TD: jax.Array  # the empty prompt, for text dropout
  empty_pooled_D: jax.Array
  micro_M: jax.Array


def draw_batch(rng, d: EncodedStyle, batch_size: int, text_dropout: float):
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


def jit_train_steps(graphdef, tx, config, mask_id: int, use_adapter: bool, mesh, rules, state_shardings):
  """The jitted call of `config.steps_per_call` steps, laid out on `mesh`: what training runs and aot compiles.

  state_shardings: (trainable, frozen, optimizer state) shardings; the rng and the style data are replicated.
  """
  trainable_sh, frozen_sh, opt_sh = state_shardings
  rep = sharding.replicated(mesh)
  steps = make_train_steps(
    graphdef,
    tx,
    steps=config.steps_per_call,
    batch_size=config.batch_size,
    mask_id=mask_id,
    text_dropout=config.text_dropout,
    use_adapter=use_adapter,
    batch_sharding=sharding.batch(mesh, rules),
  )
  return jax.jit(
    steps,
    in_shardings=(trainable_sh, frozen_sh, opt_sh, rep, rep),
    out_shardings=(trainable_sh, opt_sh, rep, rep),
    donate_argnums=(0, 2),
  )


# ----------------------------------------------------------------------------
# The run's pieces
# ----------------------------------------------------------------------------


def adapter_config(config) -> AdapterConfig:
  return AdapterConfig(**config.adapter.to_dict())


def encode_style(pipe: Pipeline, style: data.StyleSet, config) -> EncodedStyle:
  side = pipe.grid_hw[0] * pipe.downscale
  a = config.augment
  pictures, image_index = data.augmented_images(
    style, side, a.enabled, a.crops, config.seed, hues=a.hues, hue_caption=a.hue_caption
  )
  tokens = jnp.concatenate([pipe.encode_images(pictures[i : i + 8]) for i in range(0, len(pictures), 8)])
  phrase_alone = image_index.max() == len(style.paths)  # hue copies captioned with the phrase index one more prompt
  text, pooled = pipe.encode_prompts(style.prompts + ([style.style_phrase] if phrase_alone else []))
  empty_text, empty_pooled = pipe.encode_prompts([""])
  return EncodedStyle(
    tokens, jnp.asarray(image_index), text, pooled, empty_text[0], empty_pooled[0], pipe.micro_conds(1, side, side)[0]
  )


def sample_prompts(config, style: data.StyleSet) -> list[str]:
  """The prompts of the run's sample grid: each of config.sample.prompts with the style phrase, per_prompt times."""
  return [data.join_prompt(p, style.style_phrase) for p in config.sample.prompts] * config.sample.per_prompt


def style_inputs(style: data.StyleSet) -> dict:
  """What a run learns from, as its workdir records it: pictures (names and content hashes), phrase, texts."""
  return {
    "style_images": [str(p) for p in style.paths],
    "style_sha256": style.sha256(),
    "style_phrase": style.style_phrase,
    "content_texts": style.contents,
  }


def run_metadata(pipe: Pipeline, style: data.StyleSet, config, use_adapter: bool, settings: SamplingSettings) -> dict:
  return {
    "base_fingerprint": pipe.fingerprint,
    "adapter": dataclasses.asdict(adapter_config(config)),
    "trainable": "adapter" if use_adapter else "all",
    "role": config.role,
    "training_prompts": style.prompts,
    **style_inputs(style),
    "sampling": settings.to_dict(),
    "config": json.loads(config.to_json_best_effort()),
  }


IDENTITY = {"style_sha256": "style picture(s)", "style_phrase": "style phrase", "content_texts": "content text(s)"}


def _shown(field: str, value, meta: dict) -> str:
  if field == "style_sha256":  # a hash names no file: show the recorded names beside the short hashes
    return ", ".join(f"{Path(n).name} (sha256 {h[:12]})" for n, h in zip(meta["style_images"], value, strict=True))
  return repr(value if field == "style_phrase" else " | ".join(value))


def recorded_inputs(ckpt, workdir: Path) -> dict | None:
  """What a workdir's run was trained on: its latest checkpoint's metadata, else its exported adapter's."""
  latest = ckpt.latest_step()
  if latest is not None:
    return ckpt.meta(latest)
  return weights.read_adapter(workdir)[1] if (workdir / "adapter.safetensors").is_file() else None


def check_same_inputs(workdir: Path, old: dict | None, new: dict) -> None:
  """Refuse to resume (or re-export) a run over other pictures, another style phrase or other content texts."""
  for field, name in IDENTITY.items():
    if old is None or field not in old or old[field] == new[field]:
      continue
    raise checkpointing.CheckpointMismatch(
      f"{workdir} was trained with {name} {_shown(field, old[field], old)}, this run has "
      f"{_shown(field, new[field], new)}; use a new --workdir, or add --fresh to set the old run aside and "
      "start afresh"
    )


def restore_or_start(ckpt, workdir: Path, fingerprint: str, like: dict) -> tuple[dict, int]:
  """The latest checkpoint's state and step, or `like` and 0; a checkpoint of another base is refused."""
  latest = ckpt.latest_step()
  if latest is None:
    return like, 0
  old = ckpt.meta(latest)
  if old["base_fingerprint"] != fingerprint:
    raise checkpointing.CheckpointMismatch(
      f"{workdir} holds checkpoints of a run on another base model (fingerprint {old['base_fingerprint']}, "
      f"this base is {fingerprint}); use a new --workdir"
    )
  restored, _ = ckpt.restore(latest, like)
  print(f"resumed from {workdir / 'checkpoints' / str(latest)}")
  return restored, latest


# ----------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
  """Train as `config` says, in `workdir` (resuming from its latest checkpoint); return the summary."""
  workdir = files.path(workdir)
  use_adapter = config.trainable == "adapter"
  if config.trainable not in ("adapter", "all"):
    raise ValueError(f"config.trainable={config.trainable!r}; use 'adapter' (StyleDrop) or 'all' (full fine-tune)")
  check_run_lengths(config)

  # -- Init (cheap checks first, heavy loading last) --------------------------
  base = check_model_dir(resolve_base_model(config.base_model))
  style = data.resolve_style_set(config.style_images, config.content_prompts, config.style_descriptor, config.role)
  data.check_augment(config.augment.hues, config.augment.hue_caption)
  settings = SamplingSettings.from_dict(config.sample)
  evals = evaluators.from_config(config.evals)
  mesh = sharding.make_mesh(config.mesh.to_dict())
  rules = config.sharding.rules.to_dict()
  sharding.check_batch_size(mesh, rules, config.batch_size)
  files.check_folder(workdir, "--workdir")
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints", use_async=config.checkpoint.use_async)
  check_same_inputs(workdir, recorded_inputs(ckpt, workdir), style_inputs(style))
  if distributed.is_writer():
    files.remove_stale_temps(workdir)  # what a killed run left of a file it was replacing

  # -- Shard & transfer: the base goes straight into its shards ---------------
  pipe = Pipeline.from_pretrained(base, resolve_dtype(config.dtype, mesh.devices.flat), mesh=mesh, rules=rules)
  rep = sharding.replicated(mesh)
  encoded = jax.device_put(encode_style(pipe, style, config), rep)
  if use_adapter:
    pipe.attach_adapters(adapter_config(config), nnx.Rngs(config.seed))
  model = pipe.transformer
  graphdef, trainable, frozen = nnx.split(model, AdapterParam if use_adapter else nnx.Param, ...)
  frozen_sh = sharding.state_shardings(mesh, frozen, rules)
  trainable_sh = sharding.state_shardings(mesh, trainable, rules)
  trainable = jax.device_put(trainable, trainable_sh)
  nnx.update(model, trainable)
  tx = make_optimizer(config.optimizer)
  opt_state = jax.jit(tx.init, out_shardings=sharding.follow_params(mesh, jax.eval_shape(tx.init, trainable), rules))(
    trainable
  )
  opt_sh = sharding.follow_params(mesh, opt_state, rules)
  rng = jax.random.key(config.seed)
  meta = run_metadata(pipe, style, config, use_adapter, settings)
  train_steps = jit_train_steps(
    graphdef, tx, config, pipe.mask_token_id, use_adapter, mesh, rules, (trainable_sh, frozen_sh, opt_sh)
  )

  # -- Restore ----------------------------------------------------------------
  like = {"trainable": trainable, "opt_state": opt_state, "rng": jax.device_put(jax.random.key_data(rng), rep)}
  state, step = restore_or_start(ckpt, workdir, pipe.fingerprint, like)

  # -- Train loop -------------------------------------------------------------
  adapter = 0 if use_adapter else None
  prompts = sample_prompts(config, style)
  draw = lambda state: pipe.draw(
    prompts, settings, seed=config.sample.seed, adapter=adapter, state=nnx.merge_state(state["trainable"], frozen)
  )

  def call(state, step):
    trainable, opt_state, rng, metrics = train_steps(
      state["trainable"], frozen, state["opt_state"], jax.random.wrap_key_data(state["rng"]), encoded
    )
    return {"trainable": trainable, "opt_state": opt_state, "rng": jax.random.key_data(rng)}, metrics

  def sample_now(step, state):
    if config.sample.every and step % config.sample.every == 0:
      grid = images.grid(draw(state), columns=len(config.sample.prompts))
      if distributed.is_writer():
        images.save_png(grid, workdir / "samples" / f"step_{step:06d}.png")

  every = config.checkpoint.every
  state, step, last, seconds = loop.run(
    call,
    state,
    step=step,
    total_steps=config.steps,
    steps_per_call=config.steps_per_call,
    workdir=workdir,
    checkpointer=ckpt,
    meta=meta,
    save_due=lambda step, since_save: bool(every) and step % every == 0,
    after_call=sample_now,
  )

  # -- Evaluate & export ------------------------------------------------------
  summary = {
    "steps": step,
    "train_seconds": round(seconds, 1),
    **last,
    "base_fingerprint": pipe.fingerprint,
    "style_phrase": style.style_phrase,
  }
  faults.point("draw")
  full_state = nnx.merge_state(state["trainable"], frozen)
  run = evaluators.Run(pipe, settings, style, adapter, full_state)
  results = {name: evaluate(run) for name, evaluate in evals.items()}
  summary.update(evaluators.merge_metrics(results.values()))
  bands = [band for result in results.values() for band in result.bands]
  pictures = None if bands else draw(state)  # every process draws (the weights span them); process 0 writes
  if not distributed.is_writer():
    return summary
  if bands:
    images.save_png(images.titled_bands(bands, columns=min(8, max(len(p) for _, p in bands))), workdir / "samples.png")
    files.write_json({k: v for r in results.values() for k, v in r.record.items()}, workdir / "evaluation.json")
  else:
    images.save_png(images.grid(pictures, columns=len(config.sample.prompts)), workdir / "samples.png")
  if use_adapter:
    final = nnx.state(nnx.merge(graphdef, state["trainable"], frozen), AdapterParam)
    st, _ = weights.write_adapter(final, {**meta, "step": step}, workdir / "adapter")
    summary.update(adapter_parameters=int(sum(x.size for x in jax.tree.leaves(final))), adapter_bytes=files.size(st))
  files.write_json(summary, workdir / "summary.json")
  return summary


def main(argv):
  from absl import flags  # noqa: PLC0415

  from muse_styledrop.cli import workdir_from_flags  # noqa: PLC0415

  del argv
  config = flags.FLAGS.config
  distributed.initialize(**config.distributed.to_dict())  # multi-host: each process then sees the global mesh
  workdir = workdir_from_flags(config)
  summary = train_and_evaluate(config, workdir)
  if distributed.is_writer():
    print(json.dumps(summary, indent=2))


def entry():
  from muse_styledrop.cli import run_config_main  # noqa: PLC0415

  run_config_main(main, "A configs/*.py file, optionally with ':variant[,variant...]'.")


if __name__ == "__main__":
  entry()
