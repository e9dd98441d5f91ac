r"""The oracle: a small CNN that names the shape, colour and style of a shapes-world picture.

It grades (generated pictures, VQ reconstructions); it is never a training
signal or feedback for the generator. Trained on fresh renders of every style,
held-out ones included, and shipped with the package (muse_styledrop/assets/oracle):

  python -m muse_styledrop.shapes.oracle --train=data/shapes_all_24k.npz \
      --test=data/shapes_test_4k.npz --out=muse_styledrop/assets/oracle

Shape and colour are those of the first object; the oracle is meant for
single-object pictures (the evaluation prompts have one object), and it is
trained on the shape and colour of single-object pictures only.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from muse_styledrop import files, weights
from muse_styledrop.frozen import frozen_jit
from muse_styledrop.models import layers
from muse_styledrop.shapes.styles import STYLES
from muse_styledrop.shapes.world import COLOURS, SHAPES

HEADS = {"shape": SHAPES, "colour": tuple(COLOURS), "style": tuple(STYLES)}
ORACLE_DIR = Path(__file__).parent.parent / "assets" / "oracle"


@dataclasses.dataclass(frozen=True)
class OracleConfig:
  stem: int = 32  # a 4x4 stride-2 conv: 64x64 -> 32x32
  channels: tuple[int, ...] = (24, 48, 96, 128)  # per stage: two 3x3 convs, then 2x2 max pooling (not after the last)
  groups: int = 8


class Oracle(nnx.Module):
  """A stride-2 stem, stages of two 3x3 convs (GroupNorm, GELU) with max pooling, mean+max pooling, three heads."""

  def __init__(self, config: OracleConfig = OracleConfig(), *, rngs: nnx.Rngs):
    self.config = config
    self.stem = nnx.Conv(3, config.stem, (4, 4), strides=2, padding="SAME", rngs=rngs)
    convs, norms, c_in = [], [], config.stem
    for c in config.channels:
      for _ in range(2):
        convs.append(nnx.Conv(c_in, c, (3, 3), padding="SAME", rngs=rngs))
        norms.append(nnx.GroupNorm(c, num_groups=config.groups, rngs=rngs))
        c_in = c
    self.convs, self.norms = nnx.List(convs), nnx.List(norms)
    self.heads = nnx.Dict({k: nnx.Linear(2 * c_in, len(v), rngs=rngs) for k, v in HEADS.items()})

  def __call__(self, images_BHWC: jax.Array) -> dict[str, jax.Array]:
    """Logits per head for images in [0, 1] (64x64 RGB)."""
    x = jax.nn.gelu(self.stem(images_BHWC * 2.0 - 1.0))
    last = len(self.convs) - 1
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
      x = jax.nn.gelu(norm(conv(x)))
      if i % 2 == 1 and i != last:
        x = nnx.max_pool(x, (2, 2), (2, 2))
    feat = jnp.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=-1)
    return {k: head(feat) for k, head in self.heads.items()}


def load(directory: Path = ORACLE_DIR) -> Oracle:
  """The oracle saved in `directory` (default: the one shipped with the package)."""
  directory = Path(directory)
  if not (directory / "oracle.safetensors").is_file():
    raise FileNotFoundError(f"no oracle in {directory}; train one with python -m muse_styledrop.shapes.oracle")
  config = weights.dataclass_from_dict(OracleConfig, files.read_json(directory / "config.json"))
  model = layers.abstract(lambda rngs: Oracle(config, rngs=rngs))  # no random init: the file fills every weight
  weights.load_params(model, weights.read_tensors([directory / "oracle.safetensors"]), "oracle")
  return model


def save(model: Oracle, directory: Path, report: dict) -> None:
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  weights.write_safetensors(weights.state_dict(model, jnp.float16), directory / "oracle.safetensors")
  files.write_json(
    {**dataclasses.asdict(model.config), "classes": {k: list(v) for k, v in HEADS.items()}, "accuracy": report},
    directory / "config.json",
  )


class Grader:
  """Predicted labels for batches of uint8 or [0, 1] pictures, compiled once."""

  def __init__(self, model: Oracle | None = None, batch_size: int = 256):
    model = model or load()
    self.batch_size = batch_size

    def predict(oracle, x):
      logits = oracle(x)
      labels = {k: jnp.argmax(v, -1) for k, v in logits.items()}
      return {**labels, **{f"{k}_confidence": jax.nn.softmax(v, -1).max(-1) for k, v in logits.items()}}

    self._predict = frozen_jit(predict, model)

  def __call__(self, images_NHWC) -> dict[str, np.ndarray]:
    """Per head, the label read in each picture, and under '<head>_confidence' its probability."""
    images = np.asarray(images_NHWC)
    if images.dtype == np.uint8:
      images = images.astype(np.float32) / 255.0
    out = {}
    for i in range(0, len(images), self.batch_size):
      chunk = images[i : i + self.batch_size]
      size = min(self.batch_size, max(8, 1 << (len(chunk) - 1).bit_length()))  # a few sizes compile, little padding
      padded = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
      pred = jax.device_get(self._predict(jnp.asarray(np.clip(padded, 0, 1), jnp.float32)))
      for k, v in pred.items():
        out.setdefault(k, []).append(v[: len(chunk)])
    return {k: np.concatenate(v) for k, v in out.items()}


def accuracy(pred: dict, arrays: dict) -> dict:
  """Per head: accuracy overall and per style (shape and colour on single-object pictures only)."""
  single = arrays["objects"] == 1
  report = {}
  for k in HEADS:
    keep = single if k != "style" else np.ones_like(single)
    right = pred[k] == arrays[k]
    report[k] = float(right[keep].mean())
    report[f"{k}_worst_style"] = min(
      (float(right[keep & (arrays["style"] == s)].mean()), name)
      for s, name in enumerate(STYLES)
      if (keep & (arrays["style"] == s)).any()
    )
  return report


# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------


def loss_fn(model, images, labels, single):
  logits = model(images)
  total = 0.0
  for k in HEADS:
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[k], labels[k])
    w = jnp.ones_like(ce) if k == "style" else single
    total = total + jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)
  return total


@functools.partial(nnx.jit, donate_argnums=(0, 1))
def train_step(model, optimizer, images, labels, single):
  loss, grads = nnx.value_and_grad(loss_fn)(model, images, labels, single)
  optimizer.update(model, grads)
  return loss


def train(train_arrays: dict, steps: int, batch_size: int, lr: float, seed: int) -> Oracle:
  model = Oracle(rngs=nnx.Rngs(seed))
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, 100, steps, lr * 0.02)
  optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=1e-4), wrt=nnx.Param)
  rng = np.random.default_rng(seed)
  n = len(train_arrays["images"])
  bar = tqdm(range(steps), desc="oracle", unit="step")
  for step in bar:
    idx = rng.integers(0, n, batch_size)
    images = jnp.asarray(train_arrays["images"][idx], jnp.float32) / 255.0
    labels = {k: jnp.asarray(train_arrays[k][idx], jnp.int32) for k in HEADS}
    single = jnp.asarray(train_arrays["objects"][idx] == 1, jnp.float32)
    loss = train_step(model, optimizer, images, labels, single)
    if step % 50 == 0:
      bar.set_postfix(loss=f"{float(loss):.3f}")
  return model


def main():
  from muse_styledrop.shapes import dataset  # noqa: PLC0415

  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--train", required=True, help="an .npz of rendered pictures of every style")
  p.add_argument("--test", required=True, help="an .npz of fresh renders (other seeds)")
  p.add_argument("--out", required=True)
  p.add_argument("--steps", type=int, default=1500)
  p.add_argument("--batch_size", type=int, default=96)
  p.add_argument("--lr", type=float, default=2e-3)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  model = train(dataset.load(Path(args.train)), args.steps, args.batch_size, args.lr, args.seed)
  test = dataset.load(Path(args.test))
  report = accuracy(Grader(model)(test["images"]), test)
  save(model, Path(args.out), report)
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  main()
