r"""Loading a full-size base and drawing a first picture: time and peak host memory, ours beside diffusers'.

  python benchmarks/make_random_amused.py --out=/tmp/amused-256-random
  python benchmarks/load_and_first_picture.py --model=/tmp/amused-256-random \
      --out=docs/benchmarks/load_and_first_picture.json

Every case runs in a fresh process, so its peak resident memory is its own:
  load          Pipeline.from_pretrained (fp32), against diffusers' AmusedPipeline.from_pretrained;
  load_fsdp8    ours onto 8 fake CPU devices, fsdp=8 (each device's slice placed straight from the file);
  first picture the `sample` command from a cold start (12 steps, one 256x256 picture), with an empty and then a
                filled compilation cache, against a script that loads diffusers' pipeline and draws the same.
`kept_gb` is the weights the process holds after loading (all devices together).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "a watercolor painting of a house"
DIFFUSERS_PICTURE = """
import torch
from diffusers import AmusedPipeline
pipe = AmusedPipeline.from_pretrained({model!r}, torch_dtype=torch.float32, local_files_only=True)
pipe({prompt!r}, num_inference_steps=12, generator=torch.Generator().manual_seed(0), output_type="np")
"""


def peak_gb(who=resource.RUSAGE_SELF) -> float:
  return resource.getrusage(who).ru_maxrss / 1e6  # Linux: KiB


def case_load(model: str, side: str, devices: int) -> dict:
  t = time.perf_counter()
  if side == "diffusers":
    import torch  # noqa: PLC0415
    from diffusers import AmusedPipeline  # noqa: PLC0415

    pipe = AmusedPipeline.from_pretrained(model, torch_dtype=torch.float32, local_files_only=True)
    seconds = time.perf_counter() - t
    kept = sum(
      p.numel() * p.element_size() for m in (pipe.transformer, pipe.vqvae, pipe.text_encoder) for p in m.parameters()
    )
    return {"seconds": seconds, "peak_gb": peak_gb(), "kept_gb": kept / 1e9}
  import jax  # noqa: PLC0415
  from flax import nnx  # noqa: PLC0415

  from muse_styledrop import configs, sharding  # noqa: PLC0415
  from muse_styledrop.pipeline import Pipeline  # noqa: PLC0415

  mesh = sharding.make_mesh({"fsdp": devices}) if devices > 1 else None
  rules = configs.sharding_rules().to_dict() if mesh else None
  pipe = Pipeline.from_pretrained(model, mesh=mesh, rules=rules)
  seconds = time.perf_counter() - t
  leaves = [x for m in (pipe.transformer, pipe.vqvae, pipe.text_encoder) for x in jax.tree.leaves(nnx.state(m))]
  kept = sum(s.data.nbytes for x in leaves for s in x.addressable_shards)
  return {"seconds": seconds, "peak_gb": peak_gb(), "kept_gb": kept / 1e9, "devices": jax.device_count()}


def case_first_picture(model: str, side: str, cache: str) -> dict:
  with tempfile.TemporaryDirectory() as out:
    if side == "diffusers":
      cmd = [sys.executable, "-c", DIFFUSERS_PICTURE.format(model=model, prompt=PROMPT)]
    else:
      cmd = [sys.executable, "-m", "muse_styledrop.sample", f"--base_model={model}", f"--prompt={PROMPT}"]
      cmd += ["--steps=12", f"--out={out}"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "MUSE_STYLEDROP_XLA_CACHE": cache})
    return {"seconds": time.perf_counter() - t, "peak_gb": peak_gb(resource.RUSAGE_CHILDREN)}


def run_case(args: list[str], env=None) -> dict:
  out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True, env=env)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", required=True)
  p.add_argument("--out", default="")
  p.add_argument("--case", default="")  # internal: one measurement, in this fresh process
  p.add_argument("--side", default="ours")
  p.add_argument("--devices", type=int, default=1)
  p.add_argument("--cache", default="")
  a = p.parse_args()
  if a.case == "load":
    print(json.dumps(case_load(a.model, a.side, a.devices)))
    return
  if a.case == "picture":
    print(json.dumps(case_first_picture(a.model, a.side, a.cache)))
    return
  eight = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  results = {
    "load": {side: run_case(["--case=load", f"--model={a.model}", f"--side={side}"]) for side in ("ours", "diffusers")},
    "load_fsdp8": run_case(["--case=load", f"--model={a.model}", "--devices=8"], eight),
  }
  with tempfile.TemporaryDirectory() as cache:
    picture = lambda side: run_case(["--case=picture", f"--model={a.model}", f"--side={side}", f"--cache={cache}"])
    results["first_picture"] = {
      "ours_cold": picture("ours"),
      "ours_warm": picture("ours"),
      "diffusers": picture("diffusers"),
    }
  for name, r in results.items():
    print(name, json.dumps(r))
  if a.out:
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
  main()
