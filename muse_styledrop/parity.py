r"""Check our Flax models against the PyTorch originals on a real model directory.

  python -m muse_styledrop.parity --reference=/path/to/amused-256
  python -m muse_styledrop.parity --reference=/path/to/clip-vit-base-patch32

Loads the directory twice, with diffusers/transformers (PyTorch, from the
`test` extra) and with ours, runs every component on the same random inputs
in fp32, prints the largest absolute and relative (to the reference's scale)
difference per component, and exits 1 if any is past tolerance.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from absl import app, flags

from muse_styledrop import weights
from muse_styledrop.frozen import frozen_jit
from muse_styledrop.tokenizer import Tokenizer

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags, defined when it runs (importing this module defines none)."""
  flags.DEFINE_string("reference", None, "A diffusers-layout aMUSEd directory or a transformers CLIP directory.")
  flags.DEFINE_string("variant", None, "Weight-file variant to load (e.g. fp16); computation is fp32 either way.")
  flags.DEFINE_integer("batch", 2, "Examples per component.")
  flags.DEFINE_integer("seed", 0, "Seed of the random inputs.")
  flags.DEFINE_float("rtol", 1e-4, "Largest allowed |ours - ref| / max|ref| for float outputs.")
  flags.DEFINE_float("id_agreement", 0.999, "Smallest allowed fraction of equal VQ token ids.")


PROMPTS = ["a watercolor painting of a house", "a cat in sticker style", "", "sks"]


@dataclasses.dataclass
class Row:
  component: str
  max_abs: float
  max_rel: float
  ok: bool
  note: str = ""


def compare(name: str, ours, ref, rtol: float) -> Row:
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  if ours.shape != ref.shape:
    return Row(name, np.inf, np.inf, False, f"shape {ours.shape} vs {ref.shape}")
  diff = float(np.abs(ours - ref).max())
  rel = diff / (float(np.abs(ref).max()) + 1e-12)
  return Row(name, diff, rel, rel <= rtol)


def _torch():
  try:
    import torch  # noqa: PLC0415
  except ImportError as e:
    raise SystemExit(
      "error: the parity check needs PyTorch and diffusers/transformers: pip install -e '.[test]'"
    ) from e
  return torch


def penultimate_and_embeds(encoder, ids):
  out, embeds = encoder.encode_text(ids)
  return out.penultimate_BTD, embeds


def check_amused(path: Path, batch: int, seed: int, rtol: float, id_agreement: float, variant=None) -> list[Row]:
  torch = _torch()
  from diffusers import UVit2DModel as TorchUVit  # noqa: PLC0415
  from diffusers import VQModel as TorchVQ  # noqa: PLC0415
  from transformers import CLIPTextModelWithProjection  # noqa: PLC0415

  rng = np.random.default_rng(seed)
  kw = dict(torch_dtype=torch.float32, local_files_only=True, variant=variant)
  rows = []

  # Text encoder.
  ids = Tokenizer(path / "tokenizer")((PROMPTS * batch)[: max(batch, 2)])
  ref_text = CLIPTextModelWithProjection.from_pretrained(path / "text_encoder", **kw).eval()
  with torch.no_grad():
    r = ref_text(torch.from_numpy(ids).long(), output_hidden_states=True)
  our_text = weights.load_clip(path / "text_encoder", variant)
  penultimate, embeds = frozen_jit(penultimate_and_embeds, our_text)(jnp.asarray(ids))
  rows.append(compare("text encoder penultimate hidden states", penultimate, r.hidden_states[-2], rtol))
  rows.append(compare("text encoder text_embeds", embeds, r.text_embeds, rtol))
  del ref_text, our_text

  # VQ tokenizer.
  ref_vq = TorchVQ.from_pretrained(path / "vqvae", **kw).eval()
  our_vq = weights.load_vqvae(path / "vqvae", variant)
  side = 2 ** (len(ref_vq.config.block_out_channels) - 1) * 8
  images = rng.random((batch, side, side, 3), np.float32)
  with torch.no_grad():
    latents = ref_vq.encode(torch.from_numpy(images).permute(0, 3, 1, 2)).latents
    ref_ids = ref_vq.quantize(latents)[2][2].reshape(batch, 8, 8)
  our_ids = np.asarray(frozen_jit(lambda m, x: m.encode(x), our_vq)(jnp.asarray(images)))
  agree = float((our_ids == ref_ids.numpy()).mean())
  rows.append(
    Row(
      "VQ encode token ids (fraction equal)",
      1 - agree,
      1 - agree,
      agree >= id_agreement,
      f"{agree:.4%} of {our_ids.size} ids equal",
    )
  )
  with torch.no_grad():
    ref_dec = ref_vq.decode(
      ref_ids.reshape(-1), force_not_quantize=True, shape=(batch, 8, 8, ref_vq.config.latent_channels)
    ).sample.permute(0, 2, 3, 1)
  rows.append(
    compare("VQ decode", frozen_jit(lambda m, ids: m.decode(ids), our_vq)(jnp.asarray(ref_ids.numpy())), ref_dec, rtol)
  )
  del ref_vq, our_vq

  # Transformer.
  ref_tr = TorchUVit.from_pretrained(path / "transformer", **kw).eval()
  our_tr = weights.load_transformer(path / "transformer", variant)
  c = ref_tr.config
  extension = ""
  if our_tr.position_embedding is not None:
    # Our one extension of aMUSEd's layout (docs/shapes.md): a learned position embedding added to the
    # transformer's input. diffusers loads the directory without it, so the reference gets it by a hook on the
    # layer whose output it is added to; every other layer is diffusers' own.
    table = torch.tensor(np.asarray(our_tr.position_embedding[...], np.float32))
    ref_tr.project_to_hidden.register_forward_hook(lambda module, args, out: out + table)
    extension = " + position embedding"
  grid = max(2, c.sample_size) if not c.downsample else max(4, c.sample_size)
  tokens = rng.integers(0, c.vocab_size, (batch, grid, grid))
  tokens[:, ::3] = c.vocab_size - 1  # a mask-token stripe, as during sampling
  text = rng.standard_normal((batch, 77, c.encoder_hidden_size)).astype(np.float32)
  pooled = rng.standard_normal((batch, c.cond_embed_dim)).astype(np.float32)
  micro = np.tile(np.asarray([[grid * 16, grid * 16, 0, 0, 6]], np.float32), (batch, 1))
  with torch.no_grad():
    ref_logits = ref_tr(
      torch.from_numpy(tokens).long(), torch.from_numpy(text), torch.from_numpy(pooled), torch.from_numpy(micro)
    ).permute(0, 2, 3, 1)
  our_logits = frozen_jit(lambda m, *a: m(*a), our_tr)(
    jnp.asarray(tokens), jnp.asarray(text), jnp.asarray(pooled), jnp.asarray(micro)
  )
  rows.append(compare(f"transformer logits ({grid}x{grid} tokens{extension})", our_logits, ref_logits, rtol))
  return rows


