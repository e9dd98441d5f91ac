"""A loaded base model: tokenizer, text encoder, masked transformer and VQ tokenizer.

Reads (and writes) an aMUSEd directory in the diffusers layout:
model_index.json, transformer/, vqvae/, text_encoder/, tokenizer/, scheduler/.
Prompt embeddings are cached per prompt string, so a prompt is encoded once
per process however many images or steps use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from muse_styledrop import bank, files, requests, sampling, sharding, weights
from muse_styledrop.frozen import frozen_jit
from muse_styledrop.models.adapters import AdapterConfig, AdapterParam
from muse_styledrop.models.clip import CLIPModel
from muse_styledrop.models.uvit import UVit2DModel
from muse_styledrop.models.vq import VQModel
from muse_styledrop.sampling import Sampler, SamplingSettings
from muse_styledrop.tokenizer import Tokenizer

COMPONENTS = {
  "transformer": ["diffusers", "UVit2DModel"],
  "vqvae": ["diffusers", "VQModel"],
  "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
  "tokenizer": ["transformers", "CLIPTokenizer"],
  "scheduler": ["diffusers", "AmusedScheduler"],
}
AESTHETIC_SCORE = 6.0  # aMUSEd's default micro-conditioning


class ModelDirectoryError(FileNotFoundError):
  """A base-model directory that is missing or incomplete."""


EMBEDDED_BASE = Path(__file__).parent / "assets" / "shapes_base"


def resolve_base_model(path: str | Path | None) -> Path:
  """The directory to load: the given one (local or a cloud URI), or the embedded shapes-world base when none is
  named."""
  if path:
    return files.path(path)
  if not (EMBEDDED_BASE / "model_index.json").is_file():
    raise ModelDirectoryError(
      "no base model named and this install ships no embedded base model yet; pass "
      "--base_model (or config.base_model) pointing at an aMUSEd directory in the diffusers "
      "layout, e.g. amused-256 downloaded once"
    )
  return EMBEDDED_BASE


def check_model_dir(path: Path) -> Path:
  """Fail early, in one line, on a directory that is not a complete aMUSEd-layout model; return where to read it
  from (a cloud directory is copied into the local cache first, files.local_copy)."""
  path = files.path(path)
  hint = (
    "download an aMUSEd model (e.g. amused/amused-256 in the diffusers layout) once and point "
    "--base_model / config.base_model at its directory"
  )
  if not path.is_dir():
    raise ModelDirectoryError(f"model directory {path} does not exist; {hint}")
  if not (path / "model_index.json").is_file():
    raise ModelDirectoryError(f"{path} has no model_index.json, so it is not a diffusers-layout model; {hint}")
  index = weights.read_json(path / "model_index.json")
  for name in COMPONENTS:
    if name not in index:
      raise ModelDirectoryError(f"{path / 'model_index.json'} lists no {name!r} component; {hint}")
    if not (path / name).is_dir():
      raise ModelDirectoryError(
        f"{path} lacks the {name}/ folder that model_index.json names; the download is incomplete"
      )
  return files.local_copy(path)


@dataclasses.dataclass
class Pipeline:
  """The frozen base model and the host-side helpers around it."""

  transformer: UVit2DModel
  vqvae: VQModel
  text_encoder: CLIPModel
  tokenizer: Tokenizer
  mask_token_id: int
  fingerprint: str = ""
  mesh: jax.sharding.Mesh | None = None  # where the weights live (None: the default device)
  rules: dict | None = None  # logical axis -> mesh axes (muse_styledrop.sharding)
  path: Path | None = None  # the directory it was loaded from
  _prompt_cache: dict = dataclasses.field(default_factory=dict, repr=False)

  def __post_init__(self):
    # On a mesh, results come back whole on every device, so every process of a multi-host run can read them.
    whole = None if self.mesh is None else sharding.replicated(self.mesh)
    self._encode_text = frozen_jit(_text_fn, self.text_encoder, whole)
    self._vq_encode = frozen_jit(lambda vq, images: vq.encode(images), self.vqvae, whole)
    self._vq_decode = frozen_jit(lambda vq, tokens: vq.decode(tokens).astype(jnp.float32), self.vqvae, whole)
    self._gather = (lambda x: x) if whole is None else jax.jit(lambda x: x, out_shardings=whole)
    self._sampler = None

  @classmethod
  def from_pretrained(
    cls,
    path: str | Path,
    dtype=jnp.float32,
    *,
    variant: str | None = None,
    mesh: jax.sharding.Mesh | None = None,
    rules: dict | None = None,
  ) -> Pipeline:
    """Load a model directory; with a `mesh`, each weight goes straight into its shards as `rules` lay it out.

    `dtype` holds the transformer's and text encoder's weights and activations (bf16 on accelerators); the VQ
    tokenizer, logits and adapters stay fp32.
    """
    path = check_model_dir(path)
    scheduler = weights.read_json(path / "scheduler" / "scheduler_config.json")
    place = weights.on_default_device if mesh is None else sharding.placer(mesh, rules)
    samples = WeightSamples(place)
    transformer = weights.load_transformer(path / "transformer", variant, dtype, place=samples)
    return cls(
      transformer=transformer,
      vqvae=weights.load_vqvae(path / "vqvae", variant, jnp.float32, place=place),
      text_encoder=weights.load_clip(path / "text_encoder", variant, dtype, place=place),
      tokenizer=Tokenizer(path / "tokenizer"),
      mask_token_id=int(scheduler.get("mask_token_id", transformer.config.mask_token_id)),
      fingerprint=digest(transformer.config, samples.taken),
      mesh=mesh,
      rules=None if rules is None else dict(rules),
      path=path,
    )

  def save_pretrained(self, path: str | Path, dtype=None) -> None:
    """Write every component in the diffusers layout (diffusers' AmusedPipeline loads it)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights.save_transformer(self.transformer, path / "transformer", dtype)
    weights.save_vqvae(self.vqvae, path / "vqvae", dtype)
    weights.save_clip(self.text_encoder, path / "text_encoder", dtype)
    self.tokenizer.save(path / "tokenizer")
    (path / "scheduler").mkdir(exist_ok=True)
    files.write_json(
      {"_class_name": "AmusedScheduler", "mask_token_id": self.mask_token_id, "masking_schedule": "cosine"},
      path / "scheduler" / "scheduler_config.json",
    )
    files.write_json({"_class_name": "AmusedPipeline", **COMPONENTS}, path / "model_index.json")

  @property
  def sampler(self) -> Sampler:
    """The decoder for the transformer as it is now, built on first use (it holds the weights' state)."""
    if self._sampler is None:
      self._sampler = Sampler(self.transformer, self.mask_token_id)
    return self._sampler

  @property
  def grid_hw(self) -> tuple[int, int]:
    return (self.transformer.config.sample_size,) * 2

  def draw_tokens(
    self, prompts: list[str], settings: SamplingSettings, *, seed: int, adapter: int | None = None, **kwargs
  ) -> jax.Array:
    """tokens_NHW of `prompts` drawn with `settings`, each picture with the bank entry `adapter` (StyleDrop
    guidance) or, when None, the base alone (classifier-free guidance); `kwargs` as draw_requests takes them."""
    return self.draw_requests(requests.single(prompts, settings, adapter), seed=seed, **kwargs)

  def draw_requests(
    self,
    wanted: list[requests.Request],
    *,
    seed: int,
    batch: int = 64,
    progress: str = "",
    init_tokens_BHW: jax.Array | None = None,
    strength: float = 1.0,
    state: nnx.State | None = None,
    side: int = 0,
  ) -> jax.Array:
    """tokens_NHW of the pictures `wanted`: the one path from prompts to pictures.

    Each picture has its own terms (prompts under adapters of the bank, mixed per step) and settings; pictures
    that decode for the same number of steps share the sampler's batches, whatever their adapters and settings.
    The n-th picture of the same terms draws with its own key (sampling.picture_keys), so a picture depends on its
    terms, seed and settings only, not on the batch it shares. Pictures go `batch` at a time (the last batch
    padded, so the sampler compiles once); `progress` names a progress bar over the batches (none when empty).
    With `init_tokens_BHW` (one picture's tokens per request), the last `strength` of the steps redraw them
    (image-to-image). `state` replaces the transformer's weights (a model in training passes its own). `side`: the
    pictures' side in pixels (0: the model's own).
    """
    from tqdm import tqdm  # noqa: PLC0415

    side = side or self.grid_hw[0] * self.downscale
    if side % self.downscale:
      raise ValueError(f"a side of {side}px is not a multiple of the tokenizer's downscale {self.downscale}")
    batch = min(batch, len(wanted))
    micro = self.micro_conds(batch, side, side)
    keys = sampling.picture_keys(seed, [r.terms for r in wanted])
    groups = requests.by_steps(wanted)
    chunks = [(steps, index[i : i + batch]) for steps, index in groups.items() for i in range(0, len(index), batch)]
    layouts = {steps: requests.Layout.of([wanted[i] for i in index]) for steps, index in groups.items()}
    pieces, order = [], []
    for steps, index in tqdm(chunks, desc=progress, unit="batch", disable=not progress):
      order += index
      real, index = len(index), np.asarray(index + [index[-1]] * (batch - len(index)))  # padded with the last one
      b = requests.batch([wanted[i] for i in index], layouts[steps])
      encoded = [self.encode_prompts(prompts) for prompts in b.prompts_KB]
      neg_text, neg_pooled = self.encode_prompts(b.negative_prompts_B)
      keys_B = keys[index]
      init, first = None, 0
      if init_tokens_BHW is not None:
        decode_keys, mask_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys_B), 1, 0)
        init, first = sampling.image_to_image_start(
          mask_keys, jnp.asarray(init_tokens_BHW)[index], steps, strength, self.mask_token_id
        )
        keys_B = decode_keys
      passes = sampling.mixed(
        jnp.stack([t for t, _ in encoded]),
        jnp.stack([p for _, p in encoded]),
        b.adapter_ids_KB,
        b.mix_KB,
        neg_text,
        neg_pooled,
        micro,
        b.lambda_a_B,
        b.lambda_b_B,
        b.lambda_a_end_B,
        layouts[steps].adapted,
      )
      passes, keys_B, init = self._spread(passes, keys_B, init)
      tokens = self._gather(
        self.sampler(
          passes,
          keys_B,
          (side // self.downscale,) * 2,
          num_steps=steps,
          temperature=b.temperature_B2,
          token_temperature=b.token_temperature_B,
          init_tokens_BHW=init,
          start_step=first,
          state=state,
        )
      )
      pieces.append(tokens[:real])
    return jnp.concatenate(pieces)[np.argsort(order)] if len(groups) > 1 else jnp.concatenate(pieces)

  def _spread(self, passes: sampling.Passes, keys_B, init_BHW):
    """Put a sampler batch's pictures over the mesh's batch axes (all on each device when they do not divide)."""
    if self.mesh is None or len(keys_B) % sharding.batch_shards(self.mesh, self.rules):
      return passes, keys_B, init_BHW  # jit replicates them (a host value cannot be put on another host's devices)
    in_passes, per_picture = sharding.sampler_inputs(self.mesh, self.rules, passes, len(keys_B))
    # Each process places its devices' slices of the (same on every process) host values: a plain device_put
    # cannot reach the devices of other hosts.
    put = lambda x, sh: jax.make_array_from_callback(x.shape, sh, lambda index: np.asarray(x)[index])
    keys = jax.random.wrap_key_data(put(jax.random.key_data(keys_B), per_picture))
    init = None if init_BHW is None else put(init_BHW, per_picture)
    return jax.tree.map(put, passes, in_passes), keys, init

  def draw(self, prompts: list[str], settings: SamplingSettings, **kwargs) -> np.ndarray:
    """uint8 pictures of `prompts` (draw_tokens' arguments), decoded in batches of at most 64."""
    tokens = self.draw_tokens(prompts, settings, **kwargs)
    return np.concatenate([self.decode_tokens(tokens[i : i + 64]) for i in range(0, len(tokens), 64)])

  # -- adapters ---------------------------------------------------------------

  def attach_adapters(self, config: AdapterConfig, rngs: nnx.Rngs) -> None:
    """Give the transformer a fresh adapter bank (a fresh adapter changes nothing)."""
    self.transformer.attach_adapters(config, rngs)
    self._sampler = None  # the graph changed: build a new one on next use

  def load_adapter(self, path: str | Path) -> dict:
    """Attach an exported adapter (a file or a finished workdir) as bank entry 0; return its metadata."""
    return self.load_adapters([path])[0]

  def load_adapters(self, paths: list[str | Path]) -> list[dict]:
    """Attach exported adapters (files or finished workdirs) as one bank, entry i the i-th; return their metadata.

    Adapters of one kind share a bank whatever their widths (muse_styledrop.bank). Refuses an adapter trained on
    another base model (fingerprints differ) or a damaged file.
    """
    found = []
    for path in paths:
      tensors, meta = weights.read_adapter(path)
      if meta.get("base_fingerprint") != self.fingerprint:
        raise weights.WeightsError(
          f"adapter {path} was trained on another base model (fingerprint {meta.get('base_fingerprint')}, this "
          f"base is {self.fingerprint}); load the base it was trained on, or train a new adapter on this one"
        )
      found.append((tensors, AdapterConfig(**meta["adapter"]), meta))
    config = bank.bank_config([c for _, c, _ in found], [str(p) for p in paths])
    self.attach_adapters(config, nnx.Rngs(0))
    state = nnx.state(self.transformer, AdapterParam)
    variables = {".".join(str(k) for k in key): var for key, var in nnx.to_flat_state(state)}
    for path, (tensors, own, _) in zip(paths, found):
      own_bank = nnx.eval_shape(lambda own=own: self.transformer.make_adapters(own, nnx.Rngs(0)))
      for key, var in nnx.to_flat_state(nnx.state(own_bank, AdapterParam)):  # every weight its config has
        name, shape = "adapters." + ".".join(str(k) for k in key), var.shape
        if name not in tensors or tuple(tensors[name].shape) != tuple(shape):
          raise weights.WeightsError(
            f"adapter {path}: weight {name!r} is missing or has the wrong shape for its "
            "own adapter config; the file is damaged"
          )
        if not weights.is_float(tensors[name]):
          raise weights.WeightsError(
            f"adapter {path}: weight {name!r} is stored as {tensors[name].dtype}, not floating point; the file is "
            "damaged or not an adapter"
          )
    merged = bank.merge([(t, c) for t, c, _ in found], {n: v.shape for n, v in variables.items()})
    for name, var in variables.items():
      var.set_value(jnp.asarray(merged[name], var.dtype))
    return [meta for _, _, meta in found]

  # -- text -------------------------------------------------------------------

  def encode_prompts(self, prompts: list[str]) -> tuple[jax.Array, jax.Array]:
    """(penultimate hidden states text_NTD, projected pooled embeddings pooled_ND), cached per prompt on the host.

    New prompts are encoded in batches padded to a power of two, so the text encoder compiles for a few sizes only;
    the cache holds host rows, since indexing a device array by each prompt's row compiles a slice per row."""
    missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
    if missing:
      size = max(8, 1 << (len(missing) - 1).bit_length())
      ids = self.tokenizer(missing + [missing[-1]] * (size - len(missing)))
      # replicated (or on one device): every process reads its own whole copy
      hidden, pooled = (np.asarray(x.addressable_data(0)) for x in self._encode_text(jnp.asarray(ids)))
      for i, p in enumerate(missing):
        self._prompt_cache[p] = (hidden[i], pooled[i])
    hidden = np.stack([self._prompt_cache[p][0] for p in prompts])
    pooled = np.stack([self._prompt_cache[p][1] for p in prompts])
    return jnp.asarray(hidden), jnp.asarray(pooled)

  # -- images -----------------------------------------------------------------

  @property
  def downscale(self) -> int:
    return self.vqvae.config.downscale

  def micro_conds(self, batch: int, height: int, width: int) -> jax.Array:
    return micro_conds(batch, height, width)

  def encode_images(self, images_BHWC: np.ndarray | jax.Array) -> jax.Array:
    """Codebook ids of float images in [0, 1]."""
    if jnp.issubdtype(images_BHWC.dtype, jnp.integer):  # uint8 pictures would encode as far-out-of-range floats
      raise TypeError(f"encode_images takes float pictures in [0, 1], not {images_BHWC.dtype}: divide by 255 first")
    return self._vq_encode(jnp.asarray(images_BHWC, jnp.float32))

  def decode_tokens(self, tokens_BHW: jax.Array) -> np.ndarray:
    """uint8 RGB images of codebook ids."""
    images = self._vq_decode(tokens_BHW)
    return np.asarray(jnp.round(jnp.clip(images, 0, 1) * 255)).astype(np.uint8)


def resolve_dtype(name: str, devices=None):
  """The weights' and activations' dtype that `name` means on `devices`: 'auto' is bf16 on TPU and GPU, fp32 on CPU.

  Decided by the devices' platform, not jax.default_backend(), so an ahead-of-time compile for a TPU topology on a
  CPU host gets the TPU's choice.
  """
  if name not in ("auto", "float32", "bfloat16"):
    raise ValueError(f"config.dtype={name!r}; use 'auto', 'float32' or 'bfloat16'")
  if name == "auto":
    platform = next(iter(devices if devices is not None else jax.devices())).platform
    return jnp.float32 if platform == "cpu" else jnp.bfloat16
  return jnp.dtype(name).type


def micro_conds(batch: int, height: int, width: int) -> jax.Array:
  """aMUSEd's micro-conditioning: (width, height, crop top, crop left, aesthetic score) in pixels."""
  return jnp.tile(jnp.asarray([[width, height, 0, 0, AESTHETIC_SCORE]], jnp.float32), (batch, 1))


def _text_fn(encoder: CLIPModel, ids_BT):
  out, pooled = encoder.encode_text(ids_BT)
  return out.penultimate_BTD, pooled


def sample_values(value: np.ndarray, dtype) -> np.ndarray:
  """Up to 256 evenly spaced values of an array (in row-major order), as `dtype` holds them, in fp32."""
  flat = np.arange(0, value.size, max(1, value.size // 256))
  return np.asarray(value[np.unravel_index(flat, value.shape)]).astype(dtype).astype(np.float32)


class WeightSamples:
  """A placement function that also keeps each parameter's sample values, for the fingerprint."""

  def __init__(self, place):
    self.place, self.taken = place, []

  def __call__(self, path, var, host):
    self.taken.append((weights.torch_key(path), host.size, sample_values(host, var.dtype)))
    return self.place(path, var, host)


def digest(config, taken) -> str:
  h = hashlib.sha256(json.dumps(dataclasses.asdict(config), sort_keys=True).encode())
  for key, size, values in taken:
    h.update(f"{key}{(size,)}".encode())
    h.update(values.tobytes())
  return h.hexdigest()[:16]


def fingerprint(transformer: UVit2DModel) -> str:
  """A short identity of a base transformer: its architecture and a sample of its weight values.

  Independent of how the files were written (dtype of storage aside from
  rounding, shard layout, metadata): hashes the config and, for every
  parameter, its key, size and up to 256 evenly spaced values in fp32. A
  loading pipeline takes the same samples as the weights stream past.
  """
  taken = []
  for path, var in nnx.to_flat_state(weights.base_params(transformer)):
    value = np.asarray(var[...])
    taken.append((weights.torch_key(path), value.size, sample_values(value, var.dtype)))
  return digest(transformer.config, taken)
