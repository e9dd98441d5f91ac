"""Our adapters in PyTorch: the LoRA export loads in diffusers, the bottleneck export through docs/pytorch.md's
hooks, and both give our logits."""

import dataclasses
import re
from pathlib import Path

import jax.numpy as jnp
import pytest
import reference
import torch
from flax import nnx
from test_adapters import randomize_adapters
from test_models_parity import rel_err

from muse_styledrop import export, weights
from muse_styledrop.models.adapters import AdapterConfig, AdapterParam

DOCS = Path(__file__).resolve().parents[1] / "docs" / "pytorch.md"


def hooks_snippet() -> str:
  """The code block of docs/pytorch.md that defines apply_styledrop."""
  return next(b for b in re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S) if "def apply_styledrop" in b)


@pytest.mark.parametrize(
  "config",
  [
    AdapterConfig(blocks=True, head=True),
    AdapterConfig(hidden=8, shared=False),
    AdapterConfig(kind="lora", rank=4, alpha=8.0),
  ],
)
def test_an_exported_adapter_gives_our_logits_in_pytorch(tmp_path, config):
  torch_model = reference.uvit(**reference.UVIT_TINY_512)  # down/up blocks with attention blocks
  torch_model.save_pretrained(tmp_path / "transformer")
  ours = weights.load_transformer(tmp_path / "transformer")
  ours.attach_adapters(dataclasses.replace(config, bank_size=2), nnx.Rngs(0))
  randomize_adapters(ours, 3)
  meta = {"base_fingerprint": "f", "adapter": dataclasses.asdict(dataclasses.replace(config, bank_size=2))}
  weights.write_adapter(nnx.state(ours, AdapterParam), meta, tmp_path / "adapter")
  path = export.export(tmp_path / "adapter.safetensors", tmp_path / "pytorch", entry=1)
  g = torch.Generator().manual_seed(1)
  ids = torch.randint(0, torch_model.config.vocab_size, (2, 8, 8), generator=g)
  args = (
    ids,
    torch.randn(2, 7, 16, generator=g),
    torch.randn(2, 16, generator=g),
    torch.tensor([[256.0, 256.0, 0.0, 0.0, 6.0]]).repeat(2, 1),
  )
  with torch.no_grad():
    plain = torch_model(*args).permute(0, 2, 3, 1).numpy()
  if config.kind == "lora":
    torch_model.load_lora_adapter(str(path.parent), weight_name=export.LORA_FILE)
  else:
    namespace = {}
    exec(hooks_snippet(), namespace)
    namespace["apply_styledrop"](torch_model, str(path))
  with torch.no_grad():
    adapted = torch_model(*args).permute(0, 2, 3, 1).numpy()
  out = ours(*(jnp.asarray(t.numpy()) for t in args), adapter_ids_B=jnp.ones((2,), jnp.int32))
  assert rel_err(out, adapted) < 1e-4
  assert rel_err(plain, adapted) > 1e-2  # the adapter changes the logits


def test_export_of_a_missing_entry_is_refused(tmp_path):
  model = reference.uvit()
  model.save_pretrained(tmp_path / "t")
  ours = weights.load_transformer(tmp_path / "t")
  ours.attach_adapters(AdapterConfig(), nnx.Rngs(0))
  weights.write_adapter(nnx.state(ours, AdapterParam), {"adapter": dataclasses.asdict(AdapterConfig())}, tmp_path / "a")
  with pytest.raises(ValueError, match="--entry=1: the adapter's bank holds entries 0..0"):
    export.export(tmp_path / "a.safetensors", tmp_path / "out", entry=1)
  assert not (tmp_path / "out").exists()
