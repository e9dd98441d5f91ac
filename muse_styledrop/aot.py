r"""Will it fit? Compile the training step and the sampler for a TPU topology, without weights or a TPU.

  python -m muse_styledrop.aot --config=configs/style_one_shot.py[:variant] --model=amused-256|amused-512|muse-3b|DIR \
      --topology=v5e-8 [--sample_batch=16] [--config.KEY=VALUE ...]

The model is built abstractly (shapes only), laid out on the config's mesh by its sharding rules, and the
round-1 (or round-2, with :round2) training call and the sampler are lowered and compiled for the topology's
chips. With libtpu installed (the `tpu` extra) the compile is the TPU compiler's own and its byte counts are
exact; without it the same program compiles for fake CPU devices, and the numbers are an estimate. It prints
per-device bytes (arguments, temporaries, outputs) against the chip's memory and ends with one line,
`per-device: X GiB of Y GiB (fits)` or `(does not fit)` with exit code 1.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import flags
from flax import nnx

from muse_styledrop import pipeline, sampling, sharding, topologies, train, weights
from muse_styledrop.models import layers, presets
from muse_styledrop.models.adapters import AdapterParam
from muse_styledrop.models.layers import compiling_for
from muse_styledrop.models.uvit import UVit2DModel, UVitConfig
from muse_styledrop.optim import make_optimizer

MODELS = {
  "amused-256": presets.AMUSED_256_TRANSFORMER,
  "amused-512": presets.AMUSED_512_TRANSFORMER,
  "muse-3b": presets.MUSE_3B_TRANSFORMER,
}
TEXT_TOKENS = 77  # the CLIP tokenizer's length; the text states a step and the sampler read
GIB = 2**30


def define_flags() -> None:
  flags.DEFINE_string("model", "amused-256", f"{', '.join(MODELS)}, or an aMUSEd-layout model directory.")
  flags.DEFINE_string("topology", "v5e-8", f"One of {', '.join(topologies.TABLE)}.")
  flags.DEFINE_integer("sample_batch", 16, "Pictures per sampler call.")
  flags.DEFINE_float("hbm_gib", 0, "Memory per chip to check against, in GiB; 0: the topology's own.")


def transformer_config(model: str) -> UVitConfig:
  if model in MODELS:
    return MODELS[model]
  folder = Path(model).expanduser() / "transformer"
  if not (folder / "config.json").is_file():
    raise FileNotFoundError(
      f"--model={model}: neither {', '.join(MODELS)} nor a directory with transformer/config.json"
    )
  return weights.uvit_config(weights.read_json(folder / "config.json"), folder / "config.json")


def target_devices(topology: topologies.Topology) -> tuple[list, bool]:
  """(the topology's devices, exact): TPU devices from libtpu's compiler where installed, else fake CPU devices."""
  try:
    from jax.experimental import topologies as jax_topologies  # noqa: PLC0415

    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    desc = jax_topologies.get_topology_desc(platform="tpu", topology_name=topology.topology)
    return list(desc.devices), True
  except Exception:  # noqa: BLE001  no libtpu (or no such topology in it): estimate on CPU devices
    cpu = jax.devices("cpu")
    if len(cpu) < topology.chips:
      raise ValueError(
        f"{topology.name} has {topology.chips} chips but only {len(cpu)} CPU devices are visible; run with "
        f"XLA_FLAGS=--xla_force_host_platform_device_count={topology.chips} or install the tpu extra"
      ) from None
    return cpu[: topology.chips], False


def with_shardings(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


@dataclasses.dataclass
class Memory:
  arguments: int
  temporaries: int
  outputs: int
  aliased: int

  @classmethod
  def of(cls, compiled) -> Memory:
    m = compiled.memory_analysis()
    return cls(m.argument_size_in_bytes, m.temp_size_in_bytes, m.output_size_in_bytes, m.alias_size_in_bytes)

  @property
  def total(self) -> int:
    return self.arguments + self.temporaries + self.outputs - self.aliased

  def line(self, what: str) -> str:
    gib = lambda b: f"{b / GIB:.2f}"
    return (
      f"{what}: {gib(self.total)} GiB per device (arguments {gib(self.arguments)}, temporaries "
      f"{gib(self.temporaries)}, outputs {gib(self.outputs)}, aliased {gib(self.aliased)})"
    )


def abstract_model(c: UVitConfig, config, dtype) -> UVit2DModel:
  def build(rngs):
    model = UVit2DModel(c, rngs=rngs, dtype=weights.compute_dtype(dtype), param_dtype=dtype)
    if config.trainable == "adapter":
      model.attach_adapters(train.adapter_config(config), rngs)
    return model

  return layers.abstract(build)


def compile_train_step(model, c: UVitConfig, config, mesh, rules):
  use_adapter = config.trainable == "adapter"
  graphdef, trainable, frozen = nnx.split(model, AdapterParam if use_adapter else nnx.Param, ...)
  tx = make_optimizer(config.optimizer)
  opt_state = jax.eval_shape(tx.init, trainable)
  shardings = (
    sharding.state_shardings(mesh, trainable, rules),
    sharding.state_shardings(mesh, frozen, rules),
    sharding.follow_params(mesh, opt_state, rules),
  )
  rep = sharding.replicated(mesh)
  side, d, images = c.sample_size, c.encoder_hidden_size, 4
  dtype = frozen_dtype(frozen)
  style = train.EncodedStyle(
    tokens_NHW=jax.ShapeDtypeStruct((images * 4, side, side), jnp.int32, sharding=rep),
    image_N=jax.ShapeDtypeStruct((images * 4,), jnp.int32, sharding=rep),
    text_ITD=jax.ShapeDtypeStruct((images, TEXT_TOKENS, d), dtype, sharding=rep),
    pooled_ID=jax.ShapeDtypeStruct((images, c.cond_embed_dim), dtype, sharding=rep),
    empty_text_TD=jax.ShapeDtypeStruct((TEXT_TOKENS, d), dtype, sharding=rep),
    empty_pooled_D=jax.ShapeDtypeStruct((c.cond_embed_dim,), dtype, sharding=rep),
    micro_M=jax.ShapeDtypeStruct((5,), jnp.float32, sharding=rep),
  )
  key = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype, sharding=rep)
  steps = train.jit_train_steps(graphdef, tx, config, c.mask_token_id, use_adapter, mesh, rules, shardings)
  args = [with_shardings(x, s) for x, s in zip((trainable, frozen, opt_state), shardings)]
  return steps.lower(*args, key, style).compile()


def frozen_dtype(state):
  return next(iter(jax.tree.leaves(state))).dtype


def compile_sampler(model, c: UVitConfig, config, mesh, rules, batch: int):
  settings = sampling.SamplingSettings.from_dict(config.sample)
  sampler = sampling.Sampler(model, c.mask_token_id)
  state = with_shardings(sampler.state, sharding.state_shardings(mesh, sampler.state, rules))
  dtype = frozen_dtype(nnx.state(model, nnx.Param))
  text = jax.ShapeDtypeStruct((batch, TEXT_TOKENS, c.encoder_hidden_size), dtype)
  pooled = jax.ShapeDtypeStruct((batch, c.cond_embed_dim), dtype)
  micro = jax.ShapeDtypeStruct((batch, 5), jnp.float32)
  ids = jax.ShapeDtypeStruct((batch,), jnp.int32) if config.trainable == "adapter" else None
  passes = jax.eval_shape(lambda *a: settings.passes(*a), text, pooled, text, pooled, micro, ids)
  in_passes, per_picture = sharding.sampler_inputs(mesh, rules, passes, batch)
  passes = with_shardings(passes, in_passes)
  rep = sharding.replicated(mesh)
  key_dtype = jax.eval_shape(lambda: jax.random.key(0)).dtype
  scalar = lambda dt: jax.ShapeDtypeStruct((), dt, sharding=rep)
  return sampler.jitted.lower(
    state,
    passes,
    jax.ShapeDtypeStruct((batch, c.sample_size, c.sample_size), jnp.int32, sharding=per_picture),
    jax.ShapeDtypeStruct((batch,), key_dtype, sharding=per_picture),
    jax.ShapeDtypeStruct((batch, 2), jnp.float32, sharding=rep),
    jax.ShapeDtypeStruct((batch,), jnp.float32, sharding=rep),
    scalar(jnp.int32),
    num_steps=settings.steps,
    mask_id=c.mask_token_id,
  ).compile()


def check(config, model_name: str, topology_name: str, sample_batch: int, hbm_gib: float = 0) -> bool:
  """Print the per-device memory of the step and the sampler on the topology; True when both fit."""
  topology = topologies.lookup(topology_name)
  if hbm_gib:
    topology = dataclasses.replace(topology, hbm_gib=hbm_gib)
  devices, exact = target_devices(topology)
  platform = devices[0].platform
  mesh = sharding.make_mesh(config.mesh.to_dict(), devices)
  rules = config.sharding.rules.to_dict()
  sharding.check_batch_size(mesh, rules, config.batch_size)
  dtype = pipeline.resolve_dtype(config.dtype, devices)
  c = transformer_config(model_name)
  with compiling_for(platform):
    model = abstract_model(c, config, dtype)
    base = sum(x.size for x in jax.tree.leaves(nnx.state(model, lambda _, v: type(v) is nnx.Param)))
    adapter = sum(x.size for x in jax.tree.leaves(nnx.state(model, AdapterParam)))
    print(f"model {model_name}: transformer {base / 1e6:.1f}M parameters, adapter {adapter:,} trainable weights")
    print(
      f"topology {topology.name}: {topology.chips} chips on {topology.hosts} host(s), {topology.hbm_gib:g} GiB "
      f"each; compiled for {devices[0].device_kind} ({'exact: libtpu' if exact else 'estimate: fake CPU devices'})"
    )
    print(
      f"mesh {dict(mesh.shape)}, dtype {jnp.dtype(dtype).name}, batch {config.batch_size}, sampler batch {sample_batch}"
    )
    step = Memory.of(compile_train_step(model, c, config, mesh, rules))
    print(step.line(f"training call ({config.steps_per_call} steps)"))
    sampler = Memory.of(compile_sampler(model, c, config, mesh, rules, sample_batch))
    print(sampler.line(f"sampler ({config.sample.steps} steps)"))
  worst = max(step.total, sampler.total)
  fits = worst <= topology.hbm_gib * GIB
  label = "" if exact else ", estimate"
  print(f"per-device: {worst / GIB:.2f} GiB of {topology.hbm_gib:g} GiB ({'fits' if fits else 'does not fit'}{label})")
  return fits


def main(argv):
  del argv
  f = flags.FLAGS
  sys.exit(0 if check(f.config, f.model, f.topology, f.sample_batch, f.hbm_gib) else 1)


def entry():
  from muse_styledrop.cli import run_config_main  # noqa: PLC0415

  # Before any backend starts: enough fake CPU devices for the largest topology, and no claim on a local TPU.
  if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    most = max(t.chips for t in topologies.TABLE.values())
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={most}"
  jax.config.update("jax_platforms", "cpu")
  define_flags()
  # no compilation cache: these executables are for another machine and would only fill it
  run_config_main(main, "A configs/*.py file, optionally with ':variant[,variant...]'.", compilation_cache=False)


if __name__ == "__main__":
  entry()
