"""Read and write diffusers- and transformers-layout model directories.

The one place that knows the published file layout: model_index.json and
per-component subfolders, config.json files, safetensors weights (fp32, fp16
or bf16; single files, variants or sharded with an index). Nothing here
imports torch, and nothing is ever unpickled: a directory holding only .bin /
.pt weights is refused with a message that says how to convert it.

Mapping between our parameters and PyTorch state-dict keys is generic: the
module path is the key, and only the leaf is renamed and relaid out:
  Linear kernel (in, out)        <-> weight (out, in)
  Conv kernel (kh, kw, in, out)  <-> weight (out, in, kh, kw)
  norm scale, embedding table    <-> weight (same layout)
  anything else                  <-> same name, same layout
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from safetensors import SafetensorError, safe_open
from safetensors.flax import save_file

from muse_styledrop import files
from muse_styledrop.models import layers
from muse_styledrop.models.clip import CLIPConfig, CLIPModel, TowerConfig
from muse_styledrop.models.uvit import UVit2DModel, UVitConfig
from muse_styledrop.models.vq import VQConfig, VQModel

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
TRANSFORMERS_WEIGHTS = "model"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Non-persistent buffers that older transformers versions saved into checkpoints.
IGNORED_SOURCE_KEYS = ("position_ids",)


class WeightsError(ValueError):
  """A model directory or weight file that cannot be loaded as asked."""


# ----------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------


def read_json(path: Path) -> dict:
  return files.read_json(path, WeightsError)


def weight_files(folder: Path, stem: str, variant: str | None = None) -> list[Path]:
  """The safetensors files holding a component's weights, shards included."""
  names = [f"{stem}.{variant}.safetensors"] if variant else []
  names.append(f"{stem}.safetensors")
  for name in names:
    if (folder / name).is_file():
      return [folder / name]
    index = folder / f"{name}.index.json"
    if index.is_file():
      shards = sorted(set(read_json(index).get("weight_map", {}).values()))
      if not shards:
        raise WeightsError(f"{index} has an empty weight_map; re-download that component")
      missing = [s for s in shards if not (folder / s).is_file()]
      if missing:
        raise WeightsError(f"{index} names shard {missing[0]} which is not in {folder}; the download is incomplete")
      return [folder / s for s in shards]
  pickles = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
  if pickles:
    raise WeightsError(
      f"{folder} holds only pickle weights ({pickles[0]}); we never unpickle files. Convert them "
      "to safetensors (e.g. load and save_pretrained(..., safe_serialization=True) in diffusers or "
      "transformers) or download the .safetensors files"
    )
  raise WeightsError(f"no {stem}.safetensors (or sharded index) in {folder}; the model directory is incomplete")


def is_float(x) -> bool:
  """Whether an array holds floating-point numbers (fp16, bf16, fp32, fp64)."""
  return np.dtype(x.dtype).name in ("float16", "bfloat16", "float32", "float64")


class TensorFiles(Mapping):
  """The tensors of safetensors files by key, each read (as numpy, in its stored dtype) only when asked for.

  A value is (array, the file it came from). Each read opens the file's memory map and closes it again, so the
  pages of tensors already read do not stay resident: loading holds the weights it keeps and one tensor more.
  Nothing is placed on a device here; the caller decides where each tensor, or each slice of it, goes.
  """

  def __init__(self, paths: list[Path]):
    self._where, self.metadata = {}, {}
    for f in paths:
      try:
        with safe_open(str(f), framework="numpy") as handle:
          self._where.update(dict.fromkeys(handle.keys(), f))
          self.metadata.update(handle.metadata() or {})
      except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{f} is not a readable safetensors file ({e}); re-download it") from e

  def __getitem__(self, key: str) -> tuple[np.ndarray, Path]:
    f = self._where[key]
    try:
      with safe_open(str(f), framework="numpy") as handle:
        return handle.get_tensor(key), f
    except (SafetensorError, OSError, ValueError) as e:
      raise WeightsError(f"{f}: tensor {key!r} cannot be read ({e}); re-download the file") from e

  def __contains__(self, key) -> bool:  # Mapping's default would read the tensor to answer
    return key in self._where

  def __iter__(self):
    return iter(self._where)

  def __len__(self) -> int:
    return len(self._where)


def read_tensors(paths: list[Path]) -> TensorFiles:
  """Every tensor of the files, with the file it came from (read lazily)."""
  return TensorFiles(paths)


# ----------------------------------------------------------------------------
# Parameter <-> state-dict mapping
# ----------------------------------------------------------------------------