def check_clip(path: Path, batch: int, seed: int, rtol: float, variant=None) -> list[Row]:
  torch = _torch()
  import transformers  # noqa: PLC0415

  config = weights.clip_config(weights.read_json(path / "config.json"), path / "config.json")
  ours = weights.load_clip(path, variant)
  arch = weights.read_json(path / "config.json").get("architectures", ["CLIPModel"])[0]
  ref = (
    getattr(transformers, arch)
    .from_pretrained(path, torch_dtype=torch.float32, local_files_only=True, variant=variant)
    .eval()
  )
  rng = np.random.default_rng(seed)
  rows = []
  if config.text is not None:
    ids = rng.integers(0, config.text.vocab_size, (batch, config.text.max_position_embeddings))
    ids[:, -1] = config.text.eos_token_id
    with torch.no_grad():
      tids = torch.from_numpy(ids).long()
      r = ref.text_model(tids, output_hidden_states=True)
      proj = ref.text_projection(r.pooler_output)
    penultimate, embeds = frozen_jit(penultimate_and_embeds, ours)(jnp.asarray(ids))
    rows.append(compare("CLIP text penultimate hidden states", penultimate, r.hidden_states[-2], rtol))
    rows.append(compare("CLIP text embeddings", embeds, proj, rtol))
  if config.vision is not None:
    s = config.vision.image_size
    pixels = rng.standard_normal((batch, s, s, 3)).astype(np.float32)
    with torch.no_grad():
      r = ref.vision_model(torch.from_numpy(pixels).permute(0, 3, 1, 2))
      proj = ref.visual_projection(r.pooler_output)
    rows.append(
      compare(
        "CLIP image embeddings", frozen_jit(lambda m, x: m.encode_image(x), ours)(jnp.asarray(pixels)), proj, rtol
      )
    )
  return rows


def run(
  path: Path, batch: int = 2, seed: int = 0, rtol: float = 1e-4, id_agreement: float = 0.999, variant: str | None = None
) -> list[Row]:
  path = Path(path).expanduser()
  if (path / "model_index.json").is_file():
    return check_amused(path, batch, seed, rtol, id_agreement, variant)
  if (path / "config.json").is_file():
    return check_clip(path, batch, seed, rtol, variant)
  raise FileNotFoundError(
    f"{path} is neither a diffusers-layout model (model_index.json) nor a transformers CLIP directory (config.json)"
  )


def report(rows: list[Row]) -> str:
  width = max(len(r.component) for r in rows)
  lines = [f"{'component':<{width}}  {'max abs':>10}  {'max rel':>10}  result"]
  for r in rows:
    lines.append(
      f"{r.component:<{width}}  {r.max_abs:10.3e}  {r.max_rel:10.3e}  {'ok' if r.ok else 'FAIL'}"
      + (f"  ({r.note})" if r.note else "")
    )
  return "\n".join(lines)


def main(argv):
  del argv
  if not FLAGS.reference:
    raise app.UsageError("--reference=DIR is required")
  rows = run(Path(FLAGS.reference), FLAGS.batch, FLAGS.seed, FLAGS.rtol, FLAGS.id_agreement, FLAGS.variant)
  print(report(rows))
  failed = [r.component for r in rows if not r.ok]
  if failed:
    print(f"FAILED: {', '.join(failed)} past tolerance", file=sys.stderr)
    sys.exit(1)
  print("all components within tolerance")


def entry():
  from muse_styledrop.cli import run_main  # noqa: PLC0415

  define_flags()
  run_main(main)


if __name__ == "__main__":
  entry()
