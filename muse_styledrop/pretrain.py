r"""Pretraining a base's components: a VQ tokenizer, a CLIP, a U-ViT (the embedded base's, on the shapes world).

  python -m muse_styledrop.pretrain --config=configs/pretrain_vq.py    [--workdir=DIR] [--config.key=value]
  python -m muse_styledrop.pretrain --config=configs/pretrain_clip.py
  python -m muse_styledrop.pretrain --config=configs/pretrain_uvit.py

Every weight of the component trains (the trainer's "all weights" mode; the
U-ViT's objective is the StyleDrop trainer's own `losses.masked_loss`). Many steps run
per jit call (a lax.scan); checkpoints go to workdir/checkpoints every few
minutes, and the same command resumes. A finished run exports its component in
the diffusers/transformers layout under workdir/export and measures it
(summary.json). The U-ViT run exports the whole base directory, which is what
`muse_styledrop/assets/shapes_base` is a half-precision copy of.

Batches are drawn on the host from a generator seeded by (seed, step), so a
resumed run draws exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from muse_styledrop import checkpointing, distributed, evaluators, files, loop, sharding
from muse_styledrop.optim import check_run_lengths, make_optimizer
from muse_styledrop.pretraining import OBJECTIVES


def make_steps(graphdef, tx, objective, steps: int, unroll: int | bool = 1):
  """`steps` optimizer steps over a stacked batch as one pure function (a lax.scan)."""

  def one_step(carry, batch, rest, frozen):
    params, opt_state, extra, rng = carry
    rng, loss_rng, update_rng = jax.random.split(rng, 3)

    def loss_fn(params):
      return objective.loss(nnx.merge(graphdef, params, rest), batch, extra, frozen, loss_rng)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    params, extra, more = objective.after_update(params, extra, aux, update_rng)
    return (params, opt_state, extra, rng), {
      "loss": loss,
      "grad_norm": optax.global_norm(grads),
      **aux.get("metrics", {}),
      **more,
    }

  def train_steps(params, opt_state, extra, rng, rest, frozen, batches):
    (params, opt_state, extra, rng), m = jax.lax.scan(
      functools.partial(one_step, rest=rest, frozen=frozen),
      (params, opt_state, extra, rng),
      batches,
      length=steps,
      unroll=unroll,
    )
    finite = jnp.isfinite(m["loss"]).all() & jnp.isfinite(m["grad_norm"]).all()
    return params, opt_state, extra, rng, {**{k: v.mean() for k, v in m.items()}, "finite": finite}

  return train_steps


def global_batch(host: np.ndarray, sharding: jax.sharding.NamedSharding) -> jax.Array:
  """The global batch every process drew alike (the same seed and step), each process placing only the slices of
  its own devices."""
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def on_one_device(tree):
  """A tree of replicated (possibly many-process) arrays as ordinary arrays on this process's first device."""
  return jax.tree.map(lambda x: jax.device_put(np.asarray(x.addressable_data(0)), jax.local_devices()[0]), tree)