def torch_key(path: tuple) -> str:
  """The PyTorch state-dict key of one of our parameter paths."""
  *head, leaf = (str(p) for p in path)
  leaf = {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(leaf, leaf)
  return ".".join([*head, leaf])


def from_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
  """Our layout of a PyTorch-layout tensor (a view: nothing is copied)."""
  if leaf == "kernel" and value.ndim == 2:
    return value.T
  if leaf == "kernel" and value.ndim == 4:
    return np.transpose(value, (2, 3, 1, 0))
  return value


def to_torch_layout(leaf: str, value):
  if leaf == "kernel" and value.ndim == 2:
    return value.T
  if leaf == "kernel" and value.ndim == 4:
    return value.transpose((3, 2, 0, 1))
  return value


def base_params(module: nnx.Module) -> nnx.State:
  """The module's own (published) parameters: exactly nnx.Param, not subclasses such as adapters."""
  return nnx.state(module, lambda _, v: type(v) is nnx.Param)


def on_default_device(path: tuple, var: nnx.Variable, host: np.ndarray) -> jax.Array:
  """Place a whole parameter on the default device (one-device use; a mesh places by shard instead)."""
  del path
  return jnp.asarray(host, var.dtype)


def load_params(
  module: nnx.Module,
  tensors: Mapping[str, tuple[np.ndarray, Path]],
  what: str,
  keep_missing: tuple[str, ...] = (),
  place: Callable[[tuple, nnx.Variable, np.ndarray], jax.Array] = on_default_device,
) -> None:
  """Fill every parameter of `module` from a state dict; any mismatch is an error naming file and key.

  Tensors are read one at a time; `place(path, var, host_value)` puts each on its devices (in our layout, not yet
  cast). Weights whose names start with a prefix in `keep_missing` may be absent from the state dict: they keep
  their present values (a warm start into a model with an addition the source lacks, such as a position
  embedding)."""
  expected = {torch_key(path): (path, var) for path, var in nnx.to_flat_state(base_params(module))}
  for key, (path, var) in expected.items():
    if key not in tensors:
      if key.startswith(keep_missing):
        continue
      raise WeightsError(
        f"{what}: weight {key!r} is missing from the checkpoint; the files do not match the "
        "config (wrong model directory or a truncated download)"
      )
    stored, source = tensors[key]
    if not is_float(stored) and is_float(var):
      raise WeightsError(
        f"{source}: weight {key!r} is stored as {stored.dtype}, not floating point; the file is damaged or for "
        "another model"
      )
    value = from_torch_layout(str(path[-1]), np.asarray(stored))
    if tuple(value.shape) != tuple(var.shape):
      implied = to_torch_layout(str(path[-1]), np.broadcast_to(np.float32(0), var.shape)).shape
      raise WeightsError(
        f"{source}: weight {key!r} has shape {tuple(stored.shape)} but the config implies "
        f"{tuple(implied)}; the config.json and the weights disagree"
      )
    var.set_value(place(path, var, value))
  unknown = [k for k in tensors if k not in expected and not k.endswith(IGNORED_SOURCE_KEYS)]
  if unknown:
    raise WeightsError(
      f"{tensors[unknown[0]][1]}: unknown weight {unknown[0]!r} (and {len(unknown) - 1} more) for "
      f"{what}; the checkpoint is for another architecture or config"
    )


def state_dict(module: nnx.Module, dtype=None) -> dict[str, jax.Array]:
  """The module's parameters as a PyTorch-layout state dict."""
  out = {}
  for path, var in nnx.to_flat_state(base_params(module)):
    value = to_torch_layout(str(path[-1]), var[...])
    out[torch_key(path)] = jnp.asarray(value if dtype is None else value.astype(dtype))
  return out


def write_safetensors(tensors: dict[str, jax.Array], path: Path, metadata: dict[str, str] | None = None) -> None:
  """Write atomically (files.atomic_file): a reader sees the old file or the new, whole."""
  with files.atomic_file(path) as tmp:
    save_file({k: jnp.asarray(v) for k, v in tensors.items()}, str(tmp), metadata=metadata)


# ----------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------


def dataclass_from_dict(cls, d: Mapping[str, Any]):
  """Build a config dataclass from a config.json dict, keeping only the fields it knows."""
  names = {f.name for f in dataclasses.fields(cls)}
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
  return cls(**kwargs)


def uvit_config(d: Mapping[str, Any], where: Path) -> UVitConfig:
  if d.get("_class_name", "UVit2DModel") != "UVit2DModel":
    raise WeightsError(f"{where} describes a {d['_class_name']}, not a UVit2DModel transformer")
  return dataclass_from_dict(UVitConfig, d)


def vq_config(d: Mapping[str, Any], where: Path) -> VQConfig:
  if d.get("_class_name", "VQModel") != "VQModel":
    raise WeightsError(f"{where} describes a {d['_class_name']}, not a VQModel")
  for key, kind in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
    if any(t != kind for t in d.get(key, [kind])):
      raise WeightsError(f"{where}: {key}={d[key]} is not supported; aMUSEd's VQ uses only {kind}")
  return dataclass_from_dict(VQConfig, d)


TEXT_DEFAULTS = TowerConfig()
VISION_DEFAULTS = TowerConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12)


