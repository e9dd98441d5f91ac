r"""Adapters for PyTorch users: an exported adapter in the layouts diffusers and PyTorch read.

  python -m muse_styledrop.export --adapter=runs/style_one_shot --out=runs/style_one_shot/pytorch

LoRA becomes pytorch_lora_weights.safetensors in the peft layout that diffusers' UVit2DModel.load_lora_adapter (and
the aMUSEd pipeline's load_lora_weights) reads: 'transformer.<module>.to_q.lora_A.weight' (r x in) and '...lora_B
.weight' (out x r) for every attention, rank and alpha in the file's lora_adapter_metadata.

The bottleneck adapter, which diffusers has no layer for, becomes styledrop_adapter.safetensors: for each module
whose output it changes, '<module>.styledrop_down.weight' (H x D) and '<module>.styledrop_up.weight' (D x H), so
output + up(gelu(down(output))) with PyTorch's default GELU; shared weights are written out per layer. The module
'mlm_layer' means the logit head's input (channels first). docs/pytorch.md applies it with forward hooks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from absl import flags

from muse_styledrop import files, weights

LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' name for a LoRA's weights
BOTTLENECK_FILE = "styledrop_adapter.safetensors"
SITE_MODULES = {"attn2": "transformer_layers.{}.attn2", "ff": "transformer_layers.{}.ff"}


def lora_module(site: str) -> str:
  """'transformer_layers_0_attn1' (our projections' key) -> 'transformer_layers.0.attn1' (the PyTorch module)."""
  found = re.fullmatch(
    r"(transformer_layers|down_block_attention_blocks|up_block_attention_blocks)_(\d+)_attn(\d)", site
  )
  if not found:
    raise weights.WeightsError(f"adapter weight for {site!r} names no attention of aMUSEd's transformer")
  block, index, which = found.groups()
  return f"{block.replace('_block_attention_blocks', '_block.attention_blocks')}.{index}.attn{which}"


def lora_tensors(tensors: dict, adapter_config: dict, entry: int) -> tuple[dict, dict]:
  """(peft-layout tensors, lora_adapter_metadata) of bank entry `entry` of a LoRA adapter."""
  out = {}
  for key, value in tensors.items():
    site, leaf = key.removeprefix("adapters.projections.").rsplit(".", 1)
    name, which = leaf.split("_")  # q_a -> q, a
    lora = "lora_A" if which == "a" else "lora_B"
    out[f"transformer.{lora_module(site)}.to_{name}.{lora}.weight"] = np.asarray(value[entry], np.float32).T
  meta = {
    "r": adapter_config["rank"],
    "lora_alpha": adapter_config["alpha"],
    "target_modules": ["to_q", "to_k", "to_v"],
  }
  return out, {f"transformer.{k}": v for k, v in meta.items()}


def bottleneck_tensors(tensors: dict, entry: int) -> dict:
  """Per-module down (H x D) and up (D x H) weights of bank entry `entry` of a bottleneck adapter."""
  get = lambda site, leaf: np.asarray(tensors[f"adapters.{site}.{leaf}"][entry], np.float32)
  out = {}
  for site in ("attn2", "ff", "blocks", "head"):
    if f"adapters.{site}.wd" not in tensors:
      continue
    wd, wu = get(site, "wd"), get(site, "wu")
    if f"adapters.{site}.dd" in tensors:  # shared: Wd_l = Wd + dd_l, Wu_l = Wu + du_l
      wd = wd[None] + get(site, "dd")[:, None, :]
      wu = wu[None] + get(site, "du")[:, None, :]
    for layer in range(len(wd)):
      if site == "head":
        module = "mlm_layer"
      elif site == "blocks":  # the down block's attention blocks, then the up block's
        half = len(wd) // 2
        module = f"{'down' if layer < half else 'up'}_block.attention_blocks.{layer % half}"
      else:
        module = SITE_MODULES[site].format(layer)
      out[f"{module}.styledrop_down.weight"] = wd[layer].T
      out[f"{module}.styledrop_up.weight"] = wu[layer].T
  return out


def export(adapter: str | Path, out: str | Path, entry: int = 0) -> Path:
  """Write the adapter's bank entry `entry` into the folder `out` in its PyTorch layout; return the file."""
  tensors, meta = weights.read_adapter(adapter)
  adapter_config = meta["adapter"]
  bank = adapter_config["bank_size"]
  if not 0 <= entry < bank:
    raise ValueError(f"--entry={entry}: the adapter's bank holds entries 0..{bank - 1}")
  about = {k: meta.get(k) for k in ("base_fingerprint", "style_phrase", "role")} | {"adapter": adapter_config}
  out = files.path(out)
  if adapter_config["kind"] == "lora":
    converted, lora_meta = lora_tensors(tensors, adapter_config, entry)
    path = out / LORA_FILE
    header = {"format": "pt", "lora_adapter_metadata": json.dumps(lora_meta), "styledrop": json.dumps(about)}
  else:
    converted = bottleneck_tensors(tensors, entry)
    path = out / BOTTLENECK_FILE
    header = {"format": "pt", "styledrop": json.dumps(about)}
  weights.write_safetensors(converted, path, header)
  return path


def main(argv):
  del argv
  f = flags.FLAGS
  print("wrote", export(f.adapter, f.out, f.entry))


def entry():
  from muse_styledrop.cli import run_main  # noqa: PLC0415

  flags.DEFINE_string("adapter", None, "An exported adapter (adapter.safetensors) or a finished training workdir.")
  flags.DEFINE_string("out", None, "The folder to write the PyTorch file into.")
  flags.DEFINE_integer("entry", 0, "Which adapter of the bank to export.")
  flags.mark_flags_as_required(["adapter", "out"])
  run_main(main, compilation_cache=False)


if __name__ == "__main__":
  entry()
