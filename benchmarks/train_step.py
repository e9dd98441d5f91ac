r"""Adapter training step at full amused-256 size: ours (paper adapter, LoRA) against diffusers' LoRA recipe.

  python benchmarks/train_step.py --out=docs/benchmarks/train_step.json          # all, interleaved
  python benchmarks/train_step.py --impl=ours-bottleneck --batch=8 --steps=3     # one process, prints JSON

Each measurement runs in its own process (so peak resident memory is that
implementation's alone), with random weights, fp32, image tokens and text
embeddings pre-encoded. The orchestrator interleaves implementations and
repeats, then reports medians. diffusers' recipe is that of its aMUSEd LoRA
example: peft LoRA r=16 on to_q/to_k/to_v of every attention, frozen base,
AdamW, cross-entropy on the masked tokens. "diffusers-bottleneck" hooks the
paper's adapter into diffusers (forward hooks on attn2 and ff) as a second
reference.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

IMPLS = ("ours-bottleneck", "ours-lora", "diffusers-lora", "diffusers-bottleneck")


def peak_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB


def peak_accelerator_gb(side: str) -> float | None:
  """Peak device memory of this process's framework on a GPU, else None (CPU: peak RSS says it)."""
  if side == "ours":
    import jax

    stats = jax.devices()[0].memory_stats() if jax.default_backend() == "gpu" else None
    return stats["peak_bytes_in_use"] / 1e9 if stats else None
  import torch

  return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() and DEVICE == "cuda" else None


DEVICE = "cpu"


def ours_setup(kind: str, batch: int):
  """(jitted one-step function, its arguments) for our adapter training step at full amused-256 size."""
  import jax
  import jax.numpy as jnp
  import ml_collections
  from flax import nnx

  from muse_styledrop import train
  from muse_styledrop.models import presets
  from muse_styledrop.models.adapters import AdapterConfig, AdapterParam
  from muse_styledrop.models.uvit import UVit2DModel
  from muse_styledrop.optim import make_optimizer

  model = UVit2DModel(presets.AMUSED_256_TRANSFORMER, rngs=nnx.Rngs(0))
  model.attach_adapters(AdapterConfig(kind=kind, hidden=4, shared=True, rank=16), nnx.Rngs(1))
  graphdef, trainable, frozen = nnx.split(model, AdapterParam, ...)
  tx = make_optimizer(
    ml_collections.ConfigDict(
      dict(
        learning_rate=1e-4,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=1e-2,
        grad_clip=0.0,
        warmup_steps=0,
        schedule="constant",
      )
    )
  )
  opt_state = tx.init(trainable)
  k = jax.random.split(jax.random.key(0), 3)
  data = train.EncodedStyle(
    jax.random.randint(k[0], (8, 16, 16), 0, 8192),
    jnp.zeros((8,), jnp.int32),
    jax.random.normal(k[1], (1, 77, 768)),
    jax.random.normal(k[2], (1, 768)),
    jnp.zeros((77, 768)),
    jnp.zeros((768,)),
    jnp.asarray([256.0, 256, 0, 0, 6]),
  )
  step = jax.jit(
    train.make_train_steps(graphdef, tx, steps=1, batch_size=batch, mask_id=8255, text_dropout=0.0, use_adapter=True),
    donate_argnums=(0, 2),
  )
  return step, (trainable, frozen, opt_state, jax.random.key(1), data)


def ours(kind: str, batch: int, steps: int) -> list[float]:
  import jax

  step, (trainable, frozen, opt_state, rng, data) = ours_setup(kind, batch)
  times = []
  for i in range(steps + 1):
    start = time.perf_counter()
    trainable, opt_state, rng, m = step(trainable, frozen, opt_state, rng, data)
    jax.block_until_ready(m)
    if i:  # the first call compiles
      times.append(time.perf_counter() - start)
  return times