def clip_config(d: Mapping[str, Any], where: Path) -> CLIPConfig:
  """A transformers CLIP config.json (CLIPModel, or a text/vision model with projection)."""
  kind = d.get("model_type")
  text = lambda sub: dataclasses.replace(TEXT_DEFAULTS, **_known(sub))
  vision = lambda sub: dataclasses.replace(VISION_DEFAULTS, **_known(sub))
  if kind == "clip":
    return CLIPConfig(
      text=text(d.get("text_config") or {}),
      vision=vision(d.get("vision_config") or {}),
      projection_dim=d.get("projection_dim", 512),
      with_logit_scale=True,
    )
  if kind == "clip_text_model":
    return CLIPConfig(text=text(d), projection_dim=d.get("projection_dim", 512))
  if kind == "clip_vision_model":
    return CLIPConfig(vision=vision(d), projection_dim=d.get("projection_dim", 512))
  raise WeightsError(
    f"{where}: model_type {kind!r} is not a CLIP model (expected clip, clip_text_model or clip_vision_model)"
  )


def _known(d: Mapping[str, Any]) -> dict:
  names = {f.name for f in dataclasses.fields(TowerConfig)}
  out = {k: v for k, v in d.items() if k in names}
  if isinstance(out.get("eos_token_id"), list):
    out["eos_token_id"] = out["eos_token_id"][0]
  return out


def uvit_config_dict(c: UVitConfig) -> dict:
  d = {"_class_name": "UVit2DModel", **dataclasses.asdict(c)}
  if not c.position_embedding_grid:
    d.pop("position_embedding_grid")
  return d


def vq_config_dict(c: VQConfig) -> dict:
  n = len(c.block_out_channels)
  return {
    "_class_name": "VQModel",
    **dataclasses.asdict(c),
    "down_block_types": ["DownEncoderBlock2D"] * n,
    "up_block_types": ["UpDecoderBlock2D"] * n,
    "force_upcast": True,
    "scaling_factor": 0.18215,
  }


def clip_config_dict(c: CLIPConfig) -> dict:
  tower = dataclasses.asdict
  if c.text is not None and c.vision is not None:
    return {
      "model_type": "clip",
      "architectures": ["CLIPModel"],
      "projection_dim": c.projection_dim,
      "text_config": {**tower(c.text), "model_type": "clip_text_model"},
      "vision_config": {**tower(c.vision), "model_type": "clip_vision_model"},
    }
  if c.text is not None:
    return {
      "model_type": "clip_text_model",
      "architectures": ["CLIPTextModelWithProjection"],
      "projection_dim": c.projection_dim,
      **tower(c.text),
    }
  return {
    "model_type": "clip_vision_model",
    "architectures": ["CLIPVisionModelWithProjection"],
    "projection_dim": c.projection_dim,
    **tower(c.vision),
  }


# ----------------------------------------------------------------------------
# Components
# ----------------------------------------------------------------------------


def _build_and_load(ctor, folder: Path, stem: str, variant: str | None, dtype, place):
  """Create a module abstractly, then fill it from the folder's weights (no random init is kept)."""
  module = layers.abstract(lambda rngs: ctor(rngs, dtype))
  load_params(module, read_tensors(weight_files(folder, stem, variant)), str(folder), place=place)
  abstract = [p for p, v in nnx.to_flat_state(nnx.state(module)) if isinstance(v[...], jax.ShapeDtypeStruct)]
  if abstract:
    raise WeightsError(f"{folder}: state {abstract[0]} was not filled from the checkpoint")
  return module


def compute_dtype(dtype):
  """The activations' dtype for weights held in `dtype`: None (the inputs' own) for fp32, else `dtype`."""
  return None if jnp.dtype(dtype) == jnp.float32 else dtype


def load_transformer(folder: Path, variant: str | None = None, dtype=jnp.float32, place=on_default_device):
  """The masked transformer, its weights and activations in `dtype` (its logits in fp32)."""
  folder = files.local_copy(folder)
  config = uvit_config(read_json(folder / "config.json"), folder / "config.json")
  ctor = lambda r, d: UVit2DModel(config, rngs=r, dtype=compute_dtype(d), param_dtype=d)
  return _build_and_load(ctor, folder, DIFFUSERS_WEIGHTS, variant, dtype, place)