def pretrain(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
  """Train the component `config.model` names in `workdir` (resuming), export and measure it; return the summary."""
  workdir = files.path(workdir)
  if files.is_remote(workdir):
    raise ValueError(f"--workdir={workdir}: pretraining writes a local folder; copy its export/ to the bucket after")
  if config.model not in OBJECTIVES:
    raise ValueError(f"config.model={config.model!r}; use one of {', '.join(OBJECTIVES)}")
  check_run_lengths(config)

  # -- Init -------------------------------------------------------------------
  evals = evaluators.from_config(config.evals)
  mesh = sharding.make_mesh(config.mesh.to_dict())
  rules = config.sharding.rules.to_dict()
  sharding.check_batch_size(mesh, rules, config.batch_size)
  rep = sharding.replicated(mesh)
  objective = OBJECTIVES[config.model](config, workdir)
  model = objective.build(nnx.Rngs(config.seed))
  graphdef, params, rest = nnx.split(model, objective.trainable, ...)
  tx = make_optimizer(config.optimizer, total_steps=config.steps)
  # Trained weights and their moments laid out by their logical names (docs/scale.md); the rest whole on every
  # device; each step's batch split over the batch axes.
  params_sh = sharding.state_shardings(mesh, params, rules)
  params = jax.device_put(params, params_sh)
  rest, frozen = jax.device_put((rest, objective.frozen_state()), rep)
  n_params = int(sum(x.size for x in jax.tree.leaves(params)))
  # XLA:CPU runs convolutions inside a while loop (an un-unrolled scan) ~30x slower (measured on the VQ's
  # backward pass: 25 s vs 0.75 s a step), so conv-heavy objectives unroll their steps (config.unroll).
  unroll = True if config.unroll else 1
  opt_sh = sharding.follow_params(mesh, jax.eval_shape(tx.init, params), rules)
  opt_state = jax.jit(tx.init, out_shardings=opt_sh)(params)
  train_steps = jax.jit(
    make_steps(graphdef, tx, objective, config.steps_per_call, unroll),
    out_shardings=(params_sh, opt_sh, rep, rep, rep),
    donate_argnums=(0, 1, 2),
  )

  # -- Restore ----------------------------------------------------------------
  files.check_folder(workdir, "--workdir")
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints", use_async=config.checkpoint.use_async)
  if distributed.is_writer():
    files.remove_stale_temps(workdir)  # what a killed run left of a file it was replacing
  meta = {"model": config.model, "parameters": n_params, "config": json.loads(config.to_json_best_effort())}
  like = {
    "params": params,
    "opt_state": opt_state,
    "extra": jax.device_put(objective.init_extra(), rep),
    "rng": jax.device_put(jax.random.key_data(jax.random.key(config.seed)), rep),
  }
  state, step = like, 0
  if (latest := ckpt.latest_step()) is not None:
    state, _ = ckpt.restore(latest, like)
    step = latest
    print(f"resumed from {workdir / 'checkpoints' / str(latest)}")

  # -- Train loop -------------------------------------------------------------
  def call(state, step):
    batches = objective.host_batches(np.random.default_rng([config.seed, step]), config.steps_per_call)
    batches = {k: global_batch(v, sharding.stacked_batch(mesh, rules, v.ndim)) for k, v in batches.items()}
    rng = jax.random.wrap_key_data(state["rng"])
    params, opt_state, extra, rng, metrics = train_steps(
      state["params"], state["opt_state"], state["extra"], rng, rest, frozen, batches
    )
    return {"params": params, "opt_state": opt_state, "extra": extra, "rng": jax.random.key_data(rng)}, metrics

  state, step, last, seconds = loop.run(
    call,
    state,
    step=step,
    total_steps=config.steps,
    steps_per_call=config.steps_per_call,
    workdir=workdir,
    checkpointer=ckpt,
    meta=meta,
    save_due=lambda step, since_save: since_save > config.checkpoint.every_seconds,
    max_seconds=config.max_seconds,  # a time box (a lent GPU's minutes): stop early, then export as usual
    desc=f"pretrain {config.model}",
  )

  # -- Export & evaluate (process 0, on its own device) ------------------------
  if not distributed.is_writer():
    return {"model": config.model, "steps": step}
  model = nnx.merge(graphdef, *on_one_device(jax.jit(lambda t: t, out_shardings=rep)((state["params"], rest))))
  with files.atomic_folder(workdir / "export") as folder:  # the whole export replaces the last one, or nothing does
    export = workdir / "export" / objective.export(model, folder).relative_to(folder)
  component = evaluators.Component(model, export, workdir, getattr(objective, "tokenizer", None))
  quality = {k: v for evaluate in evals.values() for k, v in evaluate(component).metrics.items()}
  summary = {"model": config.model, "steps": step, "parameters": n_params, "train_seconds": round(seconds, 1)}
  if step < config.steps:
    summary["stopped_early"] = (
      f"max_seconds={config.max_seconds} reached at step {step} of {config.steps}; the same command resumes"
    )
  summary.update(last=last, export=str(export), quality=quality)
  files.write_json(summary, workdir / "summary.json")
  return summary


def main(argv):
  from absl import flags  # noqa: PLC0415

  from muse_styledrop.cli import workdir_from_flags  # noqa: PLC0415

  del argv
  config = flags.FLAGS.config
  distributed.initialize(**config.distributed.to_dict())  # multi-host: each process then sees the global mesh
  workdir = workdir_from_flags(config)
  summary = pretrain(config, workdir)
  if distributed.is_writer():
    print(json.dumps(summary, indent=2))


def entry():
  from muse_styledrop.cli import run_config_main  # noqa: PLC0415

  run_config_main(main, "A configs/pretrain_*.py file.")


if __name__ == "__main__":
  entry()
