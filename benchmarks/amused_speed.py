r"""Speed of our aMUSEd against diffusers, side by side in one process, at full amused-256 size (random weights).

  python benchmarks/amused_speed.py --out=docs/benchmarks/amused_speed.json

Times (medians over interleaved repeats, fp32, this machine's CPU threads):
  1. the transformer forward, batch 2 (--batch), 16x16 tokens, 77 text tokens;
  2. a 12-step guided sample of one 256x256 image (prompt + negative pass as
     one batch-2 forward per step), text encoding and VQ decoding included.
Both sides get the same weights (ours loaded from diffusers' state dict).
FLOPs come from XLA's cost analysis of our compiled forward.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch_amused  # noqa: E402 - benchmarks/ sibling
from flax import nnx

from muse_styledrop import sampling, weights
from muse_styledrop.models import layers, presets
from muse_styledrop.models.clip import CLIPModel
from muse_styledrop.models.uvit import UVit2DModel
from muse_styledrop.models.vq import VQModel
from muse_styledrop.pipeline import Pipeline
from muse_styledrop.tokenizer import Tokenizer, build_clip_tokenizer


def ours_from(torch_module, ctor):
  module = layers.abstract(ctor)
  tensors = {k: (jnp.asarray(v.numpy()), Path("<memory>")) for k, v in torch_module.state_dict().items()}
  weights.load_params(module, tensors, "benchmark")
  return module


def median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--sample_repeats", type=int, default=2)
  parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = all cores")
  parser.add_argument("--out", default="")
  parser.add_argument("--torch_device", default="cpu", help="cpu or cuda (JAX uses its default device)")
  parser.add_argument("--batches", type=int, nargs="+", default=[2], help="forward batch sizes")
  args = parser.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  dev = torch.device(args.torch_device)
  # Both sides at their frameworks' GPU defaults for fp32 matmuls: JAX uses TF32 there; let torch do the same.
  torch.backends.cuda.matmul.allow_tf32 = True
  torch.backends.cudnn.allow_tf32 = True
  sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)

  t_transformer, t_vq, t_text = torch_amused.components()
  transformer = ours_from(t_transformer, lambda r: UVit2DModel(presets.AMUSED_256_TRANSFORMER, rngs=r))
  vqvae = ours_from(t_vq, lambda r: VQModel(presets.AMUSED_VQ, rngs=r))
  text_encoder = ours_from(t_text, lambda r: CLIPModel(presets.CLIP_L14_TEXT, rngs=r))

  t_transformer, t_vq, t_text = t_transformer.to(dev), t_vq.to(dev), t_text.to(dev)

  # 1. Forward.
  graphdef, state = nnx.split(transformer)
  forward = jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a))
  forwards = {}
  for b in args.batches:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 8255, (b, 16, 16))
    text = rng.standard_normal((b, 77, 768)).astype(np.float32)
    pooled = rng.standard_normal((b, 768)).astype(np.float32)
    micro = np.tile(np.asarray([[256, 256, 0, 0, 6]], np.float32), (b, 1))
    t_args = tuple(torch.from_numpy(a).to(dev) for a in (ids, text, pooled, micro))
    j_args = tuple(jnp.asarray(a) for a in (ids, text, pooled, micro))
    flops = float(forward.lower(state, *j_args).compile().cost_analysis()["flops"])
    jax.block_until_ready(forward(state, *j_args))
    with torch.no_grad():
      ref = t_transformer(*t_args).permute(0, 2, 3, 1).cpu().numpy()
    ours = np.asarray(forward(state, *j_args))
    max_rel = float(np.abs(ours - ref).max() / np.abs(ref).max())
    jax_times, torch_times = [], []
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both alike
      jax_times.append(median_time(lambda j_args=j_args: jax.block_until_ready(forward(state, *j_args)), 1)[0])
      with torch.no_grad():
        torch_times.append(median_time(lambda t_args=t_args: (t_transformer(*t_args), sync()), 1)[0])
    forwards[f"forward_batch{b}"] = {
      "batch": b,
      "ours_s": statistics.median(jax_times),
      "diffusers_s": statistics.median(torch_times),
      "gflop": flops / 1e9,
      "max_rel_diff": max_rel,
      "ours_all": jax_times,
      "diffusers_all": torch_times,
    }

  # 2. A 12-step guided sample, prompt to pixels.
  from diffusers import AmusedPipeline, AmusedScheduler
  from transformers import CLIPTokenizer

  with tempfile.TemporaryDirectory() as tmp:
    build_clip_tokenizer(["a", "watercolor", "painting", "of", "house"], Path(tmp))
    t_tok = CLIPTokenizer.from_pretrained(tmp)
    pipe_t = AmusedPipeline(
      vqvae=t_vq,
      tokenizer=t_tok,
      text_encoder=t_text,
      transformer=t_transformer,
      scheduler=AmusedScheduler(mask_token_id=8255),
    )
    pipe_t.set_progress_bar_config(disable=True)
    pipe_t.to(dev)
    pipe = Pipeline(transformer, vqvae, text_encoder, Tokenizer(Path(tmp)), mask_token_id=8255)
    prompt = "a watercolor painting of a house"

    def ours_sample(seed):
      pipe._prompt_cache.clear()  # count prompt encoding, as diffusers does it every call
      text, pooled = pipe.encode_prompts([prompt])
      neg_text, neg_pooled = pipe.encode_prompts([""])
      passes = sampling.classifier_free(text, pooled, neg_text, neg_pooled, pipe.micro_conds(1, 256, 256), 9.0)
      tokens = pipe.sampler(passes, sampling.picture_keys(seed, [prompt]), (16, 16), num_steps=12)
      return pipe.decode_tokens(tokens)

    def torch_sample(seed):
      with torch.no_grad():
        return pipe_t(
          prompt,
          num_inference_steps=12,
          guidance_scale=10.0,
          output_type="np",
          generator=torch.Generator(device=dev).manual_seed(seed),
        ).images

    start = time.perf_counter()
    ours_sample(0)
    first_call = time.perf_counter() - start
    torch_sample(0)
    s_ours, s_torch = [], []
    for i in range(args.sample_repeats):
      s_ours.append(median_time(lambda i=i: ours_sample(i + 1), 1)[0])
      s_torch.append(median_time(lambda i=i: torch_sample(i + 1), 1)[0])
  smp = {
    "ours_s": statistics.median(s_ours),
    "diffusers_s": statistics.median(s_torch),
    "ours_first_call_s": first_call,
    "ours_all": s_ours,
    "diffusers_all": s_torch,
  }

  result = {
    "device": jax.devices()[0].device_kind,
    "torch_device": str(dev),
    "torch_threads": torch.get_num_threads(),
    **forwards,
    "sample_12_steps_guided": smp,
  }
  print(f"device: JAX {jax.devices()[0].device_kind}, torch {dev}")
  for fwd in forwards.values():
    print(
      f"forward, batch {fwd['batch']}, 16x16 tokens ({fwd['gflop']:.0f} GFLOP; max rel diff {fwd['max_rel_diff']:.1e}):"
    )
    print(f"  ours      {fwd['ours_s']:.3f} s  {fwd['gflop'] / fwd['ours_s']:.0f} GFLOP/s")
    print(f"  diffusers {fwd['diffusers_s']:.3f} s  {fwd['gflop'] / fwd['diffusers_s']:.0f} GFLOP/s")
    print(f"  speed ratio (diffusers time / ours) {fwd['diffusers_s'] / fwd['ours_s']:.2f}x")
  print("12-step guided sample, 1 image 256x256, prompt encoding and VQ decode included:")
  print(f"  ours      {smp['ours_s']:.1f} s  (first call, compiling: {first_call:.1f} s)")
  print(f"  diffusers {smp['diffusers_s']:.1f} s")
  print(f"  speed ratio (diffusers time / ours) {smp['diffusers_s'] / smp['ours_s']:.2f}x")
  if args.out:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  main()
