r"""The per-device memory table of docs/scale.md: model x topology x (round 1, round 2, sampling), from aot.

  pip install -e '.[tpu]'   # libtpu: the TPU compiler's own numbers, no TPU needed
  python benchmarks/aot_table.py --out=docs/benchmarks/aot_table.json

Each cell is `python -m muse_styledrop.aot --config=configs/style_one_shot.py:paper[,round2] --model=M
--topology=T` with the topology's mesh below (batch 8, sampler batch 16, bf16 on TPU), run in its own process.
A batch of 8 splits over at most 8 devices, so the 32-chip slice runs fsdp 8 x model 4 (tensor parallel).
Without libtpu the numbers are fake-CPU estimates, and the JSON says so.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

MODELS = ("amused-256", "amused-512", "muse-3b")
TOPOLOGIES = {"v5e-8": dict(data=1, fsdp=8, model=1), "v5e-32": dict(data=1, fsdp=8, model=4)}
ROUNDS = {"round 1": "paper", "round 2": "paper,round2"}


def measure(model: str, topology: str, variant: str) -> dict:
  cmd = [
    sys.executable,
    "-m",
    "muse_styledrop.aot",
    f"--config=configs/style_one_shot.py:{variant}",
    f"--model={model}",
  ]
  cmd += [f"--topology={topology}", "--sample_batch=16"]
  cmd += [f"--config.mesh.{axis}={size}" for axis, size in TOPOLOGIES[topology].items()]
  out = subprocess.run(cmd, capture_output=True, text=True)
  if out.returncode not in (0, 1):
    raise RuntimeError(out.stderr[-2000:])
  text = out.stdout
  gib = lambda what: float(re.search(rf"^{what}.*?: ([\d.]+) GiB per device", text, re.M).group(1))
  return {
    "train_gib": gib("training call"),
    "sample_gib": gib("sampler"),
    "fits": out.returncode == 0,
    "exact": "exact: libtpu" in text,
    "parameters": re.search(r"transformer ([\d.]+M) parameters", text).group(1),
    "adapter": re.search(r"adapter ([\d,]+) trainable", text).group(1),
    "command": " ".join(cmd[1:]),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", default="")
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--topologies", default=",".join(TOPOLOGIES))
  a = p.parse_args()
  rows = []
  for model in a.models.split(","):
    for topology in a.topologies.split(","):
      for round_name, variant in ROUNDS.items():
        row = {"model": model, "topology": topology, "round": round_name, **measure(model, topology, variant)}
        print(json.dumps(row), flush=True)
        rows.append(row)
        if a.out:  # after every cell: a long run stopped early keeps what it measured
          Path(a.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
  main()