def diffusers(kind: str, batch: int, steps: int) -> list[float]:
  import torch
  import torch.nn.functional as F
  from diffusers import UVit2DModel

  from muse_styledrop import weights
  from muse_styledrop.models import presets

  torch.manual_seed(0)
  torch.backends.cuda.matmul.allow_tf32 = True  # JAX's GPU default for fp32 matmuls is TF32 too
  torch.backends.cudnn.allow_tf32 = True
  dev = torch.device(DEVICE)
  sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
  model = UVit2DModel.from_config(weights.uvit_config_dict(presets.AMUSED_256_TRANSFORMER)).to(dev)
  model.requires_grad_(False)
  if kind == "lora":
    from peft import LoraConfig

    model.add_adapter(LoraConfig(r=16, lora_alpha=16, target_modules=["to_q", "to_k", "to_v"]))
    params = [p for p in model.parameters() if p.requires_grad]
  else:
    params = []
    for layer in model.transformer_layers:
      for module in (layer.attn2, layer.ff):
        wd = torch.nn.Parameter(torch.randn(1024, 4, device=dev) * 0.02)
        wu = torch.nn.Parameter(torch.zeros(4, 1024, device=dev))
        params += [wd, wu]
        module.register_forward_hook(lambda _m, _i, out, wd=wd, wu=wu: out + F.gelu(out @ wd) @ wu)
  model.train()
  optimizer = torch.optim.AdamW(params, lr=1e-4)
  ids = torch.randint(0, 8192, (batch, 16, 16), device=dev)
  text, pooled = torch.randn(batch, 77, 768, device=dev), torch.randn(batch, 768, device=dev)
  micro = torch.tensor([[256.0, 256, 0, 0, 6]], device=dev).repeat(batch, 1)
  times = []
  for i in range(steps + 1):
    start = time.perf_counter()
    rate = torch.cos(math.pi / 2 * torch.rand(batch, device=dev))
    n = torch.clamp((rate * 256).round(), min=1).long()
    rank = torch.rand(batch, 256, device=dev).argsort(-1).argsort(-1)
    mask = (rank < n[:, None]).reshape(batch, 16, 16)
    inputs = torch.where(mask, 8255, ids)
    labels = torch.where(mask, ids, -100)
    logits = model(inputs, text, pooled, micro)
    loss = F.cross_entropy(logits.permute(0, 2, 3, 1).reshape(-1, 8192), labels.reshape(-1), ignore_index=-100)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync()
    if i:
      times.append(time.perf_counter() - start)
  return times


def measure(impl: str, batch: int, steps: int) -> dict:
  side, kind = impl.split("-")
  times = (ours if side == "ours" else diffusers)(kind, batch, steps)
  return {
    "impl": impl,
    "batch": batch,
    "step_s": statistics.median(times),
    "all_s": times,
    "peak_rss_gb": peak_rss_gb(),
    "peak_device_gb": peak_accelerator_gb(side),
  }


def orchestrate(args) -> None:
  results = []
  for batch in args.batches:
    for rep in range(args.repeats):
      for impl in args.impls:
        cmd = [
          sys.executable,
          __file__,
          f"--impl={impl}",
          f"--batch={batch}",
          f"--steps={args.steps}",
          f"--torch_device={args.torch_device}",
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
          print(out.stderr[-3000:], file=sys.stderr)
          raise SystemExit(f"{impl} batch {batch} failed")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["repeat"] = rep
        results.append(r)
        device_mem = f"  device peak {r['peak_device_gb']:.1f} GB" if r.get("peak_device_gb") else ""
        print(
          f"batch {batch} {impl:22s} {r['step_s']:7.3f} s/step  peak RSS {r['peak_rss_gb']:.1f} GB{device_mem}",
          flush=True,
        )
  table = {}
  for batch in args.batches:
    for impl in args.impls:
      rs = [r for r in results if r["impl"] == impl and r["batch"] == batch]
      table[f"{impl}@{batch}"] = {
        "step_s": statistics.median(r["step_s"] for r in rs),
        "peak_rss_gb": statistics.median(r["peak_rss_gb"] for r in rs),
        "peak_device_gb": rs[0].get("peak_device_gb"),
      }
  print(json.dumps(table, indent=2))
  if args.out:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"medians": table, "runs": results}, indent=2) + "\n")


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--impl", choices=IMPLS)
  p.add_argument("--impls", nargs="+", default=list(IMPLS))
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--out", default="")
  p.add_argument("--torch_device", default="cpu", help="cpu or cuda (JAX uses its default device)")
  args = p.parse_args()
  global DEVICE
  DEVICE = args.torch_device
  if args.impl:
    print(json.dumps(measure(args.impl, args.batch, args.steps)))
  else:
    orchestrate(args)


if __name__ == "__main__":
  main()
