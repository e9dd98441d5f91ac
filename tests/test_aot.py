"""The ahead-of-time memory check, on fake CPU devices for a tiny model (the same compile libtpu would do)."""

import re
import subprocess
import sys

import jax
from flax import nnx
from test_train import load_config

from muse_styledrop import aot, topologies
from muse_styledrop.models.adapters import AdapterConfig, BottleneckAdapters
from muse_styledrop.models.presets import MUSE_3B_TRANSFORMER


def test_aot_compiles_step_and_sampler_for_a_topology_and_says_whether_it_fits(amused_dir, capsys):
  c = load_config("runlocal")
  c.mesh, c.batch_size = dict(data=2, fsdp=4, model=1), 8
  assert not aot.check(c, str(amused_dir), "v5e-8", sample_batch=8, hbm_gib=1e-6)
  out = capsys.readouterr().out
  assert "compiled for cpu (estimate: fake CPU devices)" in out
  assert "mesh {'data': 2, 'fsdp': 4, 'model': 1}, dtype float32" in out
  step = float(re.search(r"training call \(5 steps\): ([\d.]+) GiB per device \(arguments", out).group(1))
  sample = float(re.search(r"sampler \(4 steps\): ([\d.]+) GiB per device", out).group(1))
  last = out.strip().splitlines()[-1]
  assert last == f"per-device: {max(step, sample):.2f} GiB of 1e-06 GiB (does not fit, estimate)"


def test_aot_command_exits_2_on_an_unknown_topology(amused_dir):
  cmd = [sys.executable, "-m", "muse_styledrop.aot", "--config=configs/style_one_shot.py:runlocal"]
  unknown = subprocess.run([*cmd, f"--model={amused_dir}", "--topology=v9-1"], capture_output=True, text=True)
  assert unknown.returncode == 2 and "unknown topology 'v9-1'" in unknown.stderr


def test_the_muse_3b_preset_has_the_papers_adapter_size():
  c = MUSE_3B_TRANSFORMER
  bank = nnx.eval_shape(
    lambda: BottleneckAdapters(AdapterConfig(), c.num_hidden_layers, c.hidden_size, rngs=nnx.Rngs(0))
  )
  assert sum(x.size for x in jax.tree.leaves(nnx.state(bank))) == 229_760  # the paper's 0.23M
  assert set(topologies.TABLE) >= {"v4-8", "v4-32", "v5e-8", "v5e-16", "v5e-32", "v5p-8", "v6e-8"}