def load_vqvae(folder: Path, variant: str | None = None, dtype=jnp.float32, place=on_default_device) -> VQModel:
  folder = files.local_copy(folder)
  config = vq_config(read_json(folder / "config.json"), folder / "config.json")
  return _build_and_load(
    lambda r, d: VQModel(config, rngs=r, param_dtype=d), folder, DIFFUSERS_WEIGHTS, variant, dtype, place
  )


def load_clip(folder: Path, variant: str | None = None, dtype=jnp.float32, place=on_default_device) -> CLIPModel:
  """A CLIP model, its weights and activations in `dtype`."""
  folder = files.local_copy(folder)
  config = clip_config(read_json(folder / "config.json"), folder / "config.json")
  ctor = lambda r, d: CLIPModel(config, rngs=r, dtype=compute_dtype(d), param_dtype=d)
  return _build_and_load(ctor, folder, TRANSFORMERS_WEIGHTS, variant, dtype, place)


def save_transformer(model: UVit2DModel, folder: Path, dtype=None) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  files.write_json(uvit_config_dict(model.config), folder / "config.json")
  write_safetensors(state_dict(model, dtype), folder / f"{DIFFUSERS_WEIGHTS}.safetensors")


def save_vqvae(model: VQModel, folder: Path, dtype=None) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  files.write_json(vq_config_dict(model.config), folder / "config.json")
  write_safetensors(state_dict(model, dtype), folder / f"{DIFFUSERS_WEIGHTS}.safetensors")


def save_clip(model: CLIPModel, folder: Path, dtype=None) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  files.write_json(clip_config_dict(model.config), folder / "config.json")
  write_safetensors(state_dict(model, dtype), folder / f"{TRANSFORMERS_WEIGHTS}.safetensors", {"format": "pt"})


# ----------------------------------------------------------------------------
# Adapter files: adapter.safetensors + adapter.json
# ----------------------------------------------------------------------------

ADAPTER_FORMAT = "muse_styledrop.adapter/1"


def write_adapter(state: nnx.State, meta: dict, path: Path) -> tuple[Path, Path]:
  """Export adapter weights (only AdapterParams) and their record as path(.safetensors, .json), each atomically.

  The record rides inside the .safetensors header too, so the weights file alone is one whole export: a run
  stopped between the two files, or an adapter.json edited by hand, cannot pair weights with another record."""
  path = files.path(path)
  tensors = {".".join(str(p) for p in key): var[...] for key, var in nnx.to_flat_state(state)}
  st, js = path.with_suffix(".safetensors"), path.with_suffix(".json")
  record = {"format": ADAPTER_FORMAT, **meta}
  write_safetensors(tensors, st, {"format": ADAPTER_FORMAT, "record": json.dumps(record, sort_keys=True)})
  files.write_json(record, js)
  return st, js


def read_adapter(path: Path) -> tuple[dict[str, jax.Array], dict]:
  """(tensors by dotted path, record) of an exported adapter; `path` may name either file or a workdir.

  The record is the one inside the .safetensors header; an adapter.json that differs from it is named in a
  warning and not used. Adapters exported before the header held a record are read from adapter.json."""
  path = files.path(path)
  if path.is_dir():
    path = path / "adapter.safetensors"
  st, js = path.with_suffix(".safetensors"), path.with_suffix(".json")
  if not st.is_file():
    raise WeightsError(
      f"no adapter at {path}: expected {st.name} and {js.name} side by side (a finished training workdir has both)"
    )
  with files.fetched(st) as local:
    tensors = read_tensors([local])
    header = tensors.metadata
    if "record" in header:
      try:
        meta = json.loads(header["record"])
      except json.JSONDecodeError as e:
        raise WeightsError(f"{st}: the record in its header is not JSON ({e}); export the adapter again") from e
      if js.is_file() and _json_or_none(js) != meta:
        logging.warning("%s differs from the record inside %s (edited, or an export stopped); using the latter", js, st)
    elif js.is_file():
      meta = read_json(js)
    else:
      raise WeightsError(f"no adapter at {path}: {js.name} is missing beside {st.name} and its header holds no record")
    if meta.get("format") != ADAPTER_FORMAT:
      raise WeightsError(f"{st} is not a muse_styledrop adapter (format {meta.get('format')!r})")
    return {k: v for k, (v, _) in tensors.items()}, meta


def _json_or_none(p: Path):
  try:
    return json.loads(p.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError):
    return None
